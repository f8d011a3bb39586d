"""Benchmark of the worker (`arq app.worker.WorkerSettings`) against arq's own ceiling.

One run measures, on this machine:
1. arq's ceiling: no-op jobs per second through ONE arq worker process (bench/worker_noop.py:
   our `max_jobs`, the same Redis), from the first job's start to the last job's end, with the
   queue filled beforehand. Twice: with arq's default `poll_delay` (0.5 s, what the service
   runs with) and with `poll_delay=0` (arq's machinery alone: the ceiling the target refers to).
2. the service's worker applying in-order events of distinct registrations on PostgreSQL: N
   registrations are seeded IN_QUEUE at T, N inbox rows each moving one to IN_PROGRESS at T+1s (a
   trusted transition: no GET) are stored and enqueued with `enqueue_event`, then the worker is
   started and timed until every row is `processed`. Verified: every outcome `applied:trusted`,
   every registration IN_PROGRESS, one history row each, no GET at the simulator.
3. arrival-to-applied lag at a steady rate (200 events/s by default) through the real path:
   signed callbacks POSTed to `uvicorn app.main:app` (which commits, then enqueues), the same
   worker applying them; lag = processed_at - received_at of each row, p50/p99.

Run from the repository root: `.venv/bin/python -m bench.worker` (about two minutes). It prints a
summary table and writes bench/results/worker-<time>.json plus the processes' logs beside it.
`--app-root /tmp/copy` runs the worker and the API from a copy of the repository (to measure a
change before making it); `--worker-env NAME=VALUE` adds to their environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import redis
import redis.asyncio as aredis
from arq.jobs import serialize_job
from pydantic import SecretStr
from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.callbacks.signature import SIGNATURE_HEADER, sign
from app.core.db import create_engine, utcnow
from app.core.jobs import create_redis, enqueue_event
from app.core.models import CallbackEvent, EventState, Registration, RegistrationHistory
from app.core.settings import Settings
from app.events.repository import NewCallback, store_callbacks
from bench.support import (
    CALLBACK_PATH,
    MACHINE_BUSY,
    OTHER,
    RESULTS,
    ROOT,
    CpuMeter,
    ProcessGroups,
    callback_body,
    cpu_ms_per_item,
    create_database,
    describe_machine,
    drop_database,
    flush_redis,
    latency_summary,
    log_tail,
    percentile,
    redis_url,
    running,
    start_profiler,
    stop_process,
    table,
    timestamp,
    uvicorn_server,
    wait_for_log,
    write_results,
)
from devtools.simulator.server import SimulatorServer

DATABASE_NAME = "bench_worker"
SERVICE_REDIS_URL = redis_url(12)
NOOP_REDIS_URL = redis_url(11)
TARGET_RATIO = 0.4
TARGET_P99_MS = 250.0
ENQUEUE_CONCURRENCY = 64
SEED_CHUNK = 1000
REGISTRATIONS = cast(Table, Registration.__table__)
EVENTS = cast(Table, CallbackEvent.__table__)
HISTORY = cast(Table, RegistrationHistory.__table__)
# The service's own variables are set here, not inherited (LOG_LEVEL stays at its default, INFO).
SERVICE_VARIABLES = frozenset(name.upper() for name in Settings.model_fields)
ARQ = str(Path(sys.executable).parent / "arq")


def sinch_time(value: datetime) -> str:
    """Sinch's time format: UTC, whole seconds, no offset."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def service_cpu_groups(
    worker: subprocess.Popen[bytes], api: subprocess.Popen[bytes] | None = None
) -> ProcessGroups:
    groups: dict[str, list[int] | str] = {
        "postgres": "postgres",
        "redis": "redis-server",
        "bench": [os.getpid()],
        "worker": [worker.pid],
    }
    if api is not None:
        groups["api"] = [api.pid]
    return groups


# ----------------------------------------------------------------------------- 1. arq's ceiling


