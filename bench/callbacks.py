"""Benchmark of `POST /callbacks/sinch/registrations` against a bare FastAPI ceiling, with wrk.

One run measures, at the same concurrency and with the same wrk script:
1. a bare FastAPI app (bench/bare_app.py) whose one POST route reads the body and answers 200;
2. the real service (`uvicorn app.main:app`) on a fresh migrated PostgreSQL database, with valid
   signatures over distinct bodies, each event committed before its 200;
then prints requests/s, p50 and p99 of both and their ratio, and verifies the run: no non-2xx
answer, no socket error, no body sent twice, and every 200 is a stored row.

Run from the repository root: `.venv/bin/python bench/callbacks.py` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # type: ignore[import-untyped]  # noqa: E402
import httpx  # noqa: E402
import redis  # noqa: E402

from app.callbacks.signature import sign  # noqa: E402
from bench.procstat import CLOCK_TICKS, pids_named, process_ticks  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

BENCH = ROOT / "bench"
LUA_SCRIPT = BENCH / "callbacks.lua"
RESULTS = BENCH / "results"
CALLBACK_PATH = "/callbacks/sinch/registrations"
SECRET = "bench-callback-secret"
DATABASE_NAME = "bench_callbacks"
REDIS_URL = "redis://127.0.0.1:6379/13"
POSTGRES_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
SETTLE_SECONDS = 1.0
WRK_INSTALL_HINT = "wrk is not installed: apt-get update && apt-get install -y wrk"


# ----------------------------------------------------------------------------- bodies


def write_bodies(path: Path, count: int) -> None:
    """`count` lines "<signature>\\t<body>", each body a distinct event (its own eventId)."""
    with path.open("w", encoding="ascii") as out:
        for _ in range(count):
            body = json.dumps(
                {
                    "eventId": str(uuid.uuid4()),
                    "eventType": "REGISTRATION_STATUS_UPDATE",
                    "projectId": "bench",
                    "resourceId": str(uuid.uuid4()),
                    "resourceType": "REGISTRATION",
                    "status": "IN_PROGRESS",
                    "createTime": "2026-01-01T10:00:00",
                },
                separators=(",", ":"),
            )
            out.write(f"{sign(body.encode(), SECRET)}\t{body}\n")


# ----------------------------------------------------------------------------- wrk


@dataclass
class WrkRun:
    label: str
    duration_s: float
    requests: int
    """Responses received (any status)."""
    sent: int
    """Requests written (the Lua `request()` calls, less wrk's one verification call)."""
    wrapped: int
    """How often a thread ran out of distinct bodies and started over."""
    non_2xx: int
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    requests_per_s: float
    wrk_text_requests_per_s: float | None
    wrk_text_non_2xx: int
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def ok_200(self) -> int:
        # The service answers 200 or a problem (>= 400); wrk counts status > 399 as non-2xx.
        return self.requests - self.non_2xx

    @property
    def server_cpu_us_per_request(self) -> float | None:
        """The server process's CPU time per answered request: steadier than req/s when
        something else competes for the cores."""
        if "server" not in self.cpu or not self.requests:
            return None
        return self.cpu["server"] / 100 * self.duration_s / self.requests * 1e6

    @property
    def unanswered(self) -> int:
        """Requests written but still in flight when wrk stopped (at most one per connection)."""
        return self.sent - self.requests


def run_wrk(
    label: str,
    url: str,
    bodies: Path,
    lines: tuple[int, int],
    *,
    seconds: float,
    threads: int,
    connections: int,
    cpu_pids: Mapping[str, list[int] | str] | None = None,
) -> WrkRun:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(bodies),
        str(lines[0]),
        str(lines[1]),
        str(threads),
        CALLBACK_PATH,
    ]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        before = cpu_snapshot(cpu_pids or {})
        process = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, rusage = os.wait4(process.pid, 0)  # wrk's own CPU time, from the kernel
        process.returncode = os.waitstatus_to_exitcode(status)
        after = cpu_snapshot(cpu_pids or {})
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr.strip()}")
    cpu = cpu_usage(before, after)
    cpu["wrk"] = round(
        100 * (rusage.ru_utime + rusage.ru_stime) / (after["wall"] - before["wall"]), 1
    )
    # Everything else busy on the machine meanwhile (another test run skews the figures).
    busy_cores = cpu.get("machine_busy_percent_of_all_cores", 0.0) * (os.cpu_count() or 1)
    known = sum(value for name, value in cpu.items() if name != "machine_busy_percent_of_all_cores")
    cpu["other"] = round(max(busy_cores - known, 0.0), 1)
    return parse_wrk(label, stdout, cpu)


