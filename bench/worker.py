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

Run from the repository root: `.venv/bin/python bench/worker.py` (about two minutes). It prints a
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
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import redis  # noqa: E402
import redis.asyncio as aredis  # noqa: E402
from arq.jobs import serialize_job  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from sqlalchemy import Table, func, insert, select  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine  # noqa: E402

from app.callbacks.inbox import NewCallback, store_callbacks  # noqa: E402
from app.callbacks.signature import SIGNATURE_HEADER, sign  # noqa: E402
from app.db import create_engine, utcnow  # noqa: E402
from app.models import CallbackEvent, EventState, Registration, RegistrationHistory  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.simulator.server import SimulatorServer  # noqa: E402
from app.worker.queue import create_redis, enqueue_event  # noqa: E402
from bench.procstat import CLOCK_TICKS, pids_named, process_ticks  # noqa: E402
from tests.support.databases import create_postgres_database, drop_postgres_database  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DATABASE_NAME = "bench_worker"
REDIS_HOST = "redis://127.0.0.1:6379"
SERVICE_REDIS_URL = f"{REDIS_HOST}/12"
NOOP_REDIS_URL = f"{REDIS_HOST}/11"
CALLBACK_PATH = "/callbacks/sinch/registrations"
TARGET_RATIO = 0.4
TARGET_P99_MS = 250.0
ENQUEUE_CONCURRENCY = 64
SEED_CHUNK = 1000
REGISTRATIONS = cast(Table, Registration.__table__)
EVENTS = cast(Table, CallbackEvent.__table__)
HISTORY = cast(Table, RegistrationHistory.__table__)
# The service's own variables are set here, not inherited (LOG_LEVEL stays at its default, INFO).
SERVICE_VARIABLES = frozenset(name.upper() for name in Settings.model_fields)


# ----------------------------------------------------------------------------- small helpers


def sinch_time(value: datetime) -> str:
    """Sinch's time format: UTC, whole seconds, no offset."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


class CpuMeter:
    """CPU used over an interval, in percent of ONE core, by groups of processes; and the whole
    machine's busy share of all cores (what else ran meanwhile skews every figure here)."""

    def __init__(self, groups: Callable[[], Mapping[str, list[int]]]) -> None:
        self._groups = groups
        self._start: dict[str, float] = {}

    def _snapshot(self) -> dict[str, float]:
        snapshot = {
            name: sum(process_ticks(pid) for pid in pids) / CLOCK_TICKS
            for name, pids in self._groups().items()
        }
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        snapshot["_busy"] = (sum(values) - values[3] - values[4]) / CLOCK_TICKS
        snapshot["_total"] = sum(values) / CLOCK_TICKS
        snapshot["_wall"] = time.monotonic()
        return snapshot

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self) -> dict[str, float]:
        end, start = self._snapshot(), self._start
        wall = end["_wall"] - start["_wall"]
        usage = {
            f"{name}_percent_of_one_core": round(100 * (end[name] - start.get(name, 0.0)) / wall, 1)
            for name in end
            if not name.startswith("_")
        }
        total = end["_total"] - start["_total"]
        cores = os.cpu_count() or 1
        if total > 0:
            busy = 100 * (end["_busy"] - start["_busy"]) / total
            usage["machine_busy_percent_of_all_cores"] = round(busy, 1)
            # Everything else that ran meanwhile (tests, other benchmarks) competes for the cores.
            ours = sum(value for name, value in usage.items() if name.endswith("_one_core"))
            usage["others_percent_of_one_core"] = round(max(busy * cores - ours, 0.0), 1)
        usage["cores"] = cores
        return usage


def service_cpu_groups(worker: subprocess.Popen[bytes] | None, api: int | None = None) -> Any:
    def groups() -> dict[str, list[int]]:
        found: dict[str, list[int]] = {
            "postgres": pids_named("postgres"),
            "redis": pids_named("redis-server"),
            "bench": [os.getpid()],
        }
        if worker is not None:
            found["worker"] = [worker.pid]
        if api is not None:
            found["api"] = [api]
        return found

    return groups


