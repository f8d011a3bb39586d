"""Benchmark of `POST /callbacks/sinch/registrations` against a bare FastAPI ceiling, with wrk.

The same wrk load and script (bench/callbacks.lua) drives, one after the other, `bare` below (a
FastAPI route that reads the body and answers 200: the ceiling) and the service (`uvicorn
app.main:app`, LOG_LEVEL=INFO, a callback per request each with its own eventId and a valid
signature, so each a new row committed before its 200). Prints req/s, p50/p99/max of both, the
ratio service/ceiling (target >= 0.5 with p99 <= 50 ms) and the server's CPU per request; checks
no non-2xx, no socket error, no body sent twice, every 200 a row.

Run from the repository root: `.venv/bin/python -m bench.callbacks` (see bench/README.md).
"""

from __future__ import annotations

import asyncio
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
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response

from app.callbacks.signature import sign
from bench.support import (
    ADD_PROJECTS,
    CALLBACK_PATH,
    PROJECT_PATH,
    ROOT,
    SECRET,
    CpuMeter,
    Stack,
    callback_body,
    cpu_line,
    finish,
    parser,
    stack,
    start_profiler,
    table,
)

TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0

bare = FastAPI()
"""The ceiling, served as the service is (`uvicorn bench.callbacks:bare`), on the same path."""


@bare.post(CALLBACK_PATH)
@bare.post(PROJECT_PATH)  # with `--projects N`: the last added project's own callback URL
async def receive(request: Request) -> Response:
    await request.body()
    return Response(status_code=200)


def write_bodies(path: Path, count: int) -> None:
    """`count` lines "<signature>\\t<body>", each body a distinct event."""
    with path.open("w") as out:
        for _ in range(count):
            body = callback_body(str(uuid.uuid4()), "IN_PROGRESS", "2026-01-01T10:00:00")
            out.write(f"{sign(body, SECRET)}\t{body.decode()}\n")


def wrk(
    args: Any,
    url: str,
    bodies: Path,
    lines: tuple[int, int],
    seconds: float,
    meter: CpuMeter,
    path: str = CALLBACK_PATH,
) -> Any:
    """wrk sending lines [first, last) of `bodies` to `url`: its figures (BENCH_RESULT, from
    callbacks.lua), with the CPU of the meter's groups and of wrk itself meanwhile."""
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds:g}s"]
    command += ["--timeout", "10s", "-s", str(ROOT / "bench" / "callbacks.lua"), url, "--"]
    command += [str(bodies), str(lines[0]), str(lines[1]), str(args.threads), path]
    with tempfile.TemporaryFile() as out:
        meter.start()
        began = time.monotonic()
        process = subprocess.Popen(command, stdout=out, stderr=out)
        _, status, rusage = os.wait4(process.pid, 0)  # wrk's own CPU time, from the kernel
        wrk_cpu = 100 * (rusage.ru_utime + rusage.ru_stime) / (time.monotonic() - began)
        cpu = meter.stop(known={"wrk": round(wrk_cpu, 1)})
        out.seek(0)
        text = out.read().decode()
    match = re.search(r"^BENCH_RESULT (\{.*\})$", text, re.MULTILINE)
    if status or match is None:
        raise RuntimeError(f"wrk failed:\n{text}")
    data = json.loads(match.group(1))
    seconds = data["duration_us"] / 1e6
    # wrk calls request() once before the run to check the script, and throws that one away.
    sent = sum(thread["sent"] for thread in data["threads"]) - 1
    return {
        "requests_per_s": round(data["requests"] / seconds, 1),
        "latency_ms": {k: data["latency_us"][k] / 1000 for k in ("p50", "p99", "max")},
        "ok_200": data["requests"] - data["errors"]["status"],
        "non_2xx": data["errors"]["status"],
        "socket_errors": sum(data["errors"][k] for k in ("connect", "read", "write", "timeout")),
        "unanswered": sent - data["requests"],
        "wrapped": sum(thread["wrapped"] for thread in data["threads"]),
        "server_cpu_us_per_request": round(
            cpu.get("server", 0) / 100 * seconds / max(data["requests"], 1) * 1e6
        ),
        "cpu": cpu,
    }


def rows_stored(run: Stack) -> int:
    """Rows in the inbox once the count stops moving (requests wrk abandoned may still commit)."""
    count = -1
    while (again := asyncio.run(run.value("SELECT count(*) FROM callback_events"))) != count:
        count = again
        time.sleep(1)
    return int(count)


