"""Benchmark of the worker (`arq app.worker.WorkerSettings`) against arq's own ceiling.

1. arq's ceiling: no-op jobs per second through ONE arq worker process (`NoopSettings` below: the
   service's `max_jobs`, uvloop, no poll delay, arq's per-job log lines silenced), the queue
   filled beforehand, timed inside the worker from the first job's start to the last one's end.
2. the worker through a backlog: N registrations known IN_QUEUE, N signed callbacks (each moving
   one to IN_PROGRESS a second later: trusted, no GET) posted to the API and enqueued by it before
   the worker starts; events/s from the inbox's `processed_at`, the worker's and PostgreSQL's CPU
   per event, the ratio to the ceiling (target >= 0.4). Verified: every event `applied:trusted`,
   every registration IN_PROGRESS with one history row, no GET at the simulator (Sinch).
3. arrival-to-applied lag at a steady 200 callbacks/s through the same API and worker:
   `processed_at - received_at` of each inbox row after the warm-up; first without subscribers,
   then with `--subscribers` (8) receivers subscribed to every change, to which the delivery
   worker (`arq app.worker.DeliveryWorkerSettings`, running through both runs as deployed, with
   the forecasts cron) sends their webhooks (so 8 deliveries per callback). Targets: with
   subscribers p99 <= 100 ms and within 1.5x of the run without. `--burn P` adds, through the
   second run, a process that keeps one core busy P % of every 10 ms: with `--subscribers 0`,
   the lag under a known load that is not deliveries (what the 1.5x asks of the deliveries' CPU).

Run from the repository root: `.venv/bin/python -m bench.worker` (see bench/README.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, cast

import httpx
import redis
from arq.connections import RedisSettings
from arq.jobs import serialize_job

from app.worker import use_uvloop
from app.worker.settings import MAX_JOBS
from bench.subscriptions import Connection, Receiver
from bench.support import (
    ADD_PROJECTS,
    AUTH,
    PROJECT_PATH,
    Server,
    Stack,
    analyzed_after,
    bench_projects,
    callback_body,
    cpu_ms_per_item,
    execute,
    finish,
    latency_summary,
    parser,
    post_callbacks,
    rss_mib,
    stack,
    start_profiler,
    table,
    verdict,
    wait_until,
)
from devtools.simulator.server import SimulatorServer

IDLE_SECONDS = 5.0
"""How long the worker is watched idle, between the backlog and the lag runs."""
SETTLE_SECONDS = 120.0
SETTLED_PERCENT = 5.0
"""After the backlog, the lag runs wait (at most `SETTLE_SECONDS`) for the worker's crons to end."""
TARGET_RATIO = 0.5
TARGET_LAG_P99_MS = 100.0
TARGET_LAG_GROWTH = 1.5
"""The lag's p99 with subscribers, at most this many times the one without."""
KNOWN_AT = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
"""When the seeded registrations became IN_QUEUE; their callbacks claim one second later."""
STATS_KEY = "bench:noop-stats"


# ----------------------------------------------------------------------------- 1. arq's ceiling

_stats = {"jobs": 0.0, "first_start": 0.0, "last_end": 0.0}


async def noop(ctx: dict[str, Any], n: int) -> None:
    now = time.time()
    _stats["first_start"] = _stats["first_start"] or now
    _stats["jobs"] += 1
    _stats["last_end"] = now


async def save_stats(ctx: dict[str, Any]) -> None:
    await ctx["redis"].set(STATS_KEY, json.dumps(_stats))


def __getattr__(name: str) -> Any:
    """`NoopSettings`, for `arq bench.worker.NoopSettings` (built when arq asks, as the service's
    `WorkerSettings` is, from `REDIS_URL`)."""
    if name != "NoopSettings":
        raise AttributeError(name)
    use_uvloop(lambda: logging.getLogger("arq.worker").setLevel(logging.WARNING))
    settings = {"functions": [noop], "on_shutdown": save_stats, "max_jobs": MAX_JOBS}
    settings |= {"redis_settings": RedisSettings.from_dsn(os.environ["REDIS_URL"])}
    return type("NoopSettings", (), settings | {"keep_result": 0, "poll_delay": 0})