# ----------------------------------------------------------------------------- processes


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def started(
    command: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    stop_signal: int,
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` in a subprocess logging to `log_path`, stopped with `stop_signal` on leaving."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            stop_process(process, stop_signal)


def log_text(log_path: Path, tail: int = 3000) -> str:
    return log_path.read_text(errors="replace")[-tail:]


def log_head(log_path: Path, size: int = 65536) -> str:
    with log_path.open("rb") as log:
        return log.read(size).decode(errors="replace")


async def wait_for_log(
    process: subprocess.Popen[bytes], log_path: Path, needle: str, limit_s: float = 30.0
) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited early; its log:\n{log_text(log_path)}")
        if needle in log_head(log_path):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{needle!r} not logged within {limit_s} s:\n{log_text(log_path)}")


ARQ = str(Path(sys.executable).parent / "arq")


def start_profiler(py_spy: str | None, pid: int, stamp: str) -> subprocess.Popen[bytes] | None:
    """py-spy sampling process `pid` into bench/results/worker-<stamp>-profile.txt (collapsed
    stacks: one line per stack, its sample count last), when a py-spy binary is given."""
    if not py_spy:
        return None
    out = RESULTS / f"worker-{stamp}-profile.txt"
    command = [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--rate",
        "250",
        "--nonblocking",
    ]
    command += ["--output", str(out)]
    log = (RESULTS / f"worker-{stamp}-profile.log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


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


def cpu_ms_per_item(cpu: Mapping[str, float], name: str, seconds: float, items: int) -> float:
    share = cpu.get(f"{name}_percent_of_one_core", 0.0) / 100
    return round(share * seconds * 1000 / items, 3) if items else 0.0


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
    with started(
        [ARQ, "bench.worker_noop.WorkerSettings"],
        cwd=ROOT,
        env=env,
        log_path=log_path,
        stop_signal=signal.SIGINT,
    ) as process:
        meter = CpuMeter(
            lambda: {
                "worker": [process.pid],
                "redis": pids_named("redis-server"),
                "bench": [os.getpid()],
            }
        )
        await wait_for_log(process, log_path, "Starting worker")
        meter.start()
        began = time.monotonic()
        while not queue_drained(client):
            if process.poll() is not None or time.monotonic() > began + 180:
                raise RuntimeError(f"no-op worker stalled; log:\n{log_text(log_path)}")
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


def callback_body(registration_id: str, status: str, at: datetime, project_id: str) -> bytes:
    """A callback body as Sinch sends it (SINCH.md; the simulator's shape)."""
    return json.dumps(
        {
            "eventId": str(uuid.uuid4()),
            "eventType": "REGISTRATION_STATUS_UPDATE",
            "projectId": project_id,
            "resourceId": registration_id,
            "resourceType": "REGISTRATION",
            "status": status,
            "createTime": sinch_time(at),
        },
        separators=(",", ":"),
    ).encode()


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


@contextlib.asynccontextmanager
async def api_server(
    app_root: Path, env: Mapping[str, str], log_path: Path
) -> AsyncIterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
    ]
    base = f"http://127.0.0.1:{port}"
    with started(
        command, cwd=app_root, env=env, log_path=log_path, stop_signal=signal.SIGINT
    ) as process:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as client:
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the API did not start:\n{log_text(log_path)}")
                try:
                    await client.get(f"{base}/healthz", timeout=1)
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
                else:
                    break
        yield port, process


# ----------------------------------------------------------------------------- the run


def ms_summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(percentile(values, 0.50), 1),
        "p90": round(percentile(values, 0.90), 1),
        "p99": round(percentile(values, 0.99), 1),
        "max": round(max(values), 1),
    }


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
        (rid, callback_body(rid, "IN_PROGRESS", service.event_at, service.project)) for rid in ids
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
    await wait_for_log(worker, worker_log, "worker started")
    profiler = start_profiler(service.args.py_spy, worker.pid, service.stamp)
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
    bodies = [callback_body(rid, "IN_PROGRESS", service.event_at, service.project) for rid in ids]
    async with engine.connect() as connection:
        last_row = await connection.scalar(select(func.coalesce(func.max(EVENTS.c.id), 0)))
    first_row = int(last_row or 0) + 1
    api_log = RESULTS / f"worker-{service.stamp}-api.log"
    print(f"posting {total} callbacks at {args.rate:g}/s", flush=True)
    async with api_server(args.app_root, service.env, api_log) as (port, api):
        gets_before = service.gets()
        meter = CpuMeter(service_cpu_groups(worker, api.pid))
        meter.start()
        sent_at = time.time()
        statuses, latencies, drift = await post_steadily(
            "127.0.0.1", port, bodies, service.secret, args.rate
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
        lag_ms=ms_summary(lags),
        post_ms=ms_summary([s * 1000 for s in latencies]),
        send_drift_ms_p99=round(percentile(drift, 0.99) * 1000, 1),
        gets=gets,
        problems=problems,
        check=check,
        cpu=cpu,
    )


async def service_phases(args: argparse.Namespace, stamp: str, results: dict[str, Any]) -> None:
    database_url = await asyncio.to_thread(create_postgres_database, DATABASE_NAME)
    client = redis.Redis.from_url(SERVICE_REDIS_URL)
    client.flushdb()
    client.close()
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
                with started(
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
        if not args.keep_database:
            await asyncio.to_thread(drop_postgres_database, DATABASE_NAME)


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


def _row(label: str, value: str, target: str = "") -> str:
    return f"{label:<58} {value:>14}  {target}"


def summarize(results: dict[str, Any]) -> str:
    lines = ["", _row("measure", "value", "target"), "-" * 88]
    ceilings = results.get("ceilings", [])
    for c in ceilings:
        lines.append(
            _row(
                f"arq no-op, {ceiling_label(c['poll_delay_s'], c['job_logs'], c['uvloop'])}",
                f"{c['jobs_per_s']:.0f} /s",
            )
        )
        lines.append(_row("  worker CPU per job", f"{c['worker_cpu_ms_per_job']:.3f} ms"))
    tp = results["throughput"]
    lines.append(
        _row("worker: in-order events, distinct registrations", f"{tp['events_per_s']:.0f} /s")
    )
    lines.append(_row("  worker CPU per event", f"{tp['worker_cpu_ms_per_event']:.3f} ms"))
    lines.append(_row("  PostgreSQL CPU per event", f"{tp['postgres_cpu_ms_per_event']:.3f} ms"))
    if ceilings:
        best = max(ceilings, key=lambda c: c["jobs_per_s"])
        ratio = tp["events_per_s"] / best["jobs_per_s"] if best["jobs_per_s"] else 0.0
        verdict = "ok" if ratio >= TARGET_RATIO else "MISSED"
        lines.append(
            _row("  ratio to the best arq ceiling", f"{ratio:.2f}", f">= {TARGET_RATIO} {verdict}")
        )
        if tp["worker_cpu_ms_per_event"]:
            cpu_ratio = best["worker_cpu_ms_per_job"] / tp["worker_cpu_ms_per_event"]
            lines.append(
                _row("  same, by worker CPU per item (load-independent)", f"{cpu_ratio:.2f}")
            )
    for name, cpu in [("throughput", tp["cpu"])] + (
        [("lag", results["lag"]["cpu"])] if "lag" in results else []
    ):
        lines.append(
            _row(
                f"  {name}: machine busy (all cores) / others (one core)",
                f"{cpu.get('machine_busy_percent_of_all_cores', 0):.0f}% / "
                f"{cpu.get('others_percent_of_one_core', 0):.0f}%",
            )
        )
    problems = list(tp["problems"])
    if "lag" in results:
        lag = results["lag"]
        lag_ms = lag["lag_ms"]
        rate = format(lag["rate_per_s"], "g")
        lines.append(
            _row(f"lag at {rate} events/s, p50", f"{lag_ms.get('p50', float('nan')):.1f} ms")
        )
        verdict = "ok" if lag_ms.get("p99", float("inf")) <= TARGET_P99_MS else "MISSED"
        lines.append(
            _row(
                f"lag at {rate} events/s, p99",
                f"{lag_ms.get('p99', float('nan')):.1f} ms",
                f"<= {TARGET_P99_MS:g} ms {verdict}",
            )
        )
        lines.append(_row("  achieved arrival rate", f"{lag['achieved_rate_per_s']:.0f} /s"))
        lines.append(
            _row(
                "  POST latency p50 / p99",
                f"{lag['post_ms'].get('p50', 0):.0f} / {lag['post_ms'].get('p99', 0):.0f} ms",
            )
        )
        problems += lag["problems"]
    lines.append(_row("verification", "ok" if not problems else "FAILED"))
    lines.extend(f"  - {problem}" for problem in problems)
    return "\n".join(lines)


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
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        help="py-spy binary: profile the worker during the throughput run (collapsed stacks)",
    )
    args = parser.parse_args()
    args.app_root = args.app_root.resolve()

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    started_at = time.monotonic()
    results = asyncio.run(run(args, stamp))
    print(summarize(results))
    results["meta"] = {
        "time": stamp,
        "command": " ".join(sys.argv),
        "app_root": str(args.app_root),
        "worker_env": args.worker_env,
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "seconds": round(time.monotonic() - started_at, 1),
    }
    out = RESULTS / f"worker-{stamp}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {out.relative_to(ROOT)} ({results['meta']['seconds']} s)")
    problems = results["throughput"]["problems"] + results.get("lag", {}).get("problems", [])
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
