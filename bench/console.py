"""Benchmark of the operator console's pages on a large PostgreSQL database.

Fills a fresh database as `bench.api` does (100,000 registrations with a history row each and
1,000,000 kept callback events, one in a thousand failed), folds the counts once as the worker's
`fold_counts` cron does, serves `uvicorn app.main:app` on it, signs in, and measures each page
over real HTTP, one request at a time (target p99 <= 150 ms): the overview (counts, charts,
registrations waiting on the customer, failed events), registrations filtered and searched by
sender ID, a registration's page, events filtered by state and by outcome, an event's page, the
"replay all failed" confirmation and the subscriptions.

Run from the repository root: `.venv/bin/python -m bench.console` (`--registrations 2000
--events 20000 --requests 50` for a quick check).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx

from app.core.db import create_engine, create_sessionmaker, utcnow
from app.core.settings import Settings
from app.counts import service as counts
from bench import api
from bench.support import (
    RESULTS,
    create_database,
    database_url,
    describe_machine,
    drop_database,
    flush_redis,
    latency_summary,
    redis_url,
    table,
    timestamp,
    uvicorn_server,
    write_results,
)

DATABASE = "bench_console"
TOKEN = "bench-console-token"
TARGET_P99_MS = 150.0
REDIS_DATABASE = 13


async def fill(url: str, registrations: int, events: int) -> None:
    connection = await asyncpg.connect(database_url(DATABASE))
    try:
        for statement in api.FILL:
            started = time.monotonic()
            await connection.execute(
                statement.replace("{registrations}", str(registrations)).replace(
                    "{events}", str(events)
                )
            )
            print(f"  {statement.split()[0]} ... {time.monotonic() - started:.1f}s", flush=True)
    finally:
        await connection.close()
    # What the worker's cron does every COUNTS_FOLD_INTERVAL_SECONDS.
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        started = time.monotonic()
        folded = await counts.fold(create_sessionmaker(engine), utcnow())
        print(f"  fold {folded:,} deltas ... {time.monotonic() - started:.1f}s", flush=True)
    finally:
        await engine.dispose()


async def sign_in(client: httpx.AsyncClient) -> None:
    form = await client.get("/console/sign-in")
    marker = re.search(r'name="marker" value="([^"]+)"', form.text)
    assert marker is not None
    answer = await client.post("/console/sign-in", data={"token": TOKEN, "marker": marker.group(1)})
    assert answer.status_code == 303, answer.text


async def measure(client: httpx.AsyncClient, paths: list[str]) -> dict[str, Any]:
    latencies: list[float] = []
    for path in paths:
        started = time.perf_counter()
        response = await client.get(path)
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return {"requests": len(latencies), "latency_ms": latency_summary(latencies, digits=1)}


def pages(rng: random.Random, registrations: int, events: int) -> dict[str, Any]:
    def registration() -> str:
        return f"/console/registrations/reg-{rng.randint(1, registrations):06d}"

    def event() -> str:
        return f"/console/events/{rng.randint(1, events)}"

    def brand() -> str:
        return f"/console/registrations?q=ACME{rng.randrange(api.BRANDS):04d}"

    return {
        "overview": lambda: "/console",
        "registrations_by_status": lambda: (
            f"/console/registrations?status={rng.choice(api.STATES)}"
        ),
        "registrations_search_sender_id": brand,
        "registration": registration,
        "events": lambda: "/console/events",
        "events_failed": lambda: "/console/events?state=failed",
        "events_by_outcome": lambda: "/console/events?outcome=applied%3Atrusted",
        "event": event,
        "replay_failed_confirmation": lambda: "/console/events/replay-failed",
        "subscriptions": lambda: "/console/subscriptions",
    }


async def run(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    rng = random.Random(7)
    print(f"filling {args.registrations:,} registrations and {args.events:,} events ...")
    await fill(args.database_url, args.registrations, args.events)
    redis = redis_url(REDIS_DATABASE)
    flush_redis(redis)
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "REDIS_URL": redis,
        "INTERNAL_API_TOKENS": TOKEN,
        "LOG_LEVEL": "WARNING",
    }
    with uvicorn_server(
        "app.main:app", cwd=RESULTS, env=env, log_path=RESULTS / f"console-{stamp}-service.log"
    ) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            await sign_in(client)
            makers = pages(rng, args.registrations, args.events)
            for make in makers.values():  # warm-up
                for _ in range(5):
                    await client.get(make())
            return {
                name: await measure(client, [make() for _ in range(args.requests)])
                for name, make in makers.items()
            }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrations", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300, help="per page (default 300)")
    args = parser.parse_args()
    stamp = timestamp()
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.database_url = create_database(DATABASE)
    try:
        results = asyncio.run(run(args, stamp))
    finally:
        drop_database(DATABASE)
    print(f"\nconsole pages over HTTP, one at a time, {args.requests} requests each")
    rows: list[list[object]] = [["", "p50 ms", "p99 ms", "max ms", "target p99"]]
    met = True
    for name, figures in results.items():
        latency = figures["latency_ms"]
        ok = latency["p99"] <= TARGET_P99_MS
        met &= ok
        verdict = f"<= {TARGET_P99_MS} {'met' if ok else 'NOT MET'}"
        rows.append([name, latency["p50"], latency["p99"], latency["max"], verdict])
    print(table(rows))
    write_results(
        "console",
        stamp,
        {"args": vars(args), "environment": describe_machine(), "results": results},
    )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