@dataclass
class Ceiling:
    poll_delay_s: float | None
    """None: arq's default (0.5 s), as the service runs."""
    job_logs: bool
    """arq's two INFO lines per job written (arq's default) or silenced."""
    uvloop: bool
    """The worker's event loop: uvloop (as the service's worker runs) or asyncio's own."""
    jobs: int
    completed: int
    seconds: float
    jobs_per_s: float
    worker_cpu_ms_per_job: float
    """The worker process's CPU time per job: steadier than jobs/s when other work competes."""
    cpu: dict[str, float] = field(default_factory=dict)


async def fill_noop_queue(url: str, jobs: int) -> None:
    """`jobs` no-op jobs in arq's own format, written in pipelines (faster than `enqueue_job`)."""
    client = aredis.Redis.from_url(url)
    try:
        await client.flushdb()
        now = int(time.time() * 1000)
        for start in range(0, jobs, 2000):
            pipe = client.pipeline(transaction=False)
            for n in range(start, min(jobs, start + 2000)):
                job_id = f"noop:{n}"
                pipe.psetex(
                    f"arq:job:{job_id}", 3_600_000, serialize_job("noop", (n,), {}, None, now)
                )
                pipe.zadd("arq:queue", {job_id: now})
            await pipe.execute()
    finally:
        await client.aclose()


def queue_drained(client: redis.Redis) -> bool:
    if cast(int, client.zcard("arq:queue")):
        return False
    return not any(True for _ in client.scan_iter(match="arq:in-progress:*", count=1000))


async def arq_ceiling(
    jobs: int, poll_delay: float | None, stamp: str, *, job_logs: bool = True, uvloop: bool = False
) -> Ceiling:
    await fill_noop_queue(NOOP_REDIS_URL, jobs)
    stats_file = RESULTS / f"worker-{stamp}-noop-stats.json"
    stats_file.unlink(missing_ok=True)
    env = {
        **os.environ,
        "BENCH_REDIS_URL": NOOP_REDIS_URL,
        "BENCH_STATS_FILE": str(stats_file),
        "BENCH_POLL_DELAY": "" if poll_delay is None else str(poll_delay),
        "BENCH_JOB_LOGS": "1" if job_logs else "0",
        "BENCH_UVLOOP": "1" if uvloop else "0",
    }
    label = (
        ("default" if poll_delay is None else f"poll{poll_delay:g}")
        + ("" if job_logs else "-nologs")
        + ("-uvloop" if uvloop else "")
    )
    log_path = RESULTS / f"worker-{stamp}-noop-{label}.log"
    client = redis.Redis.from_url(NOOP_REDIS_URL)
    command = [ARQ, "bench.worker_noop.WorkerSettings"]
    with running(command, cwd=ROOT, env=env, log_path=log_path) as process:
        meter = CpuMeter({"worker": [process.pid], "redis": "redis-server", "bench": [os.getpid()]})
        wait_for_log(process, log_path, "Starting worker")
        meter.start()
        began = time.monotonic()
        while not queue_drained(client):
            if process.poll() is not None or time.monotonic() > began + 180:
                raise RuntimeError(f"no-op worker stalled; log:\n{log_tail(log_path)}")
            await asyncio.sleep(0.05)
        cpu = meter.stop()
        metered = time.monotonic() - began
    client.close()
    stats = json.loads(stats_file.read_text())
    stats_file.unlink()
    seconds = stats["last_end"] - stats["first_start"]
    return Ceiling(
        poll_delay_s=poll_delay,
        job_logs=job_logs,
        uvloop=uvloop,
        jobs=jobs,
        completed=int(stats["jobs"]),
        seconds=round(seconds, 3),
        jobs_per_s=round(stats["jobs"] / seconds, 1) if seconds > 0 else 0.0,
        worker_cpu_ms_per_job=cpu_ms_per_item(cpu, "worker", metered, int(stats["jobs"])),
        cpu=cpu,
    )


# ----------------------------------------------------------------------------- seeding


