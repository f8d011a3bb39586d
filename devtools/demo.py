"""`python -m devtools demo`: the simulator plays registration lifecycles against the real service.

Starts the simulator, migrates a fresh PostgreSQL database, runs the API and a worker as child
processes pointed at the simulator, delivers a few dozen lifecycles as shuffled and duplicated
callbacks, waits for the worker to drain them, and prints local state against Sinch's truth (the
simulator's). The database is a temporary one it creates on DATABASE_URL's server and drops at the
end, or, without DATABASE_URL (environment or .env), one of an embedded PostgreSQL in its temporary
folder. Its worker uses a Redis database of its own (14 by default, emptied first) of REDIS_URL's
server, so a worker of `make run` cannot take its jobs; of an embedded Valkey when that Redis does
not answer. The temporary folder goes at the end; it is kept, and named, when something went wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import redis
from sqlalchemy import func, select
from sqlalchemy.engine import URL, make_url

from app.core.db import create_engine
from app.core.models import CallbackEvent, EventState, Registration
from app.core.settings import Settings
from app.registrations.facts import FACT_STATES
from app.registrations.states import is_allowed
from devtools.embedded import EmbeddedPostgres, EmbeddedValkey, free_port
from devtools.launch import configured
from devtools.simulator import SimulatorControl, SimulatorServer

ROOT = Path(__file__).resolve().parents[1]
LIFECYCLES = [
    ["IN_PROGRESS", "APPROVED"],
    ["IN_PROGRESS", "REJECTED"],
    ["IN_PROGRESS", "PENDING", "IN_PROGRESS", "APPROVED"],
    ["ON_HOLD", "IN_PROGRESS", "PENDING_ATTACHMENTS", "IN_QUEUE", "IN_PROGRESS", "APPROVED"],
    ["PENDING_APPROVAL", "APPROVED"],
    ["IN_PROGRESS", "APPROVED", "IN_PROGRESS", "APPROVED"],  # approved, updated, approved again
    ["IN_PROGRESS"],
    [],
]


def _wait_healthy(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


async def _drained(settings: Settings, expected: int, limit_seconds: float = 60) -> None:
    engine = create_engine(settings)
    try:
        deadline = time.monotonic() + limit_seconds
        while time.monotonic() < deadline:
            async with engine.connect() as connection:
                total = await connection.scalar(select(func.count()).select_from(CallbackEvent))
                waiting = await connection.scalar(
                    select(func.count())
                    .select_from(CallbackEvent)
                    .where(CallbackEvent.state == EventState.RECEIVED)
                )
            if total == expected and waiting == 0:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the worker did not drain the callbacks in time")
    finally:
        await engine.dispose()


async def _facts_settled(settings: Settings, limit_seconds: float = 60) -> None:
    """Wait until no registration waits for its facts fetch (low-priority job: app/core/jobs.py)."""
    engine = create_engine(settings)
    try:
        deadline = time.monotonic() + limit_seconds
        while time.monotonic() < deadline:
            async with engine.connect() as connection:
                waiting = await connection.scalar(
                    select(func.count())
                    .select_from(Registration)
                    .where(Registration.facts_due_at.is_not(None))
                )
            if not waiting:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the worker did not fetch the registrations' facts in time")
    finally:
        await engine.dispose()


def _local_facts(registration: Registration) -> dict[str, object]:
    """A registration's facts as the API answers them, comparable to the simulator's oracle."""
    return {
        "senderIds": registration.sender_ids,
        "marketCode": registration.market_code,
        "policyId": registration.policy_id,
        "tags": registration.tags,
        "reason": registration.reason_message,
    }


def _true_facts(truth: dict[str, Any]) -> dict[str, object]:
    reason = truth.get("reason")
    return {
        "senderIds": truth["senderIds"],
        "marketCode": truth["marketCode"],
        "policyId": truth["policyId"],
        "tags": truth["tags"],
        "reason": reason["message"] if reason else None,
    }


async def _local(settings: Settings) -> dict[str, Registration]:
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(select(Registration))
            return {row.id: row for row in rows}  # type: ignore[misc]
    finally:
        await engine.dispose()


async def _play(sim: SimulatorServer, api_url: str, settings: Settings, count: int) -> int:
    rng = random.Random(2026)  # a repeatable demo
    async with SimulatorControl(sim.base_url) as control:
        ids = [
            (await control.create_registration(lifecycle=rng.choice(LIFECYCLES)))["id"]
            for _ in range(count)
        ]
        results = await control.deliver(
            api_url + "/callbacks/sinch/registrations",
            order="shuffled",
            duplicates=count,
            seed=7,
            concurrency=8,
        )
        delivered = {result["eventId"] for result in results}
        print(f"delivered {len(results)} callbacks ({len(delivered)} distinct, shuffled)")
        await _drained(settings, len(delivered))
        await _facts_settled(settings)
        local = await _local(settings)
        truth = {rid: (await control.registration(rid))["status"] for rid in ids}
        facts = {rid: _true_facts(await control.facts(rid)) for rid in ids}
        gets = (await control.stats()).get("getRegistration", 0)
        in_order = await _play_in_order(
            control, api_url, settings, rng, len(delivered), min(count, IN_ORDER_MOST)
        )

    print(f"\n{'registration':<38} {'local':<20} {'Sinch (simulator)':<20} facts")
    mismatches = 0
    for rid in ids:
        registration = local.get(rid)
        status = registration.status if registration is not None else "-"
        same_facts = registration is not None and _local_facts(registration) == facts[rid]
        same = status == truth[rid] and same_facts
        mismatches += not same
        mark = "ok" if same else "MISMATCH"
        print(f"{rid:<38} {status:<20} {truth[rid]:<20} {mark}")
    print(
        f"\n{len(ids) - mismatches}/{len(ids)} registrations match Sinch's truth, status and "
        f"facts (sender IDs, market, policy, tags, reason)\n"
        f"shuffled and duplicated: {gets} GETs for {len(delivered)} distinct callbacks, "
        f"{gets / len(ids):.2f} per registration\n{in_order.summary()}"
    )
    return 1 if mismatches or not in_order.within_bound else 0


@dataclass(frozen=True, slots=True)
class _InOrder:
    """The GETs of lifecycles delivered in order, and the most they may cost: one to learn each
    registration, one per trusted move into a fact state (its facts fetch), one per transition
    the table does not allow (its check)."""

    registrations: int
    fact_moves: int
    checks: int
    gets: int

    @property
    def bound(self) -> int:
        return self.registrations + self.fact_moves + self.checks

    @property
    def within_bound(self) -> bool:
        return self.gets <= self.bound

    def summary(self) -> str:
        verdict = "within" if self.within_bound else "OVER"
        return (
            f"in order: {self.gets} GETs for {self.registrations} registrations, "
            f"{self.gets / self.registrations:.2f} per registration ({verdict} the bound "
            f"{self.bound}: one to learn each registration, one per move into "
            f"{', '.join(sorted(FACT_STATES))} ({self.fact_moves}), one per transition the "
            f"table does not allow ({self.checks}))"
        )


async def _deliver_one(
    control: SimulatorControl, api_url: str, settings: Settings, event: dict[str, Any], kept: int
) -> int:
    """Deliver one callback and wait until it is processed; answers how many events are kept."""
    await control.deliver(api_url + "/callbacks/sinch/registrations", event_ids=[event["eventId"]])
    await _drained(settings, kept + 1)
    return kept + 1


IN_ORDER_MOST = 10
"""Lifecycles played in order at the most (one callback at a time: each waits for the worker)."""


async def _play_in_order(
    control: SimulatorControl,
    api_url: str,
    settings: Settings,
    rng: random.Random,
    kept: int,
    count: int,
) -> _InOrder:
    """`count` lifecycles delivered one callback at a time, in order: the GETs they cost, and
    their bound."""
    gets_before = (await control.stats()).get("getRegistration", 0)
    fact_moves = checks = 0
    for _ in range(count):
        path = rng.choice(LIFECYCLES)
        document = await control.create_registration()
        first = (await control.events(document["id"]))[0]
        kept = await _deliver_one(control, api_url, settings, first, kept)
        for previous, status in zip(["IN_QUEUE", *path], path, strict=False):
            event = await control.transition(document["id"], status)
            kept = await _deliver_one(control, api_url, settings, event, kept)
            allowed = is_allowed(previous, status)
            checks += not allowed
            fact_moves += allowed and status in FACT_STATES
        await _facts_settled(settings)
    gets = (await control.stats()).get("getRegistration", 0) - gets_before
    return _InOrder(count, fact_moves, checks, gets)


WHAT_TO_LOOK_AT = """
What to look at:
  - each row: the local copy (this service) against Sinch's truth (the simulator), after the
    callbacks came shuffled and duplicated;
  - the GETs: a callback that was out of order, unknown or doubtful was checked with a GET from
    Sinch instead of trusted (docs/architecture.md walks one callback through);
  - one registration at a time, through the API: `make run`, then in another terminal
    `.venv/bin/python -m devtools sandbox play` (README, first section)."""


def redis_db_of(redis_url: str) -> int:
    parts = urlsplit(redis_url)
    query = parse_qs(parts.query)
    if "db" in query:
        return int(query["db"][0])
    path = parts.path.strip("/")
    return int(path) if parts.scheme != "unix" and path.isdigit() else 0


def demo_redis_url(redis_url: str, db: int) -> str:
    """REDIS_URL's server, database `db`."""
    parts = urlsplit(redis_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"]
    if parts.scheme == "unix":
        return f"unix://{parts.netloc}{parts.path}?{urlencode([*query, ('db', str(db))])}"
    return urlunsplit(parts._replace(path=f"/{db}", query=urlencode(query)))


def _empty_redis_db(url: str) -> bool:
    """Empty that Redis database; False when the server does not answer."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.ConnectionError:
        return False
    finally:
        client.close()
    return True


@contextlib.contextmanager
def _redis(base_url: str, db: int, folder: Path) -> Iterator[str]:
    """Database `db`, emptied, of REDIS_URL's server, or of an embedded Valkey if it is down."""
    url = demo_redis_url(base_url, db)
    if _empty_redis_db(url):
        yield url
        return
    with (folder / "valkey.log").open("wb") as log:
        valkey = EmbeddedValkey(port=free_port(), output=log.fileno())
        valkey.start()
        try:
            print(f"no Redis answers at REDIS_URL: an embedded Valkey on port {valkey.port}")
            yield demo_redis_url(valkey.url, db)
        finally:
            valkey.stop()


async def _postgres(server: URL, sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(
        host=server.host or "127.0.0.1",
        port=server.port or 5432,
        user=server.username,
        password=server.password,
        database="postgres",
    )
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextlib.contextmanager
def _database(folder: Path) -> Iterator[str]:
    """A database of its own: created on DATABASE_URL's server and dropped at the end, or, without
    DATABASE_URL, that of an embedded PostgreSQL in `folder` (stopped at the end)."""
    given = configured("DATABASE_URL", Path(".env"))
    if given:
        name = f"sinch_demo_{secrets.token_hex(4)}"
        url = make_url(given).set(drivername="postgresql+asyncpg")
        asyncio.run(_postgres(url, f'CREATE DATABASE "{name}"'))
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            asyncio.run(_postgres(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        return
    password_file = folder / "postgres.password"
    password_file.write_text(secrets.token_urlsafe(24))
    password_file.chmod(0o600)
    with (folder / "postgres.log").open("wb") as log:
        server = EmbeddedPostgres(
            folder / "postgres",
            port=free_port(),
            password_file=password_file,
            database="sinch_demo",
            output=log.fileno(),
        )
        try:
            server.start()
            yield server.url
        finally:
            server.stop()


def run_demo(count: int = 30, redis_db: int = 14) -> int:
    base = Settings()
    if redis_db_of(base.redis_url) == redis_db:
        print(
            f"error: REDIS_URL uses Redis database {redis_db}, which the demo empties: "
            "choose another with --redis-db",
            file=sys.stderr,
        )
        return 2
    folder = Path(tempfile.mkdtemp(prefix="sinch-demo-"))
    try:
        with _redis(base.redis_url, redis_db, folder) as redis_url, _database(folder) as database:
            status = _run_demo(count, folder, redis_url, database)
    except BaseException:
        print(f"\nthe demo failed: its logs are kept in {folder}", file=sys.stderr)
        raise
    if status:
        print(f"\nsome registrations differ: the logs are kept in {folder / 'service.log'}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
        print(WHAT_TO_LOOK_AT)
    return status


def _run_demo(count: int, folder: Path, redis_url: str, database_url: str) -> int:
    with SimulatorServer(seed=2026) as sim:
        env = {
            **os.environ,
            **sim.env(),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "INTERNAL_API_TOKENS": "demo-token",
            "RECONCILE_INTERVAL_SECONDS": "0",
            "WORKER_METRICS_PORT": "0",
            "LOG_LEVEL": "WARNING",
        }
        settings = Settings(_env_file=None, database_url=database_url)
        subprocess.run(
            [sys.executable, "-m", "app", "migrate"],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = free_port()
        bin_dir = Path(sys.executable).parent
        log = (folder / "service.log").open("wb")
        processes = [
            subprocess.Popen(
                [str(bin_dir / "uvicorn"), "app.main:app", "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            ),
            subprocess.Popen(
                [str(bin_dir / "arq"), "app.worker.WorkerSettings"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            ),
        ]
        try:
            api_url = f"http://127.0.0.1:{port}"
            _wait_healthy(api_url + "/healthz")
            print(
                f"simulator at {sim.base_url}, service at {api_url} (Redis database "
                f"{redis_db_of(redis_url)}), logs in {folder} (removed at the end unless "
                "something fails)"
            )
            return asyncio.run(_play(sim, api_url, settings, count))
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=20)
            log.close()
