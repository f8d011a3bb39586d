"""The benchmarks' harness: the stack (a fresh PostgreSQL database, a private Redis, the API, the
worker), loading data, timing at a steady rate, CPU readings, percentiles and the results file.

A benchmark module states only what it measures: it opens `stack(...)`, starts what it needs from
it, measures, and ends with `finish(...)`. The modules run from the repository root
(`.venv/bin/python -m bench.<name>`); the service's processes run from `bench/results/` with an
environment of the stack's own, so no `.env` reaches them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import redis

from app.callbacks.signature import SIGNATURE_HEADER, sign
from app.core.jobs import DELIVERIES_QUEUE
from app.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
"""Every run's JSON, logs and profiles (git-ignored); the service's processes run from here."""
CALLBACK_PATH = "/callbacks/sinch/registrations"
PROJECT_PATH = "/callbacks/sinch/{project}/registrations"
"""A project's own callback URL (`--projects N`)."""
POSTGRES_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
"""A plain URL of a database on the server the benchmarks create their databases on."""
TOKEN = "bench-api-token"
SECRET = "bench-callback-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ARQ = str(Path(sys.executable).parent / "arq")
SERVICE_VARIABLES = frozenset(name.upper() for name in Settings.model_fields)


# ----------------------------------------------------------------------------- numbers


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    rank = math.ceil(round(fraction * len(ordered), 9))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def latency_summary(values_ms: Sequence[float], digits: int = 1) -> dict[str, float | None]:
    """p50, p90, p99 and max of latencies in ms ({} when none; an infinite one, "never", is
    None)."""
    if not values_ms:
        return {}
    figures = {f"p{round(f * 100)}": percentile(values_ms, f) for f in (0.5, 0.9, 0.99)}
    figures["max"] = max(values_ms)
    return {k: None if math.isinf(v) else round(v, digits) for k, v in figures.items()}


