"""Benchmark of `POST /callbacks/sinch/registrations` against a bare FastAPI ceiling, with wrk.

One run measures, at the same concurrency and with the same wrk script:
1. a bare FastAPI app (bench/bare_app.py) whose one POST route reads the body and answers 200;
2. the real service (`uvicorn app.main:app`) on a fresh migrated PostgreSQL database, with valid
   signatures over distinct bodies, each event committed before its 200;
then prints requests/s, p50 and p99 of both and their ratio, and verifies the run: no non-2xx
answer, no socket error, no body sent twice, and every 200 is a stored row.

Run from the repository root: `.venv/bin/python -m bench.callbacks` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from app.callbacks.signature import sign
from bench.support import (
    BENCH,
    CALLBACK_PATH,
    RESULTS,
    ROOT,
    CpuMeter,
    ProcessGroups,
    callback_body,
    create_database,
    database_url,
    describe_machine,
    drop_database,
    flush_redis,
    postgres_value,
    redis_url,
    start_profiler,
    table,
    timestamp,
    uvicorn_server,
    warn_if_busy,
    write_results,
)

LUA_SCRIPT = BENCH / "callbacks.lua"
SECRET = "bench-callback-secret"
DATABASE_NAME = "bench_callbacks"
REDIS_URL = redis_url(13)
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
SETTLE_SECONDS = 1.0
WRK_INSTALL_HINT = "wrk is not installed: apt-get update && apt-get install -y wrk"


def write_bodies(path: Path, count: int) -> None:
    """`count` lines "<signature>\\t<body>", each body a distinct event (its own eventId)."""
    with path.open("w", encoding="ascii") as out:
        for _ in range(count):
            body = callback_body(str(uuid.uuid4()), "IN_PROGRESS", "2026-01-01T10:00:00", "bench")
            out.write(f"{sign(body, SECRET)}\t{body.decode()}\n")


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
    args: argparse.Namespace,
    *,
    seconds: float,
    cpu_groups: ProcessGroups | None = None,
) -> WrkRun:
    """wrk with callbacks.lua sending lines [first, last) of `bodies` to `url`; the CPU of
    `cpu_groups`, of wrk itself and of the rest of the machine meanwhile."""
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
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
        str(args.threads),
        CALLBACK_PATH,
    ]
    meter = CpuMeter(cpu_groups or {})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        meter.start()
        began = time.monotonic()
        process = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, rusage = os.wait4(process.pid, 0)  # wrk's own CPU time, from the kernel
        process.returncode = os.waitstatus_to_exitcode(status)
        wrk_cpu = 100 * (rusage.ru_utime + rusage.ru_stime) / (time.monotonic() - began)
        cpu = meter.stop(known={"wrk": round(wrk_cpu, 1)})
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr.strip()}")
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
        wrk_text_non_2xx=int(text_non_2xx.group(1)) if text_non_2xx else 0,
        cpu=cpu,
    )


# ----------------------------------------------------------------------------- the service


def metric_value(base: str, name: str, labels: str) -> float | None:
    """One sample of the service's /metrics, e.g. ("sinch_callbacks_total", 'result="accepted"')."""
    try:
        text = httpx.get(f"{base}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def stored_rows(url: str) -> int:
    """Rows in the inbox once the count stops moving (requests wrk abandoned may still commit)."""
    count: int = postgres_value(url, "SELECT count(*) FROM callback_events")
    while True:
        time.sleep(SETTLE_SECONDS)
        again: int = postgres_value(url, "SELECT count(*) FROM callback_events")
        if again == count:
            return count
        count = again


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
    with uvicorn_server(
        "bench.bare_app:app", cwd=ROOT, env=os.environ, log_path=workdir / "bare.log"
    ) as server:
        url = server.base_url + CALLBACK_PATH
        warmup = run_wrk("bare warm-up", url, bodies, (0, count), args, seconds=args.warmup)
        measured = run_wrk(
            "bare",
            url,
            bodies,
            (0, count),
            args,
            seconds=args.duration,
            cpu_groups={"server": [server.process.pid]},
        )
    return Target("bare FastAPI (ceiling)", warmup, measured)


def bench_service(
    args: argparse.Namespace, workdir: Path, stamp: str, ceiling_rps: float
) -> Target:
    # Enough distinct bodies that even a service as fast as the ceiling never repeats one.
    per_second = max(ceiling_rps, 1000.0) * 1.5
    warm_lines = math.ceil(per_second * args.warmup) + 2_000
    measured_lines = math.ceil(per_second * args.duration) + 2_000
    bodies = workdir / "service-bodies.txt"
    write_bodies(bodies, warm_lines + measured_lines)

    flush_redis(REDIS_URL)
    service_db = create_database(DATABASE_NAME, args.app_root)
    plain_db = database_url(DATABASE_NAME)
    log_path = workdir / "service.log"
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
            "app.main:app", cwd=args.app_root, env=env, log_path=log_path
        ) as server:
            url = server.base_url + CALLBACK_PATH
            rows_start = stored_rows(plain_db)
            warmup = run_wrk(
                "service warm-up", url, bodies, (0, warm_lines), args, seconds=args.warmup
            )
            rows_after_warmup = stored_rows(plain_db)
            profiler = start_profiler(
                args.py_spy,
                server.process.pid,
                RESULTS / f"callbacks-{stamp}-service-profile.txt",
                rate=100,
                seconds=math.floor(args.duration),
            )
            measured = run_wrk(
                "service",
                url,
                bodies,
                (warm_lines, warm_lines + measured_lines),
                args,
                seconds=args.duration,
                cpu_groups={
                    "server": [server.process.pid],
                    "postgres": "postgres",
                    "redis": "redis-server",
                },
            )
            if profiler is not None:
                profiler.wait(timeout=60)
            rows_end = stored_rows(plain_db)
            queued_jobs: int = redis.Redis.from_url(REDIS_URL).zcard("arq:queue")  # type: ignore[assignment]
            accepted = metric_value(server.base_url, "sinch_callbacks_total", 'result="accepted"')
            duplicates = postgres_value(
                plain_db, "SELECT coalesce(sum(duplicate_count), 0) FROM callback_events"
            )
        log_text = log_path.read_bytes()
        checks: dict[str, Any] = {
            "log_lines": log_text.count(b"\n"),
            "log_bytes": len(log_text),
            "rows_warmup": rows_after_warmup - rows_start,
            "rows_measured": rows_end - rows_after_warmup,
            "rows_total": rows_end,
            "accepted_metric": None if accepted is None else int(accepted),
            "duplicates_counted": int(duplicates),
            "arq_jobs_queued_at_end": int(queued_jobs),
        }
    finally:
        drop_database(DATABASE_NAME)
    return Target("this service (PostgreSQL)", warmup, measured, checks)


