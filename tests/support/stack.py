"""The whole service as real processes, a stream of signed callbacks, and the checks on both.

Used by the fault suite and the end-to-end convergence test.

The stack is the simulator as Sinch, the API and worker as child processes, a private Redis, and a
database (PostgreSQL, optionally behind a proxy the test can cut). The load keeps, per
callback, whether it was answered 200; like Sinch, it resends whatever was not.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.engine import make_url

from app.core.db import create_engine
from app.core.models import CallbackEvent, EventState
from app.core.settings import Settings
from devtools.simulator import SimulatorControl, SimulatorServer
from devtools.simulator.projects import ProjectKeys
from tests.conftest import make_settings
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.processes import (
    PrivateRedis,
    ServiceProcess,
    start_api,
    start_worker,
    wait_worker_started,
)
from tests.support.proxy import TcpProxy
from tests.support.reads import history, registrations
from tests.support.signing import sign

CALLBACK_PATH = "/callbacks/sinch/registrations"
KEY_SECRET = "fault-key-secret-must-never-be-logged"
HMAC_SECRET = "fault-hmac-secret-must-never-be-logged"
API_TOKEN = "fault-internal-token-must-never-be-logged"
LIFECYCLE = ["IN_PROGRESS", "PENDING", "IN_PROGRESS", "APPROVED"]


@dataclass
class Stack:
    folder: Path
    settings: Settings
    env: dict[str, str]
    sim: SimulatorServer
    redis: PrivateRedis
    proxy: TcpProxy | None
    api: ServiceProcess | None = None
    api_url: str = ""
    workers: list[ServiceProcess] = field(default_factory=list)
    delivery_workers: list[ServiceProcess] = field(default_factory=list)
    supervised: bool = False
    """Restart a worker that exits, as the deployment's supervisor would (see `drain`)."""
    _log_count: itertools.count[int] = field(default_factory=itertools.count)

    def start_api(self) -> str:
        self.api, self.api_url = start_api(
            self.env, self.folder / f"api-{next(self._log_count)}.log"
        )
        return self.api_url

    def start_worker(self) -> ServiceProcess:
        worker = start_worker(self.env, self.folder / f"worker-{next(self._log_count)}.log")
        self.workers.append(worker)
        return worker

    def start_api_and_worker(self, *, delivery_worker: bool = False) -> ServiceProcess:
        """`start_api` and `start_worker` (and with `delivery_worker`, `start_delivery_worker`),
        the workers starting up while the API does: most of a start is importing the app, and
        the starts overlap instead of each waiting for the one before. Answers the worker."""
        worker = start_worker(
            self.env, self.folder / f"worker-{next(self._log_count)}.log", wait=False
        )
        self.workers.append(worker)  # from now on the stack stops it, whatever fails next
        deliveries = None
        if delivery_worker:
            deliveries = start_worker(
                self.env,
                self.folder / f"deliveries-{next(self._log_count)}.log",
                deliveries=True,
                wait=False,
            )
            self.delivery_workers.append(deliveries)
        self.start_api()
        wait_worker_started(worker)
        if deliveries is not None:
            wait_worker_started(deliveries, deliveries=True)
        return worker

    def start_delivery_worker(self) -> ServiceProcess:
        """A delivery worker (`arq app.worker.DeliveryWorkerSettings`): the subscriptions'
        deliveries run there, apart from the callbacks' jobs, as deployed by default."""
        worker = start_worker(
            self.env, self.folder / f"deliveries-{next(self._log_count)}.log", deliveries=True
        )
        self.delivery_workers.append(worker)
        return worker

    def restart_dead_workers(self) -> int:
        """What the deployment's supervisor does (Compose: `restart: unless-stopped`): start a
        new worker for each one that exited. Answers how many were restarted."""
        restarted = 0
        for workers, start in (
            (self.workers, self.start_worker),
            (self.delivery_workers, self.start_delivery_worker),
        ):
            dead = [w for w in workers if w.process is None or w.process.poll() is not None]
            for worker in dead:
                workers.remove(worker)
                worker.stop()
                start()
            restarted += len(dead)
        return restarted

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.folder.glob("*.log"))