def table(rows: Sequence[Sequence[object]]) -> str:
    """`rows` as aligned columns: the first left-aligned, the others right-aligned."""
    cells = [["never" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(len(cells[0]))]
    return "\n".join(
        "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        for r in cells
    )


def reads_table(results: Mapping[str, Any], targets: Mapping[str, float]) -> tuple[str, bool]:
    """The figures of `bench.api.measure` per name as a table against each name's target p99,
    and whether every target is met."""
    rows: list[list[object]] = [["", "req/s", "p50 ms", "p99 ms", "max ms", "target p99"]]
    for name, figures in results.items():
        latency = figures["latency_ms"]
        figures_ms = [latency[key] for key in ("p50", "p99", "max")]
        rows.append(
            [name, figures["requests_per_s"], *figures_ms, verdict(latency["p99"], targets[name])]
        )
    met = all(results[name]["latency_ms"]["p99"] <= targets[name] for name in results)
    return table(rows), met


def verdict(value: float | None, target: float) -> str:
    """`<= target met` or `NOT MET` (None, never delivered, misses)."""
    return f"<= {target:g} {'met' if value is not None and value <= target else 'NOT MET'}"


# ----------------------------------------------------------------------------- CPU


def process_ticks(pid: int) -> int:
    """User + system CPU time of `pid` so far, in clock ticks (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def pids_named(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                pids.append(int(entry.name))
    return pids


class CpuMeter:
    """CPU of named groups of processes (pids, or a command name looked up at each reading) from
    `start()` (or creation) to `stop()`, in percent of ONE core; `stop()` adds `other`, what the
    rest of the machine used (it skews every figure), and `machine_busy` (percent of all cores)."""

    def __init__(self, groups: Mapping[str, Sequence[int] | str]) -> None:
        self._groups = groups
        self.start()

    def _read(self) -> tuple[dict[str, dict[int, int]], int, int, float]:
        ticks = {
            name: {pid: process_ticks(pid) for pid in (pids_named(m) if isinstance(m, str) else m)}
            for name, m in self._groups.items()
        }
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return ticks, sum(values) - values[3] - values[4], sum(values), time.monotonic()

    def start(self) -> None:
        self._start = self._read()

    def stop(self, known: Mapping[str, float] | None = None) -> dict[str, float]:
        """Usage since `start()`, plus `known` figures measured otherwise (e.g. an rusage)."""
        (old, busy0, total0, wall0), (new, busy1, total1, wall1) = self._start, self._read()
        hz, wall = os.sysconf("SC_CLK_TCK"), max(wall1 - wall0, 1e-9)
        usage = {
            name: round(
                100
                * sum(max(t - old.get(name, {}).get(p, 0), 0) for p, t in ticks.items())
                / hz
                / wall,
                1,
            )
            for name, ticks in new.items()
        } | dict(known or {})
        busy = 100 * (busy1 - busy0) / max(total1 - total0, 1)
        usage["other"] = round(max(busy * (os.cpu_count() or 1) - sum(usage.values()), 0.0), 1)
        usage["machine_busy"] = round(busy, 1)
        return usage


def cpu_ms_per_item(usage: Mapping[str, float], group: str, seconds: float, items: int) -> float:
    """A group's CPU time per item (ms), from its percent of one core over `seconds`."""
    return round(usage.get(group, 0.0) / 100 * seconds * 1000 / items, 3) if items else 0.0


def cpu_line(usage: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {value:g}%" for name, value in usage.items())


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, seconds: float = 30
) -> None:
    """Poll `ready` until true; RuntimeError with the log's tail when the process exits first or
    `seconds` pass."""
    deadline = time.monotonic() + seconds
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{log.name}: not ready (exit {process.poll()}):\n{tail}")
        time.sleep(0.05)


@contextlib.contextmanager
def running(
    command: Sequence[str], log: Path, env: Mapping[str, str] | None = None, stop: int = 2
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` from bench/results/, output into `log`; on leaving, signal `stop` (SIGINT:
    uvicorn's and arq's graceful stop), killed after 30 s."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(command), cwd=RESULTS, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(stop)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.TransportError:
        return False
    return True


@contextlib.contextmanager
def uvicorn_server(app: str, log: Path, env: Mapping[str, str]) -> Iterator[Server]:
    """`uvicorn <app>` as the service runs (one process, uvloop and httptools as installed, no
    access log) on a free port; entered once /healthz answers (its lifespan has run)."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--no-access-log"]
    with running(command, log, env) as process:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/healthz"), process, log)
        yield Server(process, port)


def start_profiler(py_spy: str | None, pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    """With `--py-spy BINARY`: sample `pid` into `output` (collapsed stacks) until SIGINT.
    Diagnostics only: the profiler takes CPU, so a profiled run's figures are no result."""
    if not py_spy:
        return None
    command = [py_spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw"]
    return subprocess.Popen([*command, "--nonblocking", "--output", str(output)])


# ----------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """A run's service: its database (SQLAlchemy `url`, asyncpg `plain_url`), its private Redis
    and the environment the service's processes get (`env`)."""

    name: str
    stamp: str
    args: argparse.Namespace
    url: str
    plain_url: str
    redis_url: str
    redis_pid: int
    env: dict[str, str]

    def log(self, label: str) -> Path:
        return RESULTS / f"{self.name}-{self.stamp}-{label}.log"

    def api(self, label: str = "api", app: str = "app.main:app") -> Any:
        """`uvicorn app.main:app` on the stack (a context manager answering a `Server`)."""
        return uvicorn_server(app, self.log(label), self.env)

    def deliveries(self) -> Any:
        """ONE delivery worker (`arq app.worker.DeliveryWorkerSettings`), as `worker`."""
        return self.worker("deliveries", "app.worker.DeliveryWorkerSettings", DELIVERIES_QUEUE)

    @contextlib.contextmanager
    def worker(
        self,
        label: str = "worker",
        settings: str = "app.worker.WorkerSettings",
        queue: str = "arq:queue",
    ) -> Iterator[subprocess.Popen[bytes]]:
        """ONE `arq <settings>` process reading `queue`, entered once arq has polled (its
        health-check key is in Redis: the start-up hook has run); stopped with SIGINT."""
        client = redis.Redis.from_url(self.redis_url)
        command = [ARQ, settings]
        with running(command, self.log(label), self.env) as process:
            wait_for(lambda: bool(client.exists(f"{queue}:health-check")), process, self.log(label))
            client.close()
            yield process

    def cpu(self, **pids: int) -> CpuMeter:
        """A meter of `pids`, PostgreSQL (every `postgres` process), this Redis and the bench."""
        groups: dict[str, Sequence[int] | str] = {name: [pid] for name, pid in pids.items()}
        return CpuMeter(
            groups | {"postgres": "postgres", "redis": [self.redis_pid], "bench": [os.getpid()]}
        )

    async def value(self, sql: str, *args: Any, admin: bool = False) -> Any:
        """The first value of `sql`'s answer on the stack's database (or the admin database)."""
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL if admin else self.plain_url)
        try:
            return await connection.fetchval(sql, *args)
        finally:
            await connection.close()

    async def rows(self, sql: str, *args: Any) -> list[Any]:
        connection = await asyncpg.connect(self.plain_url)
        try:
            return list(await connection.fetch(sql, *args))
        finally:
            await connection.close()


def admin(sql: str) -> Any:
    """`sql` on the admin database; its first value. Not inside a running event loop."""

    async def run() -> Any:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            return await connection.fetchval(sql)
        finally:
            await connection.close()

    return asyncio.run(run())


def writer_options(options: argparse.ArgumentParser) -> None:
    """The options of a bench whose writer process applies changes at a steady rate (the change
    feed's and the deliveries')."""
    add = options.add_argument
    add("--rate", type=float, default=200.0, help="changes/s written (200)")
    add("--seconds", type=float, default=20.0, help="measured seconds (20)")
    add("--warmup", type=float, default=2.0, help="seconds written before (2)")
    add("--registrations", type=int, default=200, help="registrations changed in turn (200)")
    add("--writers", type=int, default=4, help="transactions at once in the writer (4)")


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark has: `--env NAME=VALUE` (more environment for the service's
    processes, to try a setting) and `--py-spy BINARY` (profile the measured process)."""
    options = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    options.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    options.add_argument("--py-spy", metavar="BINARY", help="diagnostics: figures are no result")
    return options


@contextlib.contextmanager
def stack(name: str, args: argparse.Namespace, **env: str) -> Iterator[Stack]:
    """A fresh database `bench_<name>` migrated with `alembic upgrade head` (dropped on leaving)
    and a `redis-server` of the run's own on a free port, nothing persisted (stopped on leaving).
    The service's environment: this process's without the service's own variables, then the
    stack's (`DATABASE_URL`, `REDIS_URL`, a token, a callback secret, `LOG_LEVEL=WARNING`,
    no reconciling, no worker metrics port), `env`, and `--env`. Warns first when the machine is
    already busy: the figures are only comparable on an otherwise idle machine."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed: apt-get install -y redis-server")
    RESULTS.mkdir(parents=True, exist_ok=True)
    meter = CpuMeter({})
    time.sleep(1)
    busy = meter.stop()["machine_busy"]
    if busy > 15:
        print(f"WARNING: the machine is {busy:.0f}% busy before the benchmark", file=sys.stderr)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    database = f"bench_{name}"
    base = POSTGRES_ADMIN_URL.rpartition("/")[0]
    plain_url, url = f"{base}/{database}", f"{base}/{database}".replace(":/", "+asyncpg:/", 1)
    admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{database}"')
    port = free_port()
    redis_command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    log = RESULTS / f"{name}-{stamp}-redis.log"
    try:
        alembic = str(Path(sys.executable).parent / "alembic")
        migrate = {**os.environ, "DATABASE_URL": url}
        subprocess.run([alembic, "upgrade", "head"], cwd=ROOT, env=migrate, check=True)
        with running([*redis_command, "--appendonly", "no"], log, stop=signal.SIGTERM) as server:
            client = redis.Redis(port=port)
            wait_for(lambda: answers_ping(client), server, log)
            client.close()
            environment = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
            environment |= {
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": url,
                "REDIS_URL": f"redis://127.0.0.1:{port}/0",
                "INTERNAL_API_TOKENS": TOKEN,
                "SINCH_CALLBACK_SECRETS": SECRET,
                "LOG_LEVEL": "WARNING",
                "RECONCILE_INTERVAL_SECONDS": "0",
                "WORKER_METRICS_PORT": "0",
                **env,
                **dict(item.split("=", 1) for item in args.env),
            }
            yield Stack(
                name, stamp, args, url, plain_url, environment["REDIS_URL"], server.pid, environment
            )
    finally:
        admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def answers_ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def finish(run: Stack, results: Mapping[str, Any], met: bool, problems: Sequence[str]) -> int:
    """Print the problems, write bench/results/<name>-<time>.json (with what the figures depend
    on: cores, Python, commit, PostgreSQL's durability settings); the exit status: 0 when the
    targets are met and every check passed, 1 otherwise."""
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True)
    postgres = {
        name: admin(f"SHOW {name}")
        for name in ("fsync", "synchronous_commit", "wal_sync_method", "server_version")
    }
    machine: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    machine |= {"git_commit": commit.stdout.decode().strip(), "postgres": postgres}
    out = RESULTS / f"{run.name}-{run.stamp}.json"
    document = {"settings": vars(run.args), "environment": machine, "met": met}
    document |= {"problems": list(problems), **results}
    out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"{'targets met' if met else 'target NOT MET'}; results: {out.relative_to(ROOT)}")
    return 0 if met and not problems else 1


# ----------------------------------------------------------------------------- loading data


async def execute(url: str, statements: Sequence[str], **values: object) -> None:
    """Run `statements` (with `{name}` replaced by `values`) one by one, saying how long each
    took."""
    connection = await asyncpg.connect(url)
    try:
        for statement in statements:
            began = time.monotonic()
            for name, value in values.items():
                statement = statement.replace(f"{{{name}}}", str(value))
            await connection.execute(statement)
            print(f"  {statement.split()[0]} ... {time.monotonic() - began:.1f}s", flush=True)
    finally:
        await connection.close()


def callback_body(resource_id: str, status: str, create_time: str, project: str = "bench") -> bytes:
    """A registration callback as Sinch sends it, with its own fresh `eventId`."""
    fields = {"eventId": str(uuid.uuid4()), "eventType": "REGISTRATION_STATUS_UPDATE"}
    fields |= {"projectId": project, "resourceId": resource_id, "resourceType": "REGISTRATION"}
    fields |= {"status": status, "createTime": create_time}
    return json.dumps(fields, separators=(",", ":")).encode()


ADD_PROJECTS = """
WITH added AS (
    INSERT INTO projects (id, name, key_id, from_settings, created_at, updated_at)
    SELECT 'bench-project-' || n, 'bench ' || n, 'key-' || n, false, now(), now()
    FROM generate_series(1, $1::int) AS n
    RETURNING id
), secrets AS (
    INSERT INTO callback_secrets (project_id, secret, state, created_at, updated_at)
    SELECT id, $2::text, 'current', now(), now() FROM added RETURNING 1
)
SELECT count(*) FROM secrets
"""
"""`--projects N`: N-1 projects `bench-project-1`... beside the settings' (no key secret: no Sinch
call is made for them), each accepting the callback secret given."""


def bench_projects(settings_project: str, count: int) -> list[str]:
    """The ids of `count` projects: the settings' first, then those ADD_PROJECTS adds."""
    return [settings_project, *(f"bench-project-{n}" for n in range(1, count))]


# ----------------------------------------------------------------------------- steady rates


async def paced(
    count: int, rate: float, one: Callable[[int], Coroutine[Any, Any, None]]
) -> list[float]:
    """Start `one(0)`, `one(1)`, ... on a fixed schedule of `rate` per second, not waiting for
    them to end (they wait for all at the end); answers each one's due monotonic time."""
    tasks: list[asyncio.Task[None]] = []
    due: list[float] = []
    begin = time.monotonic() + 0.05
    for n in range(count):
        due.append(begin + n / rate)
        await asyncio.sleep(due[n] - time.monotonic())
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return due


async def analyzed_after(run: Stack, seconds: float) -> None:
    """ANALYZE the run's database `seconds` from now (at the end of a warm-up). A production
    database has statistics of its busy tables (autovacuum analyzes them every minute or so); a
    database made for the run has none while its tables fill, and the workers' prepared
    statements keep the plans made for empty tables: a sequential scan of the deliveries for
    each sending cycle's update, which made 3 of about 17 runs fall seconds behind (2026-12-07)."""
    await asyncio.sleep(seconds)
    # The tables the runs fill, not the whole database: ANALYZE takes PostgreSQL's CPU too.
    await run.value("ANALYZE callback_events, registration_changes, deliveries, delivery_attempts")


async def post_callbacks(
    port: int,
    bodies: Sequence[bytes],
    rate: float,
    secret: str = SECRET,
    paths: Sequence[str] = (CALLBACK_PATH,),
) -> dict[str, Any]:
    """POST `bodies`, signed with `secret`, to 127.0.0.1:`port` at `rate` per second over 64
    keep-alive connections: a raw HTTP/1.1 client (a few microseconds of CPU per request, where
    httpx spends a millisecond), so that the sender keeps its schedule on a busy machine. Body `n`
    goes to `paths[n % len(paths)]`. Answers the statuses counted (-1: no answer) and each
    request's latency from its scheduled time (ms).
    """
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(64):
        idle.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    statuses: list[int] = [-1] * len(bodies)
    latencies: list[float] = [0.0] * len(bodies)
    began = time.monotonic()

    async def post(n: int) -> None:
        due = began + 0.05 + n / rate
        path = paths[n % len(paths)]
        head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json"
        head += f"\r\n{SIGNATURE_HEADER}: {sign(bodies[n], secret)}"
        reader, writer = await idle.get()
        try:
            writer.write(f"{head}\r\ncontent-length: {len(bodies[n])}\r\n\r\n".encode() + bodies[n])
            lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower().split("\r\n")
            length = [int(v.split(":")[1]) for v in lines if v.startswith("content-length:")]
            await reader.readexactly(length[0] if length else 0)
            statuses[n] = int(lines[0].split()[1])
        except (OSError, ValueError, asyncio.IncompleteReadError):
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            idle.put_nowait((reader, writer))
        latencies[n] = (time.monotonic() - due) * 1000

    await paced(len(bodies), rate, post)
    while not idle.empty():
        idle.get_nowait()[1].close()
    return {"statuses": {str(s): statuses.count(s) for s in set(statuses)}, "latencies": latencies}


# ----------------------------------------------------------------------------- the writer

T0 = datetime(2026, 1, 1, tzinfo=UTC)
"""Change `i` of a run claims Sinch time T0 + i seconds: its `at` names it wherever it arrives."""
CYCLE = ("IN_PROGRESS", "PENDING", "ON_HOLD", "APPROVED", "IN_QUEUE")
"""The statuses a seeded (IN_QUEUE) registration goes through, round and round."""


def document(registration_id: str, status: str, at: datetime) -> dict[str, Any]:
    """A registration document as Sinch answers a GET; its facts never change here."""
    return {
        "id": registration_id,
        "status": status,
        "registrationType": "ALPHANUMERIC_SENDER_ID",
        "updateTime": at.astimezone(UTC).replace(tzinfo=None).isoformat(),
        "marketCode": "GB",
        "requestDetails": [{"senderIdDetails": [{"senderId": "ACME"}]}],
    }


def change_document(index: int, registrations: int) -> dict[str, Any]:
    """Change `index`: registration `index % registrations` moves to its next status of CYCLE
    (never the one it holds), at T0 + index seconds."""
    status = CYCLE[(index // registrations) % len(CYCLE)]
    at = T0 + timedelta(seconds=index)
    return document(f"bench-reg-{index % registrations:05d}", status, at)


def change_index(item: Mapping[str, Any]) -> int:
    """Which change a feed item or delivery is: its `at`, in seconds after T0."""
    return round((datetime.fromisoformat(item["at"]) - T0).total_seconds())


class Helper:
    """A spawned process of the bench's own, so that its work (writing changes, sending
    callbacks) neither waits for nor delays the bench's event loop; `call` runs a module-level
    function there. Used as a context manager: shut down on leaving."""

    def __init__(self) -> None:
        self.pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"))

    def __enter__(self) -> Helper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(cancel_futures=True)

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, function, *args)

    async def pid(self) -> int:
        return int(await self.call(os.getpid))


def on_uvloop(coroutine: Awaitable[Any]) -> Any:
    """Run `coroutine` on uvloop, as the service's processes run."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)  # type: ignore[arg-type]


def post_in_process(port: int, count: int, rate: float) -> dict[str, Any]:
    """`post_callbacks` of `count` new events (for a `Helper`)."""
    bodies = [
        callback_body(str(uuid.uuid4()), "IN_PROGRESS", "2026-01-01T10:00:00") for _ in range(count)
    ]
    return dict(on_uvloop(post_callbacks(port, bodies, rate)))


def seed_documents(registrations: int) -> list[dict[str, Any]]:
    """The registrations the changes go round, IN_QUEUE (written with rate 0)."""
    at = T0 - timedelta(days=1)
    return [document(f"bench-reg-{n:05d}", "IN_QUEUE", at) for n in range(registrations)]


def write_in_process(
    url: str, redis_url: str, docs: Sequence[dict[str, Any]], rate: float, at_once: int = 4
) -> dict[str, list[float]]:
    """The service's own write path (for a `Helper`: a process of its own, as a worker is):
    `apply_snapshot` of each of `docs`, one transaction each, at `rate` per second (0: one after
    the other), at most `at_once` at once, then a poke of its `Sequencer` (settle, number,
    publish on Redis), as the worker does after each commit. Answers each change's due, started
    and committed monotonic times (machine-wide on Linux, so comparable across processes)."""
    return dict(on_uvloop(_write(url, redis_url, docs, rate, at_once)))


async def _write(
    url: str, redis_url: str, docs: Sequence[dict[str, Any]], rate: float, at_once: int
) -> dict[str, list[float]]:
    from sqlalchemy import select

    from app.changes.sequencer import Sequencer, number_and_publish
    from app.core.db import create_engine, create_sessionmaker, utcnow
    from app.core.jobs import create_redis
    from app.core.models import HistorySource, Project
    from app.registrations.service import apply_snapshot
    from app.sinch.schemas import SinchRegistration

    settings = Settings(_env_file=None, database_url=url, redis_url=redis_url)
    engine, client = create_engine(settings), create_redis(settings)
    sessions = create_sessionmaker(engine)
    sequencer = Sequencer(sessions, client)
    times: dict[str, list[float]] = {"started": [0.0] * len(docs), "committed": [0.0] * len(docs)}

    async with sessions() as session:
        # The settings' project of the harness's service, whatever its id.
        project = str(await session.scalar(select(Project.id).where(Project.from_settings)))

    async def apply(doc: dict[str, Any]) -> None:
        async with sessions.begin() as session:
            await apply_snapshot(
                session,
                SinchRegistration.from_document(doc),
                project_id=project,
                source=HistorySource.REFETCH,
                event_id=None,
                fetched_at=utcnow(),
                now=utcnow(),
            )

    try:
        if not rate:
            for doc in docs:
                await apply(doc)
            await number_and_publish(sessions, client)
            return times
        sequencer.start()
        gate = asyncio.Semaphore(at_once)

        async def one(n: int) -> None:
            async with gate:
                times["started"][n] = time.monotonic()
                await apply(docs[n])
                times["committed"][n] = time.monotonic()
            sequencer.poke()

        times["due"] = await paced(len(docs), rate, one)
        return times
    finally:
        await sequencer.stop()
        await client.aclose()
        await engine.dispose()


def writer_figures(times: Mapping[str, list[float]], warmup: int) -> dict[str, Any]:
    """The writer's kept rate over the measured changes and its transactions' times."""
    due, started, committed = times["due"], times["started"], times["committed"]
    return {
        "changes_per_s": round((len(due) - warmup) / (committed[-1] - due[warmup]), 1),
        "transaction_ms": latency_summary(
            [(c - s) * 1000 for s, c in zip(started, committed, strict=True)]
        ),
    }


async def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    """Poll `condition` every 20 ms for up to `seconds`; answers whether it came true."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def rss_mib(pid: int) -> float:
    """The resident memory of process `pid` now, in MiB (Linux: /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0