def arq_ceiling(run: Stack, jobs: int) -> dict[str, Any]:
    client = redis.Redis.from_url(run.redis_url)
    client.flushdb()
    now = int(time.time() * 1000)
    for start in range(0, jobs, 2000):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(jobs, start + 2000)):
            pipe.psetex(f"arq:job:noop:{n}", 3_600_000, serialize_job("noop", (n,), {}, None, now))
            pipe.zadd("arq:queue", {f"noop:{n}": now})
        pipe.execute()
    with run.worker("noop", "bench.worker.NoopSettings") as process:
        meter, began = run.cpu(worker=process.pid), time.monotonic()
        while client.zcard("arq:queue") or client.keys("arq:in-progress:*"):
            time.sleep(0.05)
        cpu, wall = meter.stop(), time.monotonic() - began
    stats = json.loads(cast(bytes, client.get(STATS_KEY)))
    client.flushdb()
    client.close()
    seconds = stats["last_end"] - stats["first_start"]
    return {
        "jobs": int(stats["jobs"]),
        "jobs_per_s": round(stats["jobs"] / seconds, 1),
        "worker_cpu_ms_per_job": cpu_ms_per_item(cpu, "worker", wall, int(stats["jobs"])),
        "cpu": cpu,
    }


# ----------------------------------------------------------------------------- 2. and 3.


async def seed(run: Stack, prefix: str, count: int, projects: list[str]) -> None:
    """`count` registrations `<prefix>-000001`... known IN_QUEUE since KNOWN_AT, as a GET then
    would have left them; registration n belongs to `projects[n % len(projects)]`."""
    at = KNOWN_AT.isoformat()
    await execute(
        run.plain_url,
        [
            "INSERT INTO registrations (id, project_id, status, registration_type,"
            " status_changed_at, last_synced_at, sinch, created_at, updated_at)"
            " SELECT '{prefix}-' || lpad(n::text, 6, '0'),"
            " ('{{projects}}'::text[])[n % {project_count} + 1], 'IN_QUEUE',"
            " 'ALPHANUMERIC_SENDER_ID', '{at}', '{at}',"
            " json_build_object('id', '{prefix}-' || lpad(n::text, 6, '0'),"
            " 'status', 'IN_QUEUE', 'updateTime', '{stamp}'), now(), now()"
            " FROM generate_series(1, {count}) AS n"
        ],
        prefix=prefix,
        at=at,
        count=count,
        stamp=at[:19],
        projects=",".join(projects),
        project_count=len(projects),
    )