@contextlib.contextmanager
def running_stack(
    folder: Path,
    name: str,
    *,
    proxy: bool = False,
    sim_projects: Sequence[ProjectKeys] = (),
    **env: str,
) -> Iterator[Stack]:
    """Start everything; stop everything; then check that no process logged a secret.
    `sim_projects`: more Sinch projects the simulator serves (devtools/simulator/projects.py)."""
    pg_name = f"sinch_fault_{name}_{os.getpid()}"
    database_url = create_postgres_database(pg_name)
    service_url = database_url
    tcp_proxy = None
    if proxy:
        url = make_url(database_url)
        tcp_proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        tcp_proxy.start()
        service_url = url.set(host="127.0.0.1", port=tcp_proxy.port).render_as_string(
            hide_password=False
        )
    redis_server = PrivateRedis(folder)
    redis_server.start()
    sim = SimulatorServer(
        key_secret=KEY_SECRET, hmac_secret=HMAC_SECRET, other_projects=sim_projects
    )
    sim.start()
    variables = {
        **sim.env(),
        "DATABASE_URL": service_url,
        "REDIS_URL": redis_server.url,
        "INTERNAL_API_TOKENS": API_TOKEN,
        "RECONCILE_INTERVAL_SECONDS": "0",
        "SWEEP_INTERVAL_SECONDS": "1",
        "SWEEP_GRACE_SECONDS": "2",
        "JOB_RETRY_BASE_SECONDS": "0.2",
        "JOB_TIMEOUT_SECONDS": "5",
        "DELIVERY_TIMEOUT_SECONDS": "2",  # below the short job's budget (3.75 s)
        "SHUTDOWN_GRACE_SECONDS": "10",
        **env,
    }
    settings = make_settings(
        database_url,
        redis_server.url,
        sinch_api_base_url=sim.base_url,
        sinch_auth_url=sim.auth_url,
        sinch_project_id=sim.project_id,
        sinch_key_id=sim.key_id,
        sinch_key_secret=KEY_SECRET,
        sinch_callback_secrets=[HMAC_SECRET],
    )
    stack = Stack(folder, settings, variables, sim, redis_server, tcp_proxy)
    try:
        yield stack
    finally:
        processes = [p for p in (stack.api, *stack.workers, *stack.delivery_workers) if p]
        for process in processes:
            process.terminate()  # all at once: their graceful shutdowns overlap
        for process in processes:
            process.stop()
        sim.stop()
        redis_server.stop()
        if tcp_proxy is not None:
            tcp_proxy.stop()
        drop_postgres_database(pg_name)
    logs = stack.logs()
    assert logs, "the processes wrote no logs"
    for secret in (KEY_SECRET, HMAC_SECRET, API_TOKEN, *_project_secrets(sim_projects)):
        assert secret not in logs, "a secret reached a log"


@dataclass
class Load:
    """Signed callbacks for `registrations` lifecycles, and what each answer was."""

    bodies: dict[str, bytes]
    registration_ids: list[str]
    answered_ok: set[str] = field(default_factory=set)
    answers: list[tuple[float, str, int | str]] = field(default_factory=list)

    def unanswered(self) -> list[str]:
        return [event_id for event_id in self.bodies if event_id not in self.answered_ok]


async def make_load(stack: Stack, registrations_count: int) -> Load:
    async with SimulatorControl(stack.sim.base_url) as sim:
        ids = [
            (await sim.create_registration(lifecycle=LIFECYCLE))["id"]
            for _ in range(registrations_count)
        ]
        events = [event for rid in ids for event in await sim.events(rid)]
    bodies = {event["eventId"]: _body(event) for event in events}
    return Load(bodies=bodies, registration_ids=ids)