def sinch_document(registration_id: str, status: str, stamp: str, n: int) -> dict[str, Any]:
    """A registration document shaped like the simulator's (and so like Sinch's)."""
    return {
        "id": registration_id,
        "status": status,
        "registrationType": "ALPHANUMERIC_SENDER_ID",
        "policyId": "sim-policy-gb-alphanumeric",
        "callbackUrl": None,
        "notificationContacts": [],
        "tags": [],
        "createTime": stamp,
        "updateTime": stamp,
        "etaDate": stamp[:10],
        "price": {
            "currency": "EUR",
            "frequency": "MONTHLY",
            "mode": "AUTOMATIC",
            "recurrentFeeAmount": "10.00",
            "setupFeeAmount": "0.00",
        },
        "requestDetails": [
            {"additionalDetails": [], "senderIdDetails": [{"senderId": f"BENCH{n:05d}"}]}
        ],
        "attachments": [],
        "logs": [
            {"createTime": stamp, "message": "Registration submitted", "registrationState": status}
        ],
    }


async def seed_registrations(engine: AsyncEngine, ids: Sequence[str], at: datetime) -> None:
    """Registrations known locally as IN_QUEUE since `at`, as a GET at `at` would have left them."""
    stamp = sinch_time(at)
    now = utcnow()
    for start in range(0, len(ids), SEED_CHUNK):
        rows = [
            {
                "id": registration_id,
                "status": "IN_QUEUE",
                "registration_type": "ALPHANUMERIC_SENDER_ID",
                "status_changed_at": at,
                "last_synced_at": at,
                "sinch": sinch_document(registration_id, "IN_QUEUE", stamp, start + n),
                "created_at": now,
                "updated_at": now,
            }
            for n, registration_id in enumerate(ids[start : start + SEED_CHUNK])
        ]
        async with engine.begin() as connection:
            await connection.execute(insert(REGISTRATIONS), rows)


async def store_inbox_rows(
    engine: AsyncEngine, bodies: Sequence[tuple[str, bytes]], secret: str
) -> list[int]:
    """Keep `bodies` (registration id, body) as `received` inbox rows, as the endpoint would."""
    row_ids: list[int] = []
    for start in range(0, len(bodies), SEED_CHUNK):
        callbacks = [
            NewCallback(
                dedup_key=json.loads(body)["eventId"],
                event_id=json.loads(body)["eventId"],
                registration_id=registration_id,
                body=body,
                headers={
                    "content-type": "application/json",
                    SIGNATURE_HEADER.lower(): sign(body, secret),
                },
                peer="127.0.0.1",
                secret_index=0,
                received_at=utcnow(),
            )
            for registration_id, body in bodies[start : start + SEED_CHUNK]
        ]
        async with engine.begin() as connection:
            stored = await store_callbacks(connection, callbacks)
        row_ids.extend(s.row_id for s in stored if s.row_id is not None)
    return row_ids


async def enqueue_all(settings: Settings, row_ids: Sequence[int]) -> None:
    arq_redis = create_redis(settings)
    gate = asyncio.Semaphore(ENQUEUE_CONCURRENCY)

    async def one(row_id: int) -> None:
        async with gate:
            if not await enqueue_event(arq_redis, row_id):
                raise RuntimeError(f"row {row_id} was queued already")

    try:
        await asyncio.gather(*(one(row_id) for row_id in row_ids))
    finally:
        await arq_redis.aclose()


# ----------------------------------------------------------------------------- verification


async def count_received(engine: AsyncEngine, first_row: int) -> int:
    async with engine.connect() as connection:
        value = await connection.scalar(
            select(func.count())
            .select_from(EVENTS)
            .where(EVENTS.c.id >= first_row, EVENTS.c.state == EventState.RECEIVED)
        )
    return int(value or 0)


async def wait_until_processed(
    engine: AsyncEngine, first_row: int, worker: subprocess.Popen[bytes], limit_s: float
) -> None:
    deadline = time.monotonic() + limit_s
    while await count_received(engine, first_row):
        if worker.poll() is not None:
            raise RuntimeError("the worker exited")
        if time.monotonic() > deadline:
            raise RuntimeError(f"events still `received` after {limit_s} s")
        await asyncio.sleep(0.1)


