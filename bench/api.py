"""Benchmark of the internal API's reads on a large PostgreSQL database.

Fills a fresh database with 100,000 registrations (with a history row each) and 1,000,000 kept
callback events, serves `uvicorn app.main:app` on it, and measures over real HTTP:
1. GET /v1/registrations/{id} for random ids (target p99 <= 10 ms);
2. GET /v1/registrations?status=...&limit=50, one filtered page, first pages and pages reached by
   cursor (target p99 <= 25 ms).
Requests go 4 at a time from an async httpx client; latency is measured per request on the client.

Run from the repository root: `.venv/bin/python bench/api.py` (about 2 minutes, most of it filling
the database).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # type: ignore[import-untyped]  # noqa: E402
import httpx  # noqa: E402

from tests.support.databases import create_postgres_database, drop_postgres_database  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

DATABASE = "bench_api"
TOKEN = "bench-api-token"
RESULTS = ROOT / "bench" / "results"
STATES = ["IN_QUEUE", "IN_PROGRESS", "APPROVED", "REJECTED", "PENDING", "ON_HOLD"]
TYPES = ["ALPHANUMERIC_SENDER_ID", "LONG_NUMBER", "SHORT_CODE", "RCS_AGENT"]

FILL = [
    # 100,000 registrations, ids like reg-000042, states and types spread evenly. (Built from the
    # constants above only: nothing from outside reaches this SQL.)
    f"""
    INSERT INTO registrations (id, status, registration_type, status_changed_at, last_synced_at,
                               sinch, created_at, updated_at)
    SELECT 'reg-' || lpad(n::text, 6, '0'),
           (ARRAY{STATES})[1 + n % {len(STATES)}],
           (ARRAY{TYPES})[1 + (n / 7) % {len(TYPES)}],
           timestamptz '2026-01-01' + n * interval '13 seconds',
           now(),
           json_build_object('id', 'reg-' || lpad(n::text, 6, '0'), 'tags', json_build_array('#a')),
           now(), now()
    FROM generate_series(1, {{registrations}}) AS n
    """,
    """
    INSERT INTO registration_history (registration_id, from_status, to_status, at, source,
                                      event_id, recorded_at)
    SELECT id, NULL, status, status_changed_at, 'reconcile', NULL, now() FROM registrations
    """,
    # 1,000,000 events, ten per registration, nearly all processed.
    """
    INSERT INTO callback_events (dedup_key, event_id, registration_id, body, headers, peer,
                                 secret_index, received_at, duplicate_count, state, outcome,
                                 attempts, processed_at)
    SELECT 'evt-' || n, 'evt-' || n, 'reg-' || lpad((1 + n % {registrations})::text, 6, '0'),
           convert_to('{"eventId":"evt-' || n || '"}', 'UTF8'), '{}'::json, '127.0.0.1', 0,
           timestamptz '2026-01-01' + n * interval '1 second', 0,
           CASE WHEN n % 1000 = 0 THEN 'failed' ELSE 'processed' END, 'applied:trusted', 1,
           timestamptz '2026-01-01' + n * interval '1 second'
    FROM generate_series(1, {events}) AS n
    """,
    "VACUUM ANALYZE",  # and no autovacuum competing with the measurement
    "CHECKPOINT",  # nor the bulk load's dirty pages being written out during it
]


async def fill(url: str, registrations: int, events: int) -> None:
    plain = url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(plain)
    try:
        for statement in FILL:
            started = time.monotonic()
            await connection.execute(
                statement.replace("{registrations}", str(registrations)).replace(
                    "{events}", str(events)
                )
            )
            print(f"  {statement.split()[0]} ... {time.monotonic() - started:.1f}s", flush=True)
    finally:
        await connection.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(
    client: httpx.AsyncClient, paths: list[str], concurrency: int
) -> dict[str, float]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = list(reversed(paths))

    async def worker() -> None:
        while queue:
            path = queue.pop()
            started = time.perf_counter()
            response = await client.get(path)
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    assert set(statuses) == {200}, f"answers other than 200: {statuses}"
    return {
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
    }


async def cursor_paths(client: httpx.AsyncClient, count: int, rng: random.Random) -> list[str]:
    """Pages reached by following `nextCursor` from filtered first pages."""
    paths: list[str] = []
    while len(paths) < count:
        base = f"/v1/registrations?status={rng.choice(STATES)}&limit=50"
        answer = (await client.get(base)).json()
        for _ in range(5):
            if not answer["nextCursor"]:
                break
            path = f"{base}&cursor={answer['nextCursor']}"
            paths.append(path)
            answer = (await client.get(path)).json()
    return paths[:count]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(7)  # repeatable choice of ids
    url: str = args.database_url
    print(f"filling {args.registrations:,} registrations and {args.events:,} events ...")
    await fill(url, args.registrations, args.events)
    port = free_port()
    log = (RESULTS / "api-service.log").open("wb")
    env = {**os.environ, "DATABASE_URL": url, "INTERNAL_API_TOKENS": TOKEN, "LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, before any measurement
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--no-access-log"],
        cwd=RESULTS,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10
        ) as client:
            for _ in range(200):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            ids = [
                f"/v1/registrations/reg-{rng.randint(1, args.registrations):06d}"
                for _ in range(args.requests)
            ]
            first_pages = [
                f"/v1/registrations?status={rng.choice(STATES)}&limit=50"
                for _ in range(args.requests // 2)
            ]
            later_pages = await cursor_paths(client, args.requests // 2, rng)
            await measure(client, ids[:200] + first_pages[:100], args.concurrency)  # warm-up
            results = {
                "get_registration": await measure(client, ids, args.concurrency),
                "filtered_page": await measure(client, first_pages + later_pages, args.concurrency),
            }
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrations", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2_000)
    # The targets are latencies of one caller's reads. With more clients at once the figures
    # measure this machine's two cores shared by the server, PostgreSQL and the Python client.
    parser.add_argument("--concurrency", type=int, default=1, help="clients at once (default 1)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.database_url = create_postgres_database(DATABASE)
    try:
        results = asyncio.run(run(args))
    finally:
        drop_postgres_database(DATABASE)
    targets = {"get_registration": 10.0, "filtered_page": 25.0}
    print(f"\nGET over HTTP, {args.concurrency} at a time, {args.requests} requests each")
    print(f"{'':20} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  target p99")
    met = True
    for name, figures in results.items():
        ok = figures["p99_ms"] <= targets[name]
        met &= ok
        print(
            f"{name:20} {figures['requests_per_s']:>8} {figures['p50_ms']:>8} "
            f"{figures['p99_ms']:>8} {figures['max_ms']:>8}  <= {targets[name]} "
            f"{'met' if ok else 'NOT MET'}"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (RESULTS / f"api-{stamp}.json").write_text(
        json.dumps({"args": vars(args), "results": results}, indent=2)
    )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
