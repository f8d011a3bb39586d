"""Benchmark of the internal API's reads on a large PostgreSQL database.

Fills a fresh database with 100,000 registrations (with a history row each) and 1,000,000 kept
callback events, serves `uvicorn app.main:app` on it, and measures over real HTTP:
1. GET /v1/registrations/{id} for random ids (target p99 <= 10 ms);
2. GET /v1/registrations?status=...&limit=50, one filtered page, first pages and pages reached by
   cursor (target p99 <= 25 ms);
3. the same with the registration facts' filters: `senderId` (alone, with `marketCode`, with a
   `status`), `marketCode` (alone, with several `status`es), one or two `tag`s
   (target p99 <= 25 ms).
Requests go `--concurrency` at a time (default 1) from an async httpx client; latency is measured
per request on the client.

Run from the repository root: `.venv/bin/python -m bench.api` (about a minute, most of it filling
the database).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx

from bench.support import (
    RESULTS,
    create_database,
    database_url,
    describe_machine,
    drop_database,
    latency_summary,
    table,
    timestamp,
    uvicorn_server,
    write_results,
)

DATABASE = "bench_api"
TOKEN = "bench-api-token"
STATES = ["IN_QUEUE", "IN_PROGRESS", "APPROVED", "REJECTED", "PENDING", "ON_HOLD"]
TYPES = ["ALPHANUMERIC_SENDER_ID", "LONG_NUMBER", "SHORT_CODE", "RCS_AGENT"]
MARKETS = ["GB", "SE", "DE", "FR", "US", "NL", "ES", "IT", "NO", "DK", "FI", "PL"]
TAGS = 40
BRANDS = 1000
"""Every third registration also asks for a brand's sender ID (`ACME0042`), shared by ~33."""