def _body(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


async def post(client: httpx.AsyncClient, url: str, load: Load, event_id: str) -> int | str:
    body = load.bodies[event_id]
    try:
        response = await client.post(
            url + CALLBACK_PATH,
            content=body,
            headers={"X-Sinch-Signature": sign(body, HMAC_SECRET)},
        )
    except httpx.HTTPError as exc:
        outcome: int | str = type(exc).__name__
    else:
        outcome = response.status_code
        if outcome == 200:
            load.answered_ok.add(event_id)
    load.answers.append((time.monotonic(), event_id, outcome))
    return outcome


async def send(
    load: Load, url: str | Any, event_ids: list[str], *, concurrency: int = 8, pause: float = 0.0
) -> None:
    """Post the events, `concurrency` at a time (`url` may be a callable giving the URL)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for event_id in event_ids:
        queue.put_nowait(event_id)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, connect=2)) as client:

        async def sender() -> None:
            while not queue.empty():
                event_id = queue.get_nowait()
                await post(client, url() if callable(url) else url, load, event_id)
                if pause:
                    await asyncio.sleep(pause)

        await asyncio.gather(*(sender() for _ in range(concurrency)))


async def resend_until_kept(load: Load, url: str, *, limit_seconds: float = 60) -> None:
    """What Sinch does: retry every callback not answered 200 until it is."""
    deadline = time.monotonic() + limit_seconds
    while load.unanswered():
        assert time.monotonic() < deadline, f"{len(load.unanswered())} callbacks never kept"
        await send(load, url, load.unanswered())
        if load.unanswered():
            await asyncio.sleep(0.5)


def _project_secrets(projects: Sequence[ProjectKeys]) -> list[str]:
    return [secret for p in projects for secret in (p.key_secret, p.hmac_secret)]


async def kept_event_ids(stack: Stack) -> dict[str, str]:
    """Kept events by event id, with their state."""
    engine = create_engine(stack.settings)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(select(CallbackEvent.dedup_key, CallbackEvent.state))
            return {key: state for key, state in rows}
    finally:
        await engine.dispose()


async def assert_every_200_is_kept(stack: Stack, load: Load) -> None:
    kept = await kept_event_ids(stack)
    missing = [event_id for event_id in load.answered_ok if event_id not in kept]
    assert not missing, f"{len(missing)} callbacks answered 200 are not kept"


async def drain(stack: Stack, load: Load, *, limit_seconds: float = 90) -> dict[str, str]:
    """Wait until every kept event is processed; answer the final states."""
    deadline = time.monotonic() + limit_seconds
    while True:
        kept = await kept_event_ids(stack)
        waiting = [k for k in load.bodies if kept.get(k) in (None, EventState.RECEIVED)]
        if not waiting:
            return kept
        if stack.supervised:
            stack.restart_dead_workers()
        assert time.monotonic() < deadline, f"{len(waiting)} events never processed"
        await asyncio.sleep(0.2)


async def drain_all(stack: Stack, *, limit_seconds: float = 60) -> dict[str, str]:
    """Wait until no kept event is `received` any more (every one processed, failed or invalid);
    answer the states by dedup key."""
    deadline = time.monotonic() + limit_seconds
    while True:
        kept = await kept_event_ids(stack)
        if kept and EventState.RECEIVED not in kept.values():
            return kept
        assert time.monotonic() < deadline, "events were never all processed"
        await asyncio.sleep(0.2)


async def assert_converged(stack: Stack, load: Load) -> None:
    states = await drain(stack, load)
    assert {states[k] for k in load.bodies} == {EventState.PROCESSED}, (
        "an event did not end processed"
    )
    async with SimulatorControl(stack.sim.base_url) as sim:
        truth = {rid: (await sim.registration(rid))["status"] for rid in load.registration_ids}
    local = {r.id: r.status for r in await registrations(stack.settings)}
    assert {rid: local.get(rid) for rid in truth} == truth
    rows = await history(stack.settings)
    for rid in truth:
        chain = [h for h in rows if h.registration_id == rid]
        assert chain[0].from_status is None
        for before, after in itertools.pairwise(chain):
            assert after.from_status == before.to_status
            # Sinch's time moves back only where a snapshot overruled a callback (and says so).
            assert after.at >= before.at or after.note is not None


@contextlib.asynccontextmanager
async def background(coroutine: Any) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.create_task(coroutine)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