# ----------------------------------------------------------------------------- the run


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


def print_report(bare: Target, service: Target, args: argparse.Namespace) -> tuple[float, bool]:
    ratio = service.measured.requests_per_s / bare.measured.requests_per_s
    print(
        f"\nwrk -t{args.threads} -c{args.connections}, {args.duration:g} s measured "
        f"after {args.warmup:g} s warm-up, POST {CALLBACK_PATH}"
    )
    rows: list[list[object]] = [
        ["", "req/s", "p50 ms", "p99 ms", "max ms", "non-2xx", "server CPU/request"]
    ]
    for target in (bare, service):
        run = target.measured
        per_request = run.server_cpu_us_per_request
        rows.append(
            [
                target.name,
                f"{run.requests_per_s:.0f}",
                f"{run.latency_ms['p50']:.2f}",
                f"{run.latency_ms['p99']:.2f}",
                f"{run.latency_ms['max']:.2f}",
                run.non_2xx,
                "" if per_request is None else f"{per_request:.0f} us",
            ]
        )
    print(table(rows))
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
    stamp = timestamp(started)
    busy_before = warn_if_busy()
    with tempfile.TemporaryDirectory(prefix="bench-callbacks-") as temp:
        workdir = Path(temp)
        bare = bench_bare(args, workdir)
        print(
            f"bare: {bare.measured.requests_per_s:.0f} req/s, "
            f"p99 {bare.measured.latency_ms['p99']:.2f} ms",
            flush=True,
        )
        service = bench_service(args, workdir, stamp, bare.measured.requests_per_s)
        service_log = (workdir / "service.log").read_bytes()
    (RESULTS / f"callbacks-{stamp}-service.log").write_bytes(service_log)

    ratio, met = print_report(bare, service, args)
    problems = verify(bare, service)
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    if not problems:
        print("checks: zero non-2xx, zero socket errors, no repeated body, every 200 is a row")

    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    result = {
        "started": started.isoformat(),
        "settings": {key: str(value) for key, value in vars(args).items()},
        "environment": describe_machine()
        | {"wrk": (wrk_version.stdout or wrk_version.stderr).splitlines()[0]},
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
    write_results("callbacks", stamp, result)
    return 0 if met and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
