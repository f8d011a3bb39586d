"""Benchmark of the attempts log's pages on a large PostgreSQL database.

Fills a fresh database with one subscription holding 1,000,000 delivery attempts (`--attempts`:
10 per delivery, 100,000 deliveries of as many changes; one attempt in 20 failed, spread over 30
days) and a second subscription with 100,000 more (so that the index is shared), serves `uvicorn
app.main:app` on it, and measures over real HTTP, one request at a time, latency per request on
the client (target p99 <= 150 ms each):
1. `GET /v1/subscriptions/{id}/attempts?limit=50`: first pages and pages reached by cursor;
2. the same filtered: `outcome=failed`, `outcome=succeeded`, `since` (a day ago, a week ago, a
   time after the newest attempt: an empty page), and `outcome=failed&since=...`;
3. `GET /v1/deliveries/{id}/attempts` of random deliveries.

Run from the repository root: `.venv/bin/python -m bench.attempts` (see bench/README.md).
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from bench.api import cursor_paths, measure
from bench.support import (
    AUTH,
    Stack,
    execute,
    finish,
    parser,
    reads_table,
    stack,
)

TARGET_P99_MS = 150.0
SUBSCRIPTION = "sub_bench_attempts"
OTHER = "sub_bench_other"
PER_DELIVERY = 10
NEWEST = datetime(2026, 12, 1, tzinfo=UTC)
"""The newest attempt's time; the oldest is 30 days before."""
SPREAD_SECONDS = 30 * 86400

FILL = [
    f"""
    INSERT INTO subscriptions (id, url, enabled, secret, created_at, updated_at)
    VALUES ('{SUBSCRIPTION}', 'http://127.0.0.1:9/hook', true, 'whsec_x', now(), now()),
           ('{OTHER}', 'http://127.0.0.1:9/other', true, 'whsec_y', now(), now())
    """,
    # One change per delivery, with the image a delivery's payload is built from.
    """
    INSERT INTO registration_changes (seq, project_id, registration_id, kind, from_status, status,
                                      at, source, recorded_at, registration_type, created_at,
                                      updated_at, sender_ids, tags)
    SELECT n, (SELECT id FROM projects WHERE from_settings),
           'reg-' || lpad((n % 20000)::text, 6, '0'), 'status', 'IN_PROGRESS', 'APPROVED',
           now(), 'callback', now(), 'ALPHANUMERIC_SENDER_ID', now(), now(),
           '["ACME"]'::json, '["#a"]'::json
    FROM generate_series(1, {deliveries}) AS n
    """,
    f"""
    INSERT INTO deliveries (subscription_id, change_id, registration_id, project_id, state,
                            attempts, last_status_code, created_at, updated_at)
    SELECT CASE WHEN c.id % 11 = 0 THEN '{OTHER}' ELSE '{SUBSCRIPTION}' END, c.id,
           c.registration_id, c.project_id, 'succeeded', {PER_DELIVERY}, 200, now(), now()
    FROM registration_changes AS c
    """,
    # PER_DELIVERY attempts each, their times spread over 30 days in delivery order; one in 20
    # failed (a 503 with its answer, or no answer in time).
    f"""
    INSERT INTO delivery_attempts (delivery_id, subscription_id, attempted_at, succeeded,
                                   request_headers, response_status, response_body, latency_ms,
                                   error)
    SELECT d.id, d.subscription_id,
           timestamptz '{NEWEST.isoformat()}'
             - ((({{deliveries}} - d.id) * {PER_DELIVERY} + {PER_DELIVERY} - k)
                * {SPREAD_SECONDS}.0 / ({{deliveries}} * {PER_DELIVERY})) * interval '1 second',
           (d.id + k) % 20 <> 0,
           json_build_object('content-type', 'application/json', 'webhook-id', 'msg_' || d.id,
                             'webhook-timestamp', '1796000000',
                             'webhook-signature', 'v1,' || md5(d.id::text || k)),
           CASE WHEN (d.id + k) % 20 <> 0 THEN 200 WHEN k % 2 = 0 THEN 503 END,
           CASE WHEN (d.id + k) % 20 <> 0 THEN '{{"received": true}}'
                WHEN k % 2 = 0 THEN 'busy' END,
           20 + (d.id * 7 + k) % 180,
           CASE WHEN (d.id + k) % 20 = 0 THEN
                CASE WHEN k % 2 = 0 THEN 'answered 503' ELSE 'no answer within 15 s' END END
    FROM deliveries AS d, generate_series(1, {PER_DELIVERY}) AS k
    """,
    "VACUUM ANALYZE",
    "CHECKPOINT",
]


async def run_reads(run: Stack) -> dict[str, Any]:
    args, rng = run.args, random.Random(7)
    deliveries = -(-args.attempts * 11 // 10 // PER_DELIVERY)  # one in 11 is the other's
    print(f"filling {deliveries * PER_DELIVERY:,} attempts of {deliveries:,} deliveries ...")
    await execute(run.plain_url, FILL, deliveries=deliveries)
    n = args.requests
    path = f"/v1/subscriptions/{SUBSCRIPTION}/attempts?limit=50"

    def at(delta: timedelta) -> str:
        return quote((NEWEST - delta).isoformat())

    def filtered() -> str:
        return path + rng.choice(
            [
                "&outcome=failed",
                "&outcome=succeeded",
                f"&since={at(timedelta(days=1))}",
                f"&since={at(timedelta(days=7))}",
                f"&since={at(timedelta(seconds=-1))}",  # after the newest: nothing
                f"&outcome=failed&since={at(timedelta(days=3))}",
            ]
        )

    def plain() -> str:
        return path

    with run.api() as server:
        async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=30) as client:
            pages = await _pages(client, n, plain)
            filters = await _pages(client, n, filtered)
            of_delivery = [
                f"/v1/deliveries/{rng.randint(1, deliveries)}/attempts" for _ in range(n)
            ]
            await measure(client, pages[:100] + of_delivery[:100], 1)  # warm-up
            return {
                "subscription_page": await measure(client, pages, 1),
                "filtered_page": await measure(client, filters, 1),
                "delivery_attempts": await measure(client, of_delivery, 1),
            }


async def _pages(client: httpx.AsyncClient, count: int, first: Callable[[], str]) -> list[str]:
    """Half first pages, half pages reached by cursor (up to 5 deep)."""
    return [first() for _ in range(count // 2)] + await cursor_paths(client, count // 2, first)


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--attempts", type=int, default=1_000_000, help="of the one measured")
    options.add_argument("--requests", type=int, default=1_000, help="per measure (1000)")
    args = options.parse_args()
    with stack("attempts", args) as run:
        results = asyncio.run(run_reads(run))
    print(f"\nGET over HTTP, one at a time, {args.requests} requests each")
    shown, met = reads_table(results, {name: TARGET_P99_MS for name in results})
    print(shown)
    return finish(run, results, met, [])


if __name__ == "__main__":
    sys.exit(main())