async def verify(
    engine: AsyncEngine, first_row: int, registration_ids: Sequence[str]
) -> dict[str, Any]:
    """What the worker did to rows >= `first_row` and to `registration_ids`."""
    async with engine.connect() as connection:
        outcome_rows = await connection.execute(
            select(EVENTS.c.outcome, func.count())
            .where(EVENTS.c.id >= first_row)
            .group_by(EVENTS.c.outcome)
        )
        outcomes: dict[str, int] = {str(row[0]): int(row[1]) for row in outcome_rows}
        status_rows = await connection.execute(
            select(REGISTRATIONS.c.status, func.count())
            .where(REGISTRATIONS.c.id.in_(registration_ids))
            .group_by(REGISTRATIONS.c.status)
        )
        statuses: dict[str, int] = {str(row[0]): int(row[1]) for row in status_rows}
        history = await connection.scalar(
            select(func.count())
            .select_from(HISTORY)
            .where(HISTORY.c.registration_id.in_(registration_ids))
        )
    return {
        "outcomes": outcomes,
        "registration_statuses": statuses,
        "history_rows": int(history or 0),
    }


def verified(check: dict[str, Any], expected: int, gets: int) -> list[str]:
    problems: list[str] = []
    if check["outcomes"] != {"applied:trusted": expected}:
        problems.append(f"outcomes {check['outcomes']} (expected applied:trusted x{expected})")
    if check["registration_statuses"] != {"IN_PROGRESS": expected}:
        problems.append(f"registration statuses {check['registration_statuses']}")
    if check["history_rows"] != expected:
        problems.append(f"{check['history_rows']} history rows (expected {expected})")
    if gets:
        problems.append(f"{gets} GETs made at the simulator (expected none)")
    return problems


# ----------------------------------------------------------------------------- 2. throughput


@dataclass
class Throughput:
    events: int
    seconds: float
    """From the first event's processing to the last's (`processed_at`)."""
    events_per_s: float
    wall_seconds: float
    """From the worker logging "worker started" to the bench seeing every row processed."""
    gets: int
    problems: list[str]
    check: dict[str, Any]
    worker_cpu_ms_per_event: float
    postgres_cpu_ms_per_event: float
    cpu: dict[str, float] = field(default_factory=dict)


async def processed_span(engine: AsyncEngine, first_row: int) -> tuple[datetime, datetime]:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(func.min(EVENTS.c.processed_at), func.max(EVENTS.c.processed_at)).where(
                    EVENTS.c.id >= first_row
                )
            )
        ).one()
    return row[0], row[1]


# ----------------------------------------------------------------------------- 3. steady lag


@dataclass
class Lag:
    rate_per_s: float
    seconds: float
    warmup_seconds: float
    sent: int
    answered_200: int
    other_answers: dict[str, int]
    achieved_rate_per_s: float
    measured_events: int
    lag_ms: dict[str, float]
    post_ms: dict[str, float]
    send_drift_ms_p99: float
    gets: int
    problems: list[str]
    check: dict[str, Any]
    cpu: dict[str, float] = field(default_factory=dict)


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client: a few microseconds of CPU per request where httpx
    spends a millisecond, so that the sender keeps its schedule on a busy machine."""

    def __init__(self, host: str, port: int, connections: int) -> None:
        self._host, self._port, self._size = host, port, connections
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._all: list[asyncio.StreamWriter] = []

    async def open(self) -> None:
        for _ in range(self._size):
            reader, writer = await asyncio.open_connection(self._host, self._port)
            self._all.append(writer)
            self._idle.put_nowait((reader, writer))

    async def close(self) -> None:
        for writer in self._all:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def send(self, request: bytes) -> int:
        """Send one prepared request; answers the response's status code."""
        reader, writer = await self._idle.get()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
        except Exception:
            writer.close()
            reader, writer = await asyncio.open_connection(self._host, self._port)
            self._all.append(writer)
            raise
        finally:
            self._idle.put_nowait((reader, writer))
        return status