def parse_wrk(label: str, text: str, cpu: dict[str, float]) -> WrkRun:
    match = re.search(r"^BENCH_RESULT (\{.*\})$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no BENCH_RESULT line in wrk's output:\n{text}")
    data: dict[str, Any] = json.loads(match.group(1))
    threads: list[dict[str, int]] = data["threads"]
    # wrk calls request() once on thread 0 before the run, to check the script (and throws the
    # request away): that call advanced thread 0's `sent` without writing anything.
    sent = sum(thread["sent"] for thread in threads) - 1
    errors: dict[str, int] = data["errors"]
    text_rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    text_non_2xx = re.search(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", text, re.MULTILINE)
    latency = data["latency_us"]
    duration_s = data["duration_us"] / 1e6
    return WrkRun(
        label=label,
        duration_s=duration_s,
        requests=data["requests"],
        sent=sent,
        wrapped=sum(thread["wrapped"] for thread in threads),
        non_2xx=errors["status"],
        socket_errors={key: errors[key] for key in ("connect", "read", "write", "timeout")},
        latency_ms={key: latency[key] / 1000 for key in latency},
        requests_per_s=data["requests"] / duration_s,
        wrk_text_requests_per_s=float(text_rps.group(1)) if text_rps else None,
        wrk_text_non_2xx=int(text_non_2xx.group(1)) if text_non_2xx else 0,
        cpu=cpu,
    )


# ----------------------------------------------------------------------------- CPU accounting


Snapshot = dict[str, Any]


def cpu_snapshot(groups: Mapping[str, list[int] | str]) -> Snapshot:
    """CPU ticks so far of each group's processes (given as pids, or as a process name looked up
    now), and of the whole machine (busy, total)."""
    processes: dict[str, dict[int, int]] = {}
    for name, members in groups.items():
        pids = pids_named(members) if isinstance(members, str) else members
        processes[name] = {pid: process_ticks(pid) for pid in pids}
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    return {
        "processes": processes,
        "machine_busy": sum(values) - idle,
        "machine_total": sum(values),
        "wall": time.monotonic(),
    }


def cpu_usage(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """Percent of ONE core used by each group over the interval (a process that ended meanwhile
    loses its last ticks; one that started counts whole); `machine...` is of all cores."""
    wall = after["wall"] - before["wall"]
    if wall <= 0:
        return {}
    usage: dict[str, float] = {}
    for name, ticks in after["processes"].items():
        old = before["processes"].get(name, {})
        spent = sum(max(now - old.get(pid, 0), 0) for pid, now in ticks.items())
        usage[name] = round(100 * spent / CLOCK_TICKS / wall, 1)
    total = after["machine_total"] - before["machine_total"]
    if total > 0:
        busy = after["machine_busy"] - before["machine_busy"]
        usage["machine_busy_percent_of_all_cores"] = round(100 * busy / total, 1)
    return usage


# ----------------------------------------------------------------------------- servers


@contextlib.contextmanager
def uvicorn_server(
    app: str, *, cwd: Path, env: dict[str, str], log_path: Path, extra: list[str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`uvicorn <app>` in a subprocess: one process, uvloop/httptools as installed, no access log.

    Yields the base URL once the app answers HTTP (the lifespan has completed by then).
    """
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        *(extra or []),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_answering(base, process, log_path)
            yield base, process
        finally:
            stop_process(process)


def wait_until_answering(base: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early; its log:\n{log_path.read_text()[-3000:]}")
        try:
            httpx.get(f"{base}/healthz", timeout=1)  # any answer: the bare app has no /healthz
        except httpx.TransportError:
            time.sleep(0.1)
        else:
            return
    raise RuntimeError(f"server did not answer within 30 s; its log:\n{log_path.read_text()}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # uvicorn's graceful stop: runs the lifespan's exit
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def metric_value(base: str, name: str, labels: str) -> float | None:
    """One sample of the service's /metrics, e.g. ("sinch_callbacks_total", 'result="accepted"')."""
    try:
        text = httpx.get(f"{base}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


# ----------------------------------------------------------------------------- database


def database_url(name: str, driver: str = "postgresql") -> str:
    base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
    return f"{base}/{name}".replace("postgresql://", f"{driver}://", 1)


def query(url: str, sql: str) -> Any:
    """The first value of `sql`'s answer (`url` is a plain postgresql:// URL)."""

    async def run() -> Any:
        connection = await asyncpg.connect(url)
        try:
            return await connection.fetchval(sql)
        finally:
            await connection.close()

    return asyncio.run(run())


def create_database(name: str, app_root: Path) -> str:
    """A fresh database migrated with `alembic upgrade head`; answers its SQLAlchemy async URL."""
    query(POSTGRES_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    query(POSTGRES_ADMIN_URL, f'CREATE DATABASE "{name}"')
    async_url = database_url(name, "postgresql+asyncpg")
    subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "upgrade", "head"],
        cwd=app_root,
        env={**os.environ, "DATABASE_URL": async_url},
        check=True,
        capture_output=True,
    )
    return async_url


def drop_database(name: str) -> None:
    query(POSTGRES_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def stored_rows(url: str) -> int:
    """Rows in the inbox once the count stops moving (requests wrk abandoned may still commit)."""
    count: int = query(url, "SELECT count(*) FROM callback_events")
    while True:
        time.sleep(SETTLE_SECONDS)
        again: int = query(url, "SELECT count(*) FROM callback_events")
        if again == count:
            return count
        count = again


def machine_busy(seconds: float = 1.0) -> float:
    """Percent of all cores busy over `seconds`: what else runs on the machine right now."""
    before = cpu_snapshot({})
    time.sleep(seconds)
    return cpu_usage(before, cpu_snapshot({})).get("machine_busy_percent_of_all_cores", 0.0)


# ----------------------------------------------------------------------------- the run


@dataclass
class Target:
    name: str
    warmup: WrkRun
    measured: WrkRun
    checks: dict[str, Any] = field(default_factory=dict)


def bench_bare(args: argparse.Namespace, workdir: Path) -> Target:
    bodies = workdir / "bare-bodies.txt"
    count = 20_000
    write_bodies(bodies, count)  # repeats are harmless here: nothing is kept
    env = {**os.environ}
    with uvicorn_server(
        "bare_app:app",
        cwd=ROOT,
        env=env,
        log_path=workdir / "bare.log",
        extra=["--app-dir", str(BENCH)],
    ) as (base, process):
        url = base + CALLBACK_PATH
        common = {"threads": args.threads, "connections": args.connections}
        warmup = run_wrk("bare warm-up", url, bodies, (0, count), seconds=args.warmup, **common)
        measured = run_wrk(
            "bare",
            url,
            bodies,
            (0, count),
            seconds=args.duration,
            cpu_pids={"server": [process.pid]},
            **common,
        )
    return Target("bare FastAPI (ceiling)", warmup, measured)


def bench_service(args: argparse.Namespace, workdir: Path, ceiling_rps: float) -> Target:
    # Enough distinct bodies that even a service as fast as the ceiling never repeats one.
    per_second = max(ceiling_rps, 1000.0) * 1.5
    warm_lines = math.ceil(per_second * args.warmup) + 2_000
    measured_lines = math.ceil(per_second * args.duration) + 2_000
    bodies = workdir / "service-bodies.txt"
    write_bodies(bodies, warm_lines + measured_lines)

    redis.Redis.from_url(REDIS_URL).flushdb()
    service_db = create_database(DATABASE_NAME, args.app_root)
    plain_db = database_url(DATABASE_NAME)
    try:
        env = {
            **os.environ,
            "DATABASE_URL": service_db,
            "REDIS_URL": REDIS_URL,
            "SINCH_CALLBACK_SECRETS": SECRET,
            "LOG_LEVEL": args.log_level,
        }
        for assignment in args.service_env:
            name, _, value = assignment.partition("=")
            env[name] = value
        with uvicorn_server(
            "app.main:app", cwd=args.app_root, env=env, log_path=workdir / "service.log"
        ) as (base, process):
            url = base + CALLBACK_PATH
            common = {"threads": args.threads, "connections": args.connections}
            rows_start = stored_rows(plain_db)
            warmup = run_wrk(
                "service warm-up", url, bodies, (0, warm_lines), seconds=args.warmup, **common
            )
            rows_after_warmup = stored_rows(plain_db)
            cpu_pids: dict[str, list[int] | str] = {
                "server": [process.pid],
                "postgres": "postgres",
                "redis": "redis-server",
            }
            profiler = start_profiler(args, process.pid, workdir)
            measured = run_wrk(
                "service",
                url,
                bodies,
                (warm_lines, warm_lines + measured_lines),
                seconds=args.duration,
                cpu_pids=cpu_pids,
                **common,
            )
            if profiler is not None:
                profiler.wait(timeout=60)
            rows_end = stored_rows(plain_db)
            queued_jobs = redis.Redis.from_url(REDIS_URL).zcard("arq:queue")
            accepted = metric_value(base, "sinch_callbacks_total", 'result="accepted"')
            duplicates = query(
                plain_db, "SELECT coalesce(sum(duplicate_count), 0) FROM callback_events"
            )
        log_text = (workdir / "service.log").read_bytes()
        checks: dict[str, Any] = {
            "log_lines": log_text.count(b"\n"),
            "log_bytes": len(log_text),
            "rows_warmup": rows_after_warmup - rows_start,
            "rows_measured": rows_end - rows_after_warmup,
            "rows_total": rows_end,
            "accepted_metric": None if accepted is None else int(accepted),
            "duplicates_counted": int(duplicates),
            "arq_jobs_queued_at_end": int(queued_jobs),  # type: ignore[arg-type]
        }
    finally:
        if not args.keep_database:
            drop_database(DATABASE_NAME)
    return Target("this service (PostgreSQL)", warmup, measured, checks)


def start_profiler(
    args: argparse.Namespace, pid: int, workdir: Path
) -> subprocess.Popen[bytes] | None:
    """With `--py-spy BINARY`: sample the service during the measured run (diagnostics only; the
    profiler takes CPU from this 2-core machine, so a profiled run's figures are not the result)."""
    if args.py_spy is None:
        return None
    out = RESULTS / f"callbacks-{datetime.now(UTC):%Y%m%dT%H%M%S}-service-profile.txt"
    command = [
        str(args.py_spy),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(math.floor(args.duration)),
        "--rate",
        "100",
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(out),
    ]
    log = (workdir / "py-spy.log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def verify(bare: Target, service: Target) -> list[str]:
    """What is wrong with the run; empty when every check passed."""
    problems: list[str] = []
    for target in (bare, service):
        for run in (target.warmup, target.measured):
            if run.non_2xx or run.wrk_text_non_2xx:
                problems.append(f"{run.label}: {run.non_2xx} non-2xx answers")
            if any(run.socket_errors.values()):
                problems.append(f"{run.label}: socket errors {run.socket_errors}")
    checks = service.checks
    for run, rows in (
        (service.warmup, checks["rows_warmup"]),
        (service.measured, checks["rows_measured"]),
    ):
        if run.wrapped:
            problems.append(f"{run.label}: ran out of distinct bodies ({run.wrapped} wraps)")
        # Every 200 must be a row. The only other rows can come from the requests wrk abandoned
        # in flight when it stopped (at most one per connection): the service keeps one of those
        # when it had already read its body, and drops it (ClientDisconnect) when it had not.
        if rows < run.ok_200:
            problems.append(f"{run.label}: fewer rows ({rows}) than 200 answers ({run.ok_200})")
        if rows > run.ok_200 + run.unanswered:
            problems.append(
                f"{run.label}: {rows} rows stored, more than {run.ok_200} answered 200 "
                f"+ {run.unanswered} abandoned in flight"
            )
    if checks["duplicates_counted"]:
        problems.append(f"{checks['duplicates_counted']} duplicates counted: bodies were repeated")
    return problems


def environment() -> dict[str, Any]:
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    settings = {
        name: query(POSTGRES_ADMIN_URL, f"SHOW {name}")
        for name in ("fsync", "synchronous_commit", "wal_sync_method", "server_version")
    }
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "wrk": (wrk_version.stdout or wrk_version.stderr).splitlines()[0],
        "git_commit": commit.stdout.strip(),
        "postgres": settings,
    }


def print_report(bare: Target, service: Target, args: argparse.Namespace) -> tuple[float, bool]:
    ratio = service.measured.requests_per_s / bare.measured.requests_per_s
    print()
    print(
        f"wrk -t{args.threads} -c{args.connections}, {args.duration:g} s measured "
        f"after {args.warmup:g} s warm-up, POST {CALLBACK_PATH}"
    )
    print(
        f"{'':28} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'non-2xx':>7} "
        f"{'server CPU/request':>18}"
    )
    for target in (bare, service):
        run = target.measured
        per_request = run.server_cpu_us_per_request
        print(
            f"{target.name:28} {run.requests_per_s:8.0f} {run.latency_ms['p50']:7.2f} "
            f"{run.latency_ms['p99']:7.2f} {run.latency_ms['max']:7.2f} {run.non_2xx:7d} "
            f"{'' if per_request is None else f'{per_request:.0f} us':>18}"
        )
    p99 = service.measured.latency_ms["p99"]
    met = ratio >= TARGET_RATIO and p99 <= TARGET_P99_MS
    print(
        f"ratio service/ceiling: {ratio:.3f} (target >= {TARGET_RATIO}); service p99 {p99:.1f} ms "
        f"(target <= {TARGET_P99_MS:g}): {'MET' if met else 'NOT MET'}"
    )
    checks = service.checks
    run = service.measured
    print(
        f"service, measured run: {run.ok_200} answered 200, {checks['rows_measured']} rows stored "
        f"({checks['rows_measured'] - run.ok_200} more rows than 200s, from the "
        f"{run.unanswered} requests wrk abandoned in flight when it stopped)"
    )
    print(
        f"service, whole run: {checks['rows_total']} rows, accepted counter "
        f"{checks['accepted_metric']}, arq jobs queued {checks['arq_jobs_queued_at_end']}, "
        f"log {checks['log_lines']} lines"
    )
    for target in (bare, service):
        cpu = ", ".join(f"{name} {value:g}%" for name, value in target.measured.cpu.items())
        print(f"CPU during '{target.name}' (percent of one core): {cpu}")
    return ratio, met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=12.0, help="measured seconds per target")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per target")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (2 cores here: 1)")
    parser.add_argument("--log-level", default="INFO", help="the service's LOG_LEVEL")
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another environment variable for the service (diagnostics)",
    )
    parser.add_argument(
        "--app-root",
        type=Path,
        default=ROOT,
        help="folder to serve `app.main:app` from (e.g. a prototype copy of the repository)",
    )
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="BINARY",
        help="profile the service during the measured run with this py-spy (diagnostics)",
    )
    args = parser.parse_args(argv)

    if shutil.which("wrk") is None:
        print(WRK_INSTALL_HINT, file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    started = datetime.now(UTC)
    busy_before = machine_busy()
    if busy_before > 15:
        print(
            f"WARNING: the machine is already {busy_before:.0f}% busy before the benchmark "
            "(another test run?): the figures will be low and noisy",
            file=sys.stderr,
        )
    with tempfile.TemporaryDirectory(prefix="bench-callbacks-") as temp:
        workdir = Path(temp)
        bare = bench_bare(args, workdir)
        print(
            f"bare: {bare.measured.requests_per_s:.0f} req/s, "
            f"p99 {bare.measured.latency_ms['p99']:.2f} ms",
            flush=True,
        )
        service = bench_service(args, workdir, bare.measured.requests_per_s)
        service_log = (workdir / "service.log").read_bytes()
    log_copy = RESULTS / f"callbacks-{started:%Y%m%dT%H%M%S}-service.log"
    log_copy.write_bytes(service_log)

    ratio, met = print_report(bare, service, args)
    problems = verify(bare, service)
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    if not problems:
        print("checks: zero non-2xx, zero socket errors, no repeated body, every 200 is a row")

    result = {
        "started": started.isoformat(),
        "settings": {key: str(value) for key, value in vars(args).items()},
        "environment": environment(),
        "ratio": ratio,
        "target": {"ratio": TARGET_RATIO, "p99_ms": TARGET_P99_MS, "met": met},
        "problems": problems,
        "machine_busy_before_percent": busy_before,
        "targets": {
            key: {
                "name": target.name,
                "warmup": asdict(target.warmup),
                "measured": asdict(target.measured)
                | {
                    "ok_200": target.measured.ok_200,
                    "unanswered": target.measured.unanswered,
                    "server_cpu_us_per_request": target.measured.server_cpu_us_per_request,
                },
                "checks": target.checks,
            }
            for key, target in (("bare", bare), ("service", service))
        },
    }
    out = RESULTS / f"callbacks-{started:%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {out.relative_to(ROOT)}")
    return 0 if met and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