def bodies(prefix: str, count: int, projects: list[str]) -> list[bytes]:
    """The callbacks of `seed`'s registrations, body n-1 for registration n (of its project)."""
    at = (KNOWN_AT + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    return [
        callback_body(f"{prefix}-{n:06d}", "IN_PROGRESS", at, projects[n % len(projects)])
        for n in range(1, count + 1)
    ]


def paths(projects: list[str]) -> list[str]:
    """`post_callbacks`' paths for `bodies`: body n-1 to its project's own callback URL."""
    count = len(projects)
    return [PROJECT_PATH.format(project=projects[n % count]) for n in range(1, 1 + count)]


async def applied(run: Stack, prefix: str, count: int, gets: int) -> list[str]:
    """What is wrong with what the worker did to `prefix`'s registrations and events."""
    like = f"{prefix}-%"
    outcomes = dict(
        await run.rows(
            "SELECT outcome, count(*) FROM callback_events WHERE registration_id LIKE $1"
            " GROUP BY 1",
            like,
        )
    )
    statuses = dict(
        await run.rows(
            "SELECT status, count(*) FROM registrations WHERE id LIKE $1 GROUP BY 1", like
        )
    )
    history = await run.value(
        "SELECT count(*) FROM registration_history WHERE registration_id LIKE $1", like
    )
    problems = [] if outcomes == {"applied:trusted": count} else [f"outcomes {outcomes}"]
    if statuses != {"IN_PROGRESS": count}:
        problems.append(f"registration statuses {statuses}")
    if history != count:
        problems.append(f"{history} history rows (expected {count})")
    return problems + ([f"{gets} GETs at the simulator (expected none)"] if gets else [])


async def processed(run: Stack, prefix: str, process: Any) -> None:
    while await run.value(
        "SELECT count(*) FROM callback_events WHERE registration_id LIKE $1 AND state = 'received'",
        f"{prefix}-%",
    ):
        if process.poll() is not None:
            raise RuntimeError("the worker exited")
        await asyncio.sleep(0.1)


async def settled(run: Stack, *pids: int) -> float:
    """Seconds until each of processes `pids` uses under `SETTLED_PERCENT` of a core over a
    second (at most `SETTLE_SECONDS`)."""
    began = time.monotonic()
    while time.monotonic() - began < SETTLE_SECONDS:
        meter = run.cpu(**{f"p{pid}": pid for pid in pids})
        await asyncio.sleep(1.0)
        usage = meter.stop()
        if all(usage[f"p{pid}"] < SETTLED_PERCENT for pid in pids):
            break
    return round(time.monotonic() - began, 1)


async def lag_run(
    run: Stack,
    api: Server,
    simulator: SimulatorServer,
    process: Any,
    deliveries: Any,
    prefix: str,
    projects: list[str],
) -> dict[str, Any]:
    """Callbacks at `--rate` for `--warmup` + `--seconds`, each moving one of `prefix`'s seeded
    registrations (trusted); the lag of those after the warm-up."""
    args, stats = run.args, simulator.app.state.simulator.stats
    count, gets = round(args.rate * (args.seconds + args.warmup)), stats["getRegistration"]
    meter = run.cpu(worker=process.pid, deliveries=deliveries.pid, api=api.process.pid)
    profiler = start_profiler(args.py_spy, process.pid, run.log(f"worker-profile-{prefix}"))
    sent_at = datetime.now(UTC)
    analyzing = asyncio.create_task(analyzed_after(run, args.warmup))
    posted = await post_callbacks(
        api.port,
        bodies(prefix, count, projects),
        args.rate,
        simulator.hmac_secret,
        paths(projects),
    )
    await processed(run, prefix, process)
    cpu = meter.stop()
    if profiler is not None:
        profiler.send_signal(2)
    await analyzing
    rows = await run.rows(
        "SELECT received_at, processed_at FROM callback_events WHERE registration_id LIKE"
        " $1 AND received_at >= $2 ORDER BY received_at",
        f"{prefix}-%",
        sent_at + timedelta(seconds=args.warmup),
    )
    problems = await applied(run, prefix, count, stats["getRegistration"] - gets)
    if posted["statuses"] != {"200": count}:
        problems.append(f"answers {posted['statuses']}")
    span = (rows[-1][0] - rows[0][0]).total_seconds() if len(rows) > 1 else 0
    return {
        "lag_ms": latency_summary([(p - r).total_seconds() * 1000 for r, p in rows]),
        "achieved_rate_per_s": round((len(rows) - 1) / span, 1) if span else 0.0,
        "post_ms": latency_summary(posted["latencies"]),
        "cpu": cpu,
        "problems": problems,
    }


async def subscribed(run: Stack, api: Server, count: int) -> tuple[list[Receiver], list[Any]]:
    """`count` receivers in this process (answering 200 at once), each subscribed to every
    change through `POST /v1/subscriptions`."""
    loop = asyncio.get_running_loop()
    receivers = [Receiver() for _ in range(count)]
    servers = [await loop.create_server(partial(Connection, r), "127.0.0.1", 0) for r in receivers]
    async with httpx.AsyncClient(base_url=api.base_url, headers=AUTH, timeout=30) as client:
        for n, (receiver, server) in enumerate(zip(receivers, servers, strict=True)):
            url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hooks/{n}"
            answer = await client.post("/v1/subscriptions", json={"url": url})
            receiver.secret = answer.raise_for_status().json()["secret"]
    return receivers, servers


async def service(run: Stack, api: Server, simulator: SimulatorServer) -> dict[str, Any]:
    args, stats = run.args, simulator.app.state.simulator.stats
    projects = bench_projects(simulator.project_id, args.projects)
    await seed(run, "tp", args.events, projects)
    per_run = round(args.rate * (args.seconds + args.warmup))
    await seed(run, "lag", per_run, projects)
    await seed(run, "sub", per_run, projects)
    posted = await post_callbacks(
        api.port,
        bodies("tp", args.events, projects),
        2000,
        simulator.hmac_secret,
        paths(projects),
    )
    if posted["statuses"] != {"200": args.events}:
        raise RuntimeError(f"the backlog's callbacks were answered {posted['statuses']}")
    print(f"{args.events} callbacks kept and enqueued; starting the worker", flush=True)
    gets = stats["getRegistration"]
    with run.worker() as worker:
        meter = run.cpu(worker=worker.pid)
        profiler = start_profiler(args.py_spy, worker.pid, run.log("worker-profile"))
        began = time.monotonic()
        await processed(run, "tp", worker)
        wall, cpu = time.monotonic() - began, meter.stop()
        if profiler is not None:
            profiler.send_signal(2)
        span = await run.value(
            "SELECT extract(epoch FROM max(processed_at) - min(processed_at)) FROM callback_events"
            " WHERE registration_id LIKE 'tp-%'"
        )
        throughput = {
            "events_per_s": round((args.events - 1) / float(span), 1),
            "worker_cpu_ms_per_event": cpu_ms_per_item(cpu, "worker", wall, args.events),
            "postgres_cpu_ms_per_event": cpu_ms_per_item(cpu, "postgres", wall, args.events),
            "cpu": cpu,
            "problems": await applied(run, "tp", args.events, stats["getRegistration"] - gets),
        }
        print(f"worker: {throughput['events_per_s']:.0f} events/s", flush=True)
        # As deployed, a delivery worker runs beside it in both lag runs (idle in the first): it
        # also runs the forecasts cron. The lag runs start once the crons have folded the counts
        # and refreshed the forecasts of the registrations just moved (the delivery worker's
        # start-up run), so that both start on quiet workers.
        with run.deliveries() as deliveries:
            throughput["settle_s"] = await settled(run, worker.pid, deliveries.pid)
            # Idle, it should cost next to nothing: it polls its queue when woken
            # (app/worker/wake.py).
            idle = run.cpu(worker=worker.pid)
            await asyncio.sleep(IDLE_SECONDS)
            throughput["idle_cpu_percent"] = idle.stop()["worker"]
            lag = await lag_run(run, api, simulator, worker, deliveries, "lag", projects)
            print(f"lag without subscribers: p99 {lag['lag_ms'].get('p99')} ms", flush=True)
            receivers, servers = await subscribed(run, api, args.subscribers)
            sending = start_profiler(args.py_spy, deliveries.pid, run.log("deliveries-profile"))
            load = burner(args.burn)
            try:
                with_subscribers = await lag_run(
                    run, api, simulator, worker, deliveries, "sub", projects
                )
            finally:
                if load is not None:
                    load.kill()
                    load.wait()
            if sending is not None:
                sending.send_signal(2)
            expected = per_run * args.subscribers
            await wait_until(lambda: sum(len(r.received) for r in receivers) >= expected, 60)
            with_subscribers["delivered"] = sum(len(r.received) for r in receivers)
            with_subscribers["memory_mib"] = {
                "worker": rss_mib(worker.pid),
                "delivery worker": rss_mib(deliveries.pid),
                "api": rss_mib(api.process.pid),
            }
        for server in servers:
            server.close()
        if with_subscribers["delivered"] < expected:
            with_subscribers["problems"].append(
                f"{with_subscribers['delivered']} of {expected} deliveries arrived"
            )
    return {"throughput": throughput, "lag": lag, "with_subscribers": with_subscribers}


BURN = """
import sys, time
busy = float(sys.argv[1]) / 100 * 0.01
while True:
    start = time.perf_counter()
    while time.perf_counter() - start < busy:
        pass
    time.sleep(max(0.0, 0.01 - (time.perf_counter() - start)))
"""


def burner(percent: float) -> subprocess.Popen[bytes] | None:
    """A process keeping one core busy `percent` % of every 10 ms (None for 0): a known load."""
    if percent <= 0:
        return None
    return subprocess.Popen([sys.executable, "-c", BURN, str(percent)])


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--events", type=int, default=6000, help="the backlog (6000)")
    options.add_argument("--noop-jobs", type=int, default=20000, help="the ceiling's (20000)")
    options.add_argument("--rate", type=float, default=200.0, help="callbacks/s of the lag run")
    options.add_argument("--seconds", type=float, default=15.0, help="measured seconds of it")
    options.add_argument("--warmup", type=float, default=2.0, help="seconds sent before")
    options.add_argument("--subscribers", type=int, default=8, help="of the second lag run (8)")
    options.add_argument(
        "--burn",
        type=float,
        default=0.0,
        help="%% of one core a process keeps busy through the second lag run (0: none)",
    )
    options.add_argument(
        "--projects",
        type=int,
        default=1,
        help="Sinch projects the registrations are spread over (1: the settings' only); each"
        " callback goes to its project's own URL",
    )
    args = options.parse_args()
    allowed = {
        "SUBSCRIPTION_ALLOWED_HOSTS": "127.0.0.1",
        "SUBSCRIPTION_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    with (
        SimulatorServer() as simulator,
        stack("worker", args, **simulator.env(), **allowed) as run,
    ):
        ceiling = arq_ceiling(run, args.noop_jobs)
        print(f"arq ceiling: {ceiling['jobs_per_s']:.0f} jobs/s", flush=True)
        if args.projects > 1:  # before the API starts: it reads the projects' secrets then
            asyncio.run(run.value(ADD_PROJECTS, args.projects - 1, simulator.hmac_secret))
        with run.api() as api:
            results = asyncio.run(service(run, api, simulator)) | {"ceiling": ceiling}
    tp, lag, sub = results["throughput"], results["lag"], results["with_subscribers"]
    ratio = round(tp["events_per_s"] / ceiling["jobs_per_s"], 2)
    cpu_ratio = round(ceiling["worker_cpu_ms_per_job"] / tp["worker_cpu_ms_per_event"], 2)
    p99, ratio_ok = lag["lag_ms"].get("p99"), ratio >= TARGET_RATIO
    sub_p99 = sub["lag_ms"].get("p99")
    growth = round(sub_p99 / p99, 2) if sub_p99 is not None and p99 else None
    growth_ok = growth is not None and growth <= TARGET_LAG_GROWTH
    tp_cpu, lag_cpu = tp["cpu"], lag["cpu"]
    rows: list[list[object]] = [
        ["measure", "value", "target"],
        ["Sinch projects the registrations belong to", args.projects],
        ["arq no-op jobs/s (uvloop, no job logs, no poll delay)", ceiling["jobs_per_s"]],
        ["  worker CPU per job, ms", ceiling["worker_cpu_ms_per_job"]],
        ["worker: in-order events/s, distinct registrations", tp["events_per_s"]],
        ["  worker CPU per event, ms", tp["worker_cpu_ms_per_event"]],
        ["  PostgreSQL CPU per event, ms", tp["postgres_cpu_ms_per_event"]],
        ["  the crons' work after it, s", tp["settle_s"]],
        [f"  worker CPU while idle ({IDLE_SECONDS:g} s), % of a core", tp["idle_cpu_percent"]],
        ["  ratio to the ceiling", ratio, f">= {TARGET_RATIO} {'met' if ratio_ok else 'NOT MET'}"],
        ["  same, by worker CPU per item (load-independent)", cpu_ratio],
        [
            "  machine busy % (all cores) / others % (one core)",
            tp_cpu["machine_busy"],
            tp_cpu["other"],
        ],
        [f"lag at {args.rate:g} events/s, p50 ms", lag["lag_ms"].get("p50")],
        [f"lag at {args.rate:g} events/s, p99 ms", p99],
        ["  achieved arrival rate /s", lag["achieved_rate_per_s"]],
        ["  POST latency p50 / p99 ms", lag["post_ms"]["p50"], lag["post_ms"]["p99"]],
        ["  machine busy % / others %", lag_cpu["machine_busy"], lag_cpu["other"]],
        [f"lag with {args.subscribers} subscribers, p50 ms", sub["lag_ms"].get("p50")],
        [
            f"lag with {args.subscribers} subscribers, p99 ms",
            sub_p99,
            verdict(sub_p99, TARGET_LAG_P99_MS),
        ],
        [
            "  p99 with / without subscribers",
            growth,
            f"<= {TARGET_LAG_GROWTH} {'met' if growth_ok else 'NOT MET'}",
        ],
        ["  deliveries sent", sub["delivered"]],
        ["  a known load through it, % of a core (--burn)", args.burn],
        ["  CPU % of a core: worker / api", sub["cpu"].get("worker"), sub["cpu"].get("api")],
        ["  CPU % of a core: delivery worker", sub["cpu"].get("deliveries")],
        ["  machine busy % / others %", sub["cpu"]["machine_busy"], sub["cpu"]["other"]],
        *[[f"  memory after the runs, MiB: {k}", v] for k, v in sub["memory_mib"].items()],
    ]
    print(table(rows))
    met = ratio_ok and sub_p99 is not None and sub_p99 <= TARGET_LAG_P99_MS and growth_ok
    problems = tp["problems"] + lag["problems"] + sub["problems"]
    return finish(run, results | {"ratio": ratio, "growth": growth}, met, problems)


if __name__ == "__main__":
    sys.exit(main())