def prepared_request(host: str, body: bytes, secret: str) -> bytes:
    head = (
        f"POST {CALLBACK_PATH} HTTP/1.1\r\n"
        f"host: {host}\r\n"
        "content-type: application/json\r\n"
        f"{SIGNATURE_HEADER}: {sign(body, secret)}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def post_steadily(
    host: str, port: int, bodies: Sequence[bytes], secret: str, rate: float
) -> tuple[list[int], list[float], list[float]]:
    """POST `bodies` at `rate` per second on a fixed schedule, not waiting for answers (up to
    64 in flight). Answers each request's status, its latency from its scheduled time (s), and
    how late it was sent (s)."""
    requests = [prepared_request(f"{host}:{port}", body, secret) for body in bodies]
    statuses: list[int] = [0] * len(bodies)
    latencies: list[float] = [0.0] * len(bodies)
    drift: list[float] = [0.0] * len(bodies)
    client = RawHttp(host, port, connections=64)
    await client.open()

    async def post(n: int, due: float) -> None:
        try:
            statuses[n] = await client.send(requests[n])
        except (OSError, ValueError, asyncio.IncompleteReadError):
            statuses[n] = -1
        latencies[n] = time.perf_counter() - due

    try:
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter() + 0.05
        for n in range(len(requests)):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            drift[n] = time.perf_counter() - due
            tasks.append(asyncio.create_task(post(n, due)))
        await asyncio.gather(*tasks)
    finally:
        await client.close()
    return statuses, latencies, drift


async def lag_rows(engine: AsyncEngine, first_row: int) -> list[tuple[datetime, datetime]]:
    async with engine.connect() as connection:
        result = await connection.execute(
            select(EVENTS.c.received_at, EVENTS.c.processed_at)
            .where(EVENTS.c.id >= first_row)
            .order_by(EVENTS.c.received_at)
        )
        return [(row[0], row[1]) for row in result]


@dataclass
class Service:
    """What the service phases share: the database, the simulator, the environment."""

    args: argparse.Namespace
    stamp: str
    engine: AsyncEngine
    settings: Settings
    env: dict[str, str]
    sim_stats: Any
    secret: str
    project: str
    known_at: datetime
    """When the seeded registrations became IN_QUEUE; their events are one second later."""

    @property
    def event_at(self) -> datetime:
        return self.known_at + timedelta(seconds=1)

    def gets(self) -> int:
        return int(self.sim_stats["getRegistration"])


@dataclass
class Backlog:
    registration_ids: list[str]
    row_ids: list[int]


async def fill_backlog(service: Service, events: int) -> Backlog:
    """Seed `events` registrations, keep one trusted event for each and enqueue them all."""
    engine = service.engine
    ids = [f"bench-tp-{n:06d}-{uuid.uuid4().hex[:8]}" for n in range(events)]
    await seed_registrations(engine, ids, service.known_at)
    bodies = [
        (rid, callback_body(rid, "IN_PROGRESS", sinch_time(service.event_at), service.project))
        for rid in ids
    ]
    row_ids = await store_inbox_rows(engine, bodies, service.secret)
    await enqueue_all(service.settings, row_ids)
    print(f"seeded, stored and enqueued {len(row_ids)} events", flush=True)
    return Backlog(registration_ids=ids, row_ids=row_ids)


