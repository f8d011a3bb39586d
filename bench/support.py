"""What the benchmarks share: percentiles, processes and servers, CPU readings, PostgreSQL
databases, the profiler, and writing results.

The benchmarks are modules of the `bench` package, run from the repository root
(`.venv/bin/python -m bench.callbacks`), so `app` and `bench` import without path tricks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
"""Where every run writes its JSON, logs and profiles (git-ignored)."""
CALLBACK_PATH = "/callbacks/sinch/registrations"
POSTGRES_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
"""A plain asyncpg URL of a database on the server the benchmarks may create databases on."""
REDIS_SERVER_URL = os.environ.get("BENCH_REDIS_SERVER", "redis://127.0.0.1:6379").rstrip("/")
"""The Redis server; each benchmark takes its own database number on it (and flushes it)."""


# ----------------------------------------------------------------------------- numbers


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in 0..1) of a non-empty sequence: the smallest value
    with at least `fraction` of the values at or below it."""
    ordered = sorted(values)
    rank = math.ceil(round(fraction * len(ordered), 9))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def latency_summary(values_ms: Sequence[float], digits: int = 1) -> dict[str, float]:
    """p50, p90, p99 and max of latencies in milliseconds ({} when there are none)."""
    if not values_ms:
        return {}
    return {
        "p50": round(percentile(values_ms, 0.50), digits),
        "p90": round(percentile(values_ms, 0.90), digits),
        "p99": round(percentile(values_ms, 0.99), digits),
        "max": round(max(values_ms), digits),
    }


def table(rows: Sequence[Sequence[object]]) -> str:
    """`rows` as aligned text columns: the first left-aligned, the others right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(cells[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ).rstrip()
        for row in cells
    )


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(log_path: Path, chars: int = 3000) -> str:
    """The last `chars` characters of a process's log (for error messages)."""
    return log_path.read_text(errors="replace")[-chars:]


def stop_process(
    process: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = 30
) -> None:
    """Stop `process` with `sig` (SIGINT: uvicorn's and arq's graceful stop), killing it when it
    is still running after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running(
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    stop_signal: int = signal.SIGINT,
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` in a subprocess, its stdout and stderr into `log_path`; stopped on leaving."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command), cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        stop_process(process, stop_signal)


def wait_for_log(
    process: subprocess.Popen[bytes], log_path: Path, needle: str, timeout: float = 30
) -> None:
    """Wait until `needle` appears in the first 64 KiB of the process's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited early; its log:\n{log_tail(log_path)}")
        with log_path.open("rb") as log:
            if needle in log.read(65536).decode(errors="replace"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"{needle!r} not logged within {timeout} s:\n{log_tail(log_path)}")