def measure(
    run: Stack, app: str, bodies: Path, warm: int, measured: int, path: str = CALLBACK_PATH
) -> dict[str, Any]:
    """Warm-up on lines [0, warm), then the measured run on [warm, warm + measured), POSTed to
    `path`; for the service, the rows each stored."""
    args, label = run.args, "service" if app == "app.main:app" else "bare"
    with run.api(label, app) as server:
        url = server.base_url + path
        pid = server.process.pid
        meter = run.cpu(server=pid) if label == "service" else CpuMeter({"server": [pid]})
        rows = rows_stored(run)
        warmup = wrk(args, url, bodies, (0, warm), args.warmup, meter, path)
        warmup["rows"] = rows_stored(run) - rows
        profiler = start_profiler(args.py_spy, pid, run.log(f"{label}-profile"))
        figures = wrk(args, url, bodies, (warm, warm + measured), args.duration, meter, path)
        if profiler is not None:
            profiler.send_signal(2)
            profiler.wait()
        figures["rows"] = rows_stored(run) - rows - warmup["rows"]
        return {"warmup": warmup, "measured": figures}


def check(name: str, figures: dict[str, Any], service: bool) -> list[str]:
    """Problems of one wrk run: non-2xx, socket errors; for the service, a body sent twice, and
    200 answers <= rows <= 200 answers + requests abandoned in flight when wrk stopped (the
    service keeps such a request when it had already read its body)."""
    problems = [f"{name}: {figures['non_2xx']} non-2xx answers"] if figures["non_2xx"] else []
    if figures["socket_errors"]:
        problems.append(f"{name}: {figures['socket_errors']} socket errors")
    if service and figures["wrapped"]:
        problems.append(f"{name}: ran out of distinct bodies ({figures['wrapped']} wraps)")
    if (
        service
        and not figures["ok_200"] <= figures["rows"] <= figures["ok_200"] + figures["unanswered"]
    ):
        problems.append(
            f"{name}: {figures['rows']} rows for {figures['ok_200']} answered 200 and "
            f"{figures['unanswered']} abandoned in flight"
        )
    return problems


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--duration", type=float, default=12.0, help="measured seconds (12)")
    options.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (3)")
    options.add_argument("--connections", type=int, default=32)
    options.add_argument("--threads", type=int, default=1, help="wrk threads (2 cores here: 1)")
    options.add_argument(
        "--projects",
        type=int,
        default=1,
        help="projects configured (1: the settings' only); with more, N-1 are added, each with"
        " its callback secret, and the callbacks go to the last one's own URL",
    )
    args = options.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    with stack("callbacks", args, LOG_LEVEL="INFO") as run, tempfile.TemporaryDirectory() as temp:
        # Enough distinct bodies that the service never repeats one (the ceiling may: nothing
        # is kept there); the fastest ceiling seen was 15,400 req/s (2026-12-07, when 10,000 a
        # second ran out: the service, at 10,700 req/s, answered repeats).
        warm = math.ceil(16_000 * args.warmup) + 2000
        measured = math.ceil(16_000 * args.duration) + 2000
        bodies = Path(temp) / "bodies.txt"
        write_bodies(bodies, warm + measured)
        path = CALLBACK_PATH
        if args.projects > 1:
            asyncio.run(run.value(ADD_PROJECTS, args.projects - 1, SECRET))
            path = PROJECT_PATH.format(project=f"bench-project-{args.projects - 1}")
        results = {
            "bare": measure(run, "bench.callbacks:bare", bodies, warm, measured, path),
            "service": measure(run, "app.main:app", bodies, warm, measured, path),
        }
        duplicates = asyncio.run(
            run.value("SELECT coalesce(sum(duplicate_count), 0) FROM callback_events")
        )
    bare_run, service = results["bare"]["measured"], results["service"]["measured"]
    print(
        f"\nwrk -t{args.threads} -c{args.connections}, {args.duration:g} s after "
        f"{args.warmup:g} s warm-up, POST {path}, {args.projects} project(s) configured"
    )
    rows: list[list[object]] = [["", "req/s", "p50 ms", "p99 ms", "max ms", "server CPU/req"]]
    for name, figures in (("bare FastAPI (ceiling)", bare_run), ("this service", service)):
        latency = figures["latency_ms"]
        rows.append(
            [
                name,
                f"{figures['requests_per_s']:.0f}",
                *(f"{latency[k]:.2f}" for k in ("p50", "p99", "max")),
                f"{figures['server_cpu_us_per_request']} us",
            ]
        )
    print(table(rows))
    ratio = round(service["requests_per_s"] / bare_run["requests_per_s"], 3)
    p99 = service["latency_ms"]["p99"]
    met = ratio >= TARGET_RATIO and p99 <= TARGET_P99_MS
    print(
        f"ratio service/ceiling {ratio} (target >= {TARGET_RATIO}), p99 {p99:.1f} ms "
        f"(target <= {TARGET_P99_MS:g}); {service['ok_200']} answered 200, {service['rows']} "
        f"rows ({service['unanswered']} abandoned in flight)"
    )
    for name, figures in (("bare", bare_run), ("service", service)):
        print(f"CPU during '{name}' (percent of one core): {cpu_line(figures['cpu'])}")
    problems = [f"{duplicates} duplicates counted: bodies were repeated"] if duplicates else []
    for name, target in results.items():
        for phase, figures in target.items():
            problems += check(f"{name} {phase}", figures, name == "service")
    return finish(run, {"ratio": ratio, **results}, met, problems)


if __name__ == "__main__":
    sys.exit(main())