async def throughput_phase(
    service: Service, worker: subprocess.Popen[bytes], worker_log: Path, backlog: Backlog
) -> Throughput:
    """Time the worker, just started, through `backlog`; verify what it did."""
    engine, ids, row_ids = service.engine, backlog.registration_ids, backlog.row_ids
    first_row = min(row_ids)
    gets_before = service.gets()
    meter = CpuMeter(service_cpu_groups(worker))
    wait_for_log(worker, worker_log, "worker started")
    profile = RESULTS / f"worker-{service.stamp}-profile.txt"
    profiler = start_profiler(service.args.py_spy, worker.pid, profile, rate=250)
    meter.start()
    ready = time.perf_counter()
    await wait_until_processed(engine, first_row, worker, limit_s=150)
    wall = time.perf_counter() - ready
    cpu = meter.stop()
    if profiler is not None:
        stop_process(profiler, signal.SIGINT)
    first, last = await processed_span(engine, first_row)
    seconds = (last - first).total_seconds()
    check = await verify(engine, first_row, ids)
    gets = service.gets() - gets_before
    return Throughput(
        events=len(row_ids),
        seconds=round(seconds, 3),
        events_per_s=round((len(row_ids) - 1) / seconds, 1) if seconds else 0.0,
        wall_seconds=round(wall, 3),
        gets=gets,
        problems=verified(check, len(row_ids), gets),
        check=check,
        worker_cpu_ms_per_event=cpu_ms_per_item(cpu, "worker", wall, len(row_ids)),
        postgres_cpu_ms_per_event=cpu_ms_per_item(cpu, "postgres", wall, len(row_ids)),
        cpu=cpu,
    )


async def lag_phase(service: Service, worker: subprocess.Popen[bytes]) -> Lag:
    """Signed callbacks POSTed to the API at a steady rate; lag per row from the inbox."""
    args, engine = service.args, service.engine
    total = round(args.rate * (args.seconds + args.warmup))
    ids = [f"bench-lag-{n:06d}-{uuid.uuid4().hex[:8]}" for n in range(total)]
    await seed_registrations(engine, ids, service.known_at)
    at = sinch_time(service.event_at)
    bodies = [callback_body(rid, "IN_PROGRESS", at, service.project) for rid in ids]
    async with engine.connect() as connection:
        last_row = await connection.scalar(select(func.coalesce(func.max(EVENTS.c.id), 0)))
    first_row = int(last_row or 0) + 1
    api_log = RESULTS / f"worker-{service.stamp}-api.log"
    print(f"posting {total} callbacks at {args.rate:g}/s", flush=True)
    with uvicorn_server(
        "app.main:app", cwd=args.app_root, env=service.env, log_path=api_log
    ) as api:
        gets_before = service.gets()
        meter = CpuMeter(service_cpu_groups(worker, api.process))
        meter.start()
        sent_at = time.time()
        statuses, latencies, drift = await post_steadily(
            "127.0.0.1", api.port, bodies, service.secret, args.rate
        )
        await wait_until_processed(engine, first_row, worker, limit_s=120)
        cpu = meter.stop()
    rows = await lag_rows(engine, first_row)
    cutoff = datetime.fromtimestamp(sent_at + args.warmup, UTC)
    measured = [(received, processed) for received, processed in rows if received >= cutoff]
    lags = [(processed - received).total_seconds() * 1000 for received, processed in measured]
    span = (measured[-1][0] - measured[0][0]).total_seconds() if len(measured) > 1 else 0.0
    check = await verify(engine, first_row, ids)
    gets = service.gets() - gets_before
    others: dict[str, int] = {}
    for status in statuses:
        if status != 200:
            others[str(status)] = others.get(str(status), 0) + 1
    problems = verified(check, len(rows), gets)
    if len(rows) != total:
        problems.append(f"{len(rows)} rows kept for {total} callbacks sent")
    if others:
        problems.append(f"answers other than 200: {others}")
    return Lag(
        rate_per_s=args.rate,
        seconds=args.seconds,
        warmup_seconds=args.warmup,
        sent=total,
        answered_200=statuses.count(200),
        other_answers=others,
        achieved_rate_per_s=round((len(measured) - 1) / span, 1) if span else 0.0,
        measured_events=len(measured),
        lag_ms=latency_summary(lags),
        post_ms=latency_summary([s * 1000 for s in latencies]),
        send_drift_ms_p99=round(percentile(drift, 0.99) * 1000, 1),
        gets=gets,
        problems=problems,
        check=check,
        cpu=cpu,
    )