@dataclass(frozen=True)
class Server:
    """A uvicorn server process started by `uvicorn_server`."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def uvicorn_server(
    app: str, *, cwd: Path, env: Mapping[str, str], log_path: Path, timeout: float = 30
) -> Iterator[Server]:
    """`uvicorn <app>` in a subprocess on a free port, run as the service is: one process,
    uvloop and httptools as installed, no access log. Entered once the app answers HTTP on
    /healthz (any status: its lifespan has completed by then); stopped with SIGINT on leaving."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    with running([*command, "--no-access-log"], cwd=cwd, env=env, log_path=log_path) as process:
        server = Server(process, port)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited early; its log:\n{log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server silent for {timeout} s; its log:\n{log_tail(log_path)}")
            try:
                httpx.get(f"{server.base_url}/healthz", timeout=1)
            except httpx.TransportError:
                time.sleep(0.1)
            else:
                break
        yield server


# ----------------------------------------------------------------------------- CPU readings

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

ProcessGroups = Mapping[str, Sequence[int] | str]
"""Named groups of processes: their pids, or a command name looked up at each reading."""


def process_ticks(pid: int) -> int:
    """User + system CPU time of `pid` so far, in clock ticks (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def pids_named(name: str) -> list[int]:
    """Ids of the running processes whose command name is `name`."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
    return pids


@dataclass(frozen=True)
class CpuReading:
    ticks: dict[str, dict[int, int]]
    """Per group, per pid: CPU ticks so far."""
    machine_busy: int
    machine_total: int
    wall: float


def read_cpu(groups: ProcessGroups) -> CpuReading:
    """CPU ticks so far of each group's processes and of the whole machine (busy, total)."""
    ticks: dict[str, dict[int, int]] = {}
    for name, members in groups.items():
        pids = pids_named(members) if isinstance(members, str) else members
        ticks[name] = {pid: process_ticks(pid) for pid in pids}
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    total = sum(values)
    return CpuReading(ticks, total - values[3] - values[4], total, time.monotonic())


MACHINE_BUSY = "machine_busy_percent_of_all_cores"
OTHER = "other"


def cpu_usage(
    before: CpuReading, after: CpuReading, known: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Percent of ONE core used by each group between two readings (a process that ended meanwhile
    loses its last ticks; one that started counts whole), plus `known` figures measured otherwise
    (e.g. a child's rusage), the machine's busy share of all cores (`MACHINE_BUSY`) and the rest of
    the machine (`OTHER`, percent of one core: whatever else ran meanwhile skews every figure)."""
    wall = after.wall - before.wall
    if wall <= 0:
        return {}
    usage: dict[str, float] = {}
    for name, ticks in after.ticks.items():
        old = before.ticks.get(name, {})
        spent = sum(max(now - old.get(pid, 0), 0) for pid, now in ticks.items())
        usage[name] = round(100 * spent / CLOCK_TICKS / wall, 1)
    usage.update(known or {})
    total = after.machine_total - before.machine_total
    if total > 0:
        busy = 100 * (after.machine_busy - before.machine_busy) / total
        usage[MACHINE_BUSY] = round(busy, 1)
        ours = sum(value for name, value in usage.items() if name != MACHINE_BUSY)
        usage[OTHER] = round(max(busy * (os.cpu_count() or 1) - ours, 0.0), 1)
    return usage


class CpuMeter:
    """CPU used by groups of processes over an interval: `start()`, then `stop()`."""

    def __init__(self, groups: ProcessGroups) -> None:
        self._groups = groups
        self._start = read_cpu(groups)

    def start(self) -> None:
        self._start = read_cpu(self._groups)

    def stop(self, known: Mapping[str, float] | None = None) -> dict[str, float]:
        """Usage since `start()` (see `cpu_usage`)."""
        return cpu_usage(self._start, read_cpu(self._groups), known)


def cpu_ms_per_item(usage: Mapping[str, float], group: str, seconds: float, items: int) -> float:
    """A group's CPU time per item (ms), from its percent of one core over `seconds`."""
    return round(usage.get(group, 0.0) / 100 * seconds * 1000 / items, 3) if items else 0.0


def machine_busy(seconds: float = 1.0) -> float:
    """Percent of all cores busy over `seconds`: what else runs on the machine right now."""
    meter = CpuMeter({})
    time.sleep(seconds)
    return meter.stop().get(MACHINE_BUSY, 0.0)


def warn_if_busy(limit: float = 15.0) -> float:
    """Measure how busy the machine is before a benchmark; warn above `limit` percent."""
    busy = machine_busy()
    if busy > limit:
        print(
            f"WARNING: the machine is already {busy:.0f}% busy before the benchmark "
            "(another test run?): the figures will be low and noisy",
            file=sys.stderr,
        )
    return busy


def process_memory_kib(pid: int) -> dict[str, int]:
    """Resident memory of `pid` from /proc/<pid>/status, in KiB: `rss` now (VmRSS) and `peak`
    (VmHWM, the most it has held); {} once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return {
        name: int(fields[key].split()[0])
        for name, key in (("rss", "VmRSS"), ("peak", "VmHWM"))
        if key in fields
    }


# ----------------------------------------------------------------------------- PostgreSQL, Redis


def database_url(name: str, driver: str = "postgresql") -> str:
    """The URL of database `name` on the admin URL's server, e.g. driver `postgresql+asyncpg`."""
    base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
    return f"{base}/{name}".replace("postgresql://", f"{driver}://", 1)


def postgres_value(url: str, sql: str) -> Any:
    """The first value of `sql`'s answer (`url`: a plain postgresql:// URL). Not inside a running
    event loop (use `asyncio.to_thread` there)."""

    async def run() -> Any:
        connection = await asyncpg.connect(url)
        try:
            return await connection.fetchval(sql)
        finally:
            await connection.close()

    return asyncio.run(run())


def create_database(name: str, app_root: Path = ROOT) -> str:
    """A fresh database migrated with `alembic upgrade head` run in `app_root`; answers its
    SQLAlchemy async URL (postgresql+asyncpg://)."""
    drop_database(name)
    postgres_value(POSTGRES_ADMIN_URL, f'CREATE DATABASE "{name}"')
    url = database_url(name, "postgresql+asyncpg")
    subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "upgrade", "head"],
        cwd=app_root,
        env={**os.environ, "DATABASE_URL": url},
        check=True,
        capture_output=True,
    )
    return url


def drop_database(name: str) -> None:
    postgres_value(POSTGRES_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_url(database: int) -> str:
    """The URL of `database` on the benchmarks' Redis server."""
    return f"{REDIS_SERVER_URL}/{database}"


def flush_redis(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


# ----------------------------------------------------------------------------- callbacks


def callback_body(resource_id: str, status: str, create_time: str, project_id: str) -> bytes:
    """A registration callback as Sinch sends it, with its own fresh `eventId`."""
    return json.dumps(
        {
            "eventId": str(uuid.uuid4()),
            "eventType": "REGISTRATION_STATUS_UPDATE",
            "projectId": project_id,
            "resourceId": resource_id,
            "resourceType": "REGISTRATION",
            "status": status,
            "createTime": create_time,
        },
        separators=(",", ":"),
    ).encode()


# ----------------------------------------------------------------------------- profiler


def start_profiler(
    py_spy: str | Path | None, pid: int, output: Path, *, rate: int, seconds: int | None = None
) -> subprocess.Popen[bytes] | None:
    """With a py-spy binary: sample process `pid` into `output` (collapsed stacks, one line per
    stack with its sample count last; py-spy's own output beside it, `.log`), for `seconds` or
    until stopped with SIGINT. Diagnostics only: the profiler takes CPU from the machine, so a
    profiled run's figures are not a result."""
    if not py_spy:
        return None
    command = [str(py_spy), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    if seconds is not None:
        command += ["--duration", str(seconds)]
    command += ["--nonblocking", "--output", str(output)]
    with output.with_suffix(".log").open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


# ----------------------------------------------------------------------------- results


def timestamp(moment: datetime | None = None) -> str:
    """`moment` (default now) as the results' file names spell it: 20261127T093000 (UTC)."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%S")


def describe_machine() -> dict[str, Any]:
    """What the figures depend on: cores, Python, the commit, PostgreSQL's durability settings."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    settings = {
        name: postgres_value(POSTGRES_ADMIN_URL, f"SHOW {name}")
        for name in ("fsync", "synchronous_commit", "wal_sync_method", "server_version")
    }
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "git_commit": commit.stdout.strip(),
        "postgres": settings,
    }


def write_results(name: str, stamp: str, results: Mapping[str, Any]) -> Path:
    """`results` as bench/results/<name>-<stamp>.json; prints and answers the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}-{stamp}.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results: {out.relative_to(ROOT)}")
    return out