FILL = [
    # 100,000 registrations, ids like reg-000042, states and types spread evenly. (Built from the
    # constants above only: nothing from outside reaches this SQL.)
    f"""
    INSERT INTO registrations (id, status, registration_type, status_changed_at, last_synced_at,
                               sinch, created_at, updated_at, sender_ids, tags, market_code,
                               policy_id, status_since, reason_message, reason_state, reason_at)
    SELECT 'reg-' || lpad(n::text, 6, '0'),
           (ARRAY{STATES})[1 + n % {len(STATES)}],
           (ARRAY{TYPES})[1 + (n / 7) % {len(TYPES)}],
           timestamptz '2026-01-01' + n * interval '13 seconds',
           now(),
           json_build_object('id', 'reg-' || lpad(n::text, 6, '0'), 'tags', json_build_array('#a')),
           now(), now(),
           CASE WHEN n % 3 = 0
                THEN json_build_array('S' || lpad(n::text, 6, '0'),
                                      'ACME' || lpad((n % {BRANDS})::text, 4, '0'))
                ELSE json_build_array('S' || lpad(n::text, 6, '0')) END,
           json_build_array('#team-' || n % {TAGS}, '#team-' || (n / 3) % {TAGS}),
           (ARRAY{MARKETS})[1 + (n / 5) % {len(MARKETS)}],
           'policy-' || (n / 5) % {len(MARKETS)},
           timestamptz '2026-01-01' + n * interval '13 seconds',
           'Upload a letter of authorisation', 'PENDING',
           timestamptz '2026-01-01' + n * interval '13 seconds'
    FROM generate_series(1, {{registrations}}) AS n
    """,
    """
    INSERT INTO registration_sender_ids (registration_id, sender_id)
    SELECT DISTINCT id, json_array_elements_text(sender_ids) FROM registrations
    """,
    """
    INSERT INTO registration_tags (registration_id, tag)
    SELECT DISTINCT id, json_array_elements_text(tags) FROM registrations
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


async def fill(registrations: int, events: int) -> None:
    connection = await asyncpg.connect(database_url(DATABASE))
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


async def measure(client: httpx.AsyncClient, paths: list[str], concurrency: int) -> dict[str, Any]:
    """GET every path, `concurrency` at a time: req/s and latency (ms) measured per request."""
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
        "latency_ms": latency_summary(latencies, digits=2),
    }


def fact_filter(rng: random.Random, registrations: int) -> str:
    """A first page asked by the facts' filters, as internal services ask them."""
    brand = f"ACME{rng.randrange(BRANDS):04d}"
    market = rng.choice(MARKETS)
    tag, other = rng.sample(range(TAGS), 2)
    query = rng.choice(
        [
            f"senderId=S{rng.randint(1, registrations):06d}",
            f"senderId={brand}",
            f"senderId={brand}&marketCode={market}",
            f"senderId={brand}&status=APPROVED",
            f"marketCode={market}",
            f"marketCode={market}&status=PENDING,ON_HOLD",
            "status=PENDING,ON_HOLD,REJECTED",
            f"tag=%23team-{tag}",
            f"tag=%23team-{tag}&tag=%23team-{other}",
        ]
    )
    return f"/v1/registrations?{query}&limit=50"


async def cursor_paths(
    client: httpx.AsyncClient,
    count: int,
    rng: random.Random,
    first_page: Callable[[], str] | None = None,
) -> list[str]:
    """Pages reached by following `nextCursor` from filtered first pages."""
    paths: list[str] = []
    while len(paths) < count:
        base = (
            first_page()
            if first_page is not None
            else f"/v1/registrations?status={rng.choice(STATES)}&limit=50"
        )
        answer = (await client.get(base)).json()
        for _ in range(5):
            if not answer["nextCursor"]:
                break
            path = f"{base}&cursor={answer['nextCursor']}"
            paths.append(path)
            answer = (await client.get(path)).json()
    return paths[:count]


async def run(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    rng = random.Random(7)  # repeatable choice of ids
    print(f"filling {args.registrations:,} registrations and {args.events:,} events ...")
    await fill(args.registrations, args.events)
    env = {**os.environ, "DATABASE_URL": args.database_url, "INTERNAL_API_TOKENS": TOKEN}
    env["LOG_LEVEL"] = "WARNING"
    # Served from bench/results/, so that no .env of the repository's root is read.
    with uvicorn_server(
        "app.main:app", cwd=RESULTS, env=env, log_path=RESULTS / f"api-{stamp}-service.log"
    ) as server:
        async with httpx.AsyncClient(
            base_url=server.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        ) as client:
            ids = [
                f"/v1/registrations/reg-{rng.randint(1, args.registrations):06d}"
                for _ in range(args.requests)
            ]
            first_pages = [
                f"/v1/registrations?status={rng.choice(STATES)}&limit=50"
                for _ in range(args.requests // 2)
            ]
            later_pages = await cursor_paths(client, args.requests // 2, rng)
            facts_first = [fact_filter(rng, args.registrations) for _ in range(args.requests // 2)]
            facts_later = await cursor_paths(
                client, args.requests // 2, rng, lambda: fact_filter(rng, args.registrations)
            )
            await measure(client, ids[:200] + first_pages[:100], args.concurrency)  # warm-up
            return {
                "get_registration": await measure(client, ids, args.concurrency),
                "filtered_page": await measure(client, first_pages + later_pages, args.concurrency),
                "facts_filtered_page": await measure(
                    client, facts_first + facts_later, args.concurrency
                ),
            }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrations", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2_000)
    # The targets are latencies of one caller's reads. With more clients at once the figures
    # measure this machine's two cores shared by the server, PostgreSQL and the Python client.
    parser.add_argument("--concurrency", type=int, default=1, help="clients at once (default 1)")
    args = parser.parse_args()
    stamp = timestamp()
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.database_url = create_database(DATABASE)
    try:
        results = asyncio.run(run(args, stamp))
    finally:
        drop_database(DATABASE)
    targets = {"get_registration": 10.0, "filtered_page": 25.0, "facts_filtered_page": 25.0}
    print(f"\nGET over HTTP, {args.concurrency} at a time, {args.requests} requests each")
    rows: list[list[object]] = [["", "req/s", "p50 ms", "p99 ms", "max ms", "target p99"]]
    met = True
    for name, figures in results.items():
        latency = figures["latency_ms"]
        ok = latency["p99"] <= targets[name]
        met &= ok
        verdict = f"<= {targets[name]} {'met' if ok else 'NOT MET'}"
        figures_ms = [latency["p50"], latency["p99"], latency["max"]]
        rows.append([name, figures["requests_per_s"], *figures_ms, verdict])
    print(table(rows))
    write_results(
        "api", stamp, {"args": vars(args), "environment": describe_machine(), "results": results}
    )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