async def service_phases(args: argparse.Namespace, stamp: str, results: dict[str, Any]) -> None:
    database_url = await asyncio.to_thread(create_database, DATABASE_NAME, args.app_root)
    flush_redis(SERVICE_REDIS_URL)
    try:
        async with SimulatorServer() as simulator:
            extra = dict(item.split("=", 1) for item in args.worker_env)
            inherited = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
            env = {
                **inherited,
                **simulator.env(),
                "DATABASE_URL": database_url,
                "REDIS_URL": SERVICE_REDIS_URL,
                "RECONCILE_INTERVAL_SECONDS": "0",
                "WORKER_METRICS_PORT": "0",
                **extra,
            }
            settings = Settings(
                database_url=database_url,
                redis_url=SERVICE_REDIS_URL,
                sinch_callback_secrets=[SecretStr(simulator.hmac_secret)],
            )
            engine = create_engine(settings)
            service = Service(
                args=args,
                stamp=stamp,
                engine=engine,
                settings=settings,
                env=env,
                sim_stats=simulator.app.state.simulator.stats,
                secret=simulator.hmac_secret,
                project=simulator.project_id,
                known_at=(utcnow() - timedelta(hours=1)).replace(microsecond=0),
            )
            worker_log = RESULTS / f"worker-{stamp}-worker.log"
            try:
                backlog = await fill_backlog(service, args.events)
                with running(
                    [ARQ, "app.worker.WorkerSettings"],
                    cwd=args.app_root,
                    env=env,
                    log_path=worker_log,
                    stop_signal=signal.SIGTERM,
                ) as worker:
                    throughput = await throughput_phase(service, worker, worker_log, backlog)
                    results["throughput"] = asdict(throughput)
                    print(
                        f"worker: {throughput.events_per_s:.0f} events/s"
                        f" ({throughput.events} in {throughput.seconds:.2f} s)",
                        flush=True,
                    )
                    if not args.skip_lag:
                        results["lag"] = asdict(await lag_phase(service, worker))
            finally:
                await engine.dispose()
    finally:
        await asyncio.to_thread(drop_database, DATABASE_NAME)


async def run(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if not args.skip_ceiling:
        # No poll delay (arq's machinery alone), with and without arq's per-job log lines, on
        # asyncio's loop and on uvloop (which the service's worker runs on); and arq's default
        # poll delay.
        ceilings = [
            await arq_ceiling(args.noop_jobs, 0.0, stamp),
            await arq_ceiling(args.noop_jobs, 0.0, stamp, job_logs=False),
            await arq_ceiling(args.noop_jobs, 0.0, stamp, job_logs=False, uvloop=True),
            await arq_ceiling(args.noop_jobs_default, None, stamp),
        ]
        results["ceilings"] = [asdict(c) for c in ceilings]
        for c in ceilings:
            print(
                f"arq ceiling ({ceiling_label(c.poll_delay_s, c.job_logs, c.uvloop)}): "
                f"{c.jobs_per_s:.0f} jobs/s",
                flush=True,
            )
    await service_phases(args, stamp, results)
    return results


def ceiling_label(poll_delay: float | None, job_logs: bool, uvloop: bool) -> str:
    delay = "arq default 0.5 s" if poll_delay is None else f"{poll_delay:g} s"
    return (
        f"poll {delay}, "
        + ("job logs" if job_logs else "no job logs")
        + (", uvloop" if uvloop else "")
    )


def summarize(results: dict[str, Any]) -> str:
    rows: list[list[object]] = [["measure", "value", "target"]]
    ceilings = results.get("ceilings", [])
    for c in ceilings:
        label = ceiling_label(c["poll_delay_s"], c["job_logs"], c["uvloop"])
        rows.append([f"arq no-op, {label}", f"{c['jobs_per_s']:.0f} /s"])
        rows.append(["  worker CPU per job", f"{c['worker_cpu_ms_per_job']:.3f} ms"])
    tp = results["throughput"]
    rows.append(["worker: in-order events, distinct registrations", f"{tp['events_per_s']:.0f} /s"])
    rows.append(["  worker CPU per event", f"{tp['worker_cpu_ms_per_event']:.3f} ms"])
    rows.append(["  PostgreSQL CPU per event", f"{tp['postgres_cpu_ms_per_event']:.3f} ms"])
    if ceilings:
        best = max(ceilings, key=lambda c: c["jobs_per_s"])
        ratio = tp["events_per_s"] / best["jobs_per_s"] if best["jobs_per_s"] else 0.0
        verdict = "ok" if ratio >= TARGET_RATIO else "MISSED"
        rows.append(
            ["  ratio to the best arq ceiling", f"{ratio:.2f}", f">= {TARGET_RATIO} {verdict}"]
        )
        if tp["worker_cpu_ms_per_event"]:
            cpu_ratio = best["worker_cpu_ms_per_job"] / tp["worker_cpu_ms_per_event"]
            rows.append(["  same, by worker CPU per item (load-independent)", f"{cpu_ratio:.2f}"])
    phases = [("throughput", tp["cpu"])] + (
        [("lag", results["lag"]["cpu"])] if "lag" in results else []
    )
    for name, cpu in phases:
        rows.append(
            [
                f"  {name}: machine busy (all cores) / others (one core)",
                f"{cpu.get(MACHINE_BUSY, 0):.0f}% / {cpu.get(OTHER, 0):.0f}%",
            ]
        )
    problems = list(tp["problems"])
    if "lag" in results:
        lag = results["lag"]
        lag_ms = lag["lag_ms"]
        rate = format(lag["rate_per_s"], "g")
        rows.append([f"lag at {rate} events/s, p50", f"{lag_ms.get('p50', float('nan')):.1f} ms"])
        verdict = "ok" if lag_ms.get("p99", float("inf")) <= TARGET_P99_MS else "MISSED"
        rows.append(
            [
                f"lag at {rate} events/s, p99",
                f"{lag_ms.get('p99', float('nan')):.1f} ms",
                f"<= {TARGET_P99_MS:g} ms {verdict}",
            ]
        )
        rows.append(["  achieved arrival rate", f"{lag['achieved_rate_per_s']:.0f} /s"])
        post = lag["post_ms"]
        rows.append(
            ["  POST latency p50 / p99", f"{post.get('p50', 0):.0f} / {post.get('p99', 0):.0f} ms"]
        )
        problems += lag["problems"]
    rows.append(["verification", "ok" if not problems else "FAILED"])
    return "\n".join(["", table(rows), *(f"  - {problem}" for problem in problems)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=6000, help="events of the throughput run")
    parser.add_argument("--noop-jobs", type=int, default=20000, help="no-op jobs, no poll delay")
    parser.add_argument(
        "--noop-jobs-default",
        type=int,
        default=2000,
        help="no-op jobs with arq's default poll delay (about 200 jobs/s: keep it small)",
    )
    parser.add_argument("--rate", type=float, default=200.0, help="events/s of the lag run")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds of it")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds sent before measuring")
    parser.add_argument(
        "--app-root",
        type=Path,
        default=ROOT,
        help="run the worker and the API from this copy of the repository",
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the worker and the API",
    )
    parser.add_argument("--skip-ceiling", action="store_true", help="no arq ceiling runs")
    parser.add_argument("--skip-lag", action="store_true", help="no steady-rate lag run")
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        help="py-spy binary: profile the worker during the throughput run (collapsed stacks)",
    )
    args = parser.parse_args()
    args.app_root = args.app_root.resolve()

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = timestamp()
    started_at = time.monotonic()
    results = asyncio.run(run(args, stamp))
    print(summarize(results))
    results["meta"] = {
        "time": stamp,
        "command": " ".join(sys.argv),
        "app_root": str(args.app_root),
        "worker_env": args.worker_env,
        "seconds": round(time.monotonic() - started_at, 1),
    }
    results["environment"] = describe_machine()
    write_results("worker", stamp, results)
    problems = results["throughput"]["problems"] + results.get("lag", {}).get("problems", [])
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
