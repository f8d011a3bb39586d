"""Benchmark of the internal API's reads on a large PostgreSQL database.

Fills a fresh database with 100,000 registrations (a history row each) and 1,000,000 kept callback
events, serves `uvicorn app.main:app` on it, and measures over real HTTP, `--concurrency` requests
at a time (default 1), latency per request on the client:
1. GET /v1/registrations/{id} for random ids (target p99 <= 10 ms);
2. GET /v1/registrations?status=...&limit=50, first pages and pages reached by cursor (target p99
   <= 25 ms);
3. the same with the registration facts' filters: `senderId` (alone, with `marketCode`, with a
   `status`), `marketCode` (alone, with several `status`es), one or two `tag`s (p99 <= 25 ms).

`--projects N` spreads the rows over N Sinch projects (the settings' one and N-1 more, round
robin), and adds a measure: 4. first pages filtered by `projectId` (alone, with a `status`, with
`updatedSince`) (p99 <= 25 ms).

Run from the repository root: `.venv/bin/python -m bench.api` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.support import (
    AUTH,
    Stack,
    execute,
    finish,
    latency_summary,
    parser,
    reads_table,
    stack,
)

STATES = ["IN_QUEUE", "IN_PROGRESS", "APPROVED", "REJECTED", "PENDING", "ON_HOLD"]
TYPES = ["ALPHANUMERIC_SENDER_ID", "LONG_NUMBER", "SHORT_CODE", "RCS_AGENT"]
MARKETS = ["GB", "SE", "DE", "FR", "US", "NL", "ES", "IT", "NO", "DK", "FI", "PL"]
TAGS = 40
BRANDS = 1000
"""Every third registration also asks for a brand's sender ID (`ACME0042`), shared by ~33."""
TARGETS = {
    "get_registration": 10.0,
    "filtered_page": 25.0,
    "facts_filtered_page": 25.0,
    "project_filtered_page": 25.0,
}
EXTRA_PROJECT = "bench-project-"
"""The projects beyond the settings' one are `bench-project-1` .. `bench-project-{N-1}`; a row
numbered n belongs to project n % N (0: the settings' one)."""
PROJECT_OF = (
    f"CASE WHEN {{n}} % {{projects}} = 0 THEN (SELECT id FROM projects WHERE from_settings) "
    f"ELSE '{EXTRA_PROJECT}' || ({{n}} % {{projects}}) END"
)

FILL = [
    f"""
    INSERT INTO projects (id, name, from_settings, created_at, updated_at)
    SELECT '{EXTRA_PROJECT}' || p, 'Bench ' || p, false, now(), now()
    FROM generate_series(1, {{projects}} - 1) AS p
    """,
    # 100,000 registrations, ids like reg-000042, states and types spread evenly. (Built from the
    # constants above only: nothing from outside reaches this SQL.)
    f"""
    INSERT INTO registrations (id, project_id, status, registration_type, status_changed_at,
                               last_synced_at, sinch, created_at, updated_at, sender_ids, tags,
                               market_code, policy_id, status_since, reason_message,
                               reason_state, reason_at)
    SELECT 'reg-' || lpad(n::text, 6, '0'), {PROJECT_OF.replace("{n}", "n")},
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
    INSERT INTO registration_history (registration_id, project_id, from_status, to_status, at,
                                      source, event_id, recorded_at)
    SELECT id, project_id, NULL, status, status_changed_at, 'reconcile', NULL, now()
    FROM registrations
    """,
    # 1,000,000 events, ten per registration (of its project), nearly all processed.
    f"""
    INSERT INTO callback_events (project_id, dedup_key, event_id, registration_id, body, headers,
                                 peer, secret_index, received_at, duplicate_count, state, outcome,
                                 attempts, processed_at)
    SELECT {PROJECT_OF.replace("{n}", "(1 + n % {registrations})")}, 'evt-' || n, 'evt-' || n,
           'reg-' || lpad((1 + n % {{registrations}})::text, 6, '0'),
           convert_to('{{"eventId":"evt-' || n || '"}}', 'UTF8'), '{{}}'::json, '127.0.0.1', 0,
           timestamptz '2026-01-01' + n * interval '1 second', 0,
           CASE WHEN n % 1000 = 0 THEN 'failed' ELSE 'processed' END, 'applied:trusted', 1,
           timestamptz '2026-01-01' + n * interval '1 second'
    FROM generate_series(1, {{events}}) AS n
    """,
    "VACUUM ANALYZE",  # and no autovacuum competing with the measurement
    "CHECKPOINT",  # nor the bulk load's dirty pages being written out during it
]


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


async def measure(client: httpx.AsyncClient, paths: list[str], concurrency: int) -> dict[str, Any]:
    """GET every path, `concurrency` at a time (each answered 200): req/s and latency (ms)."""
    latencies: list[float] = []
    queue = list(reversed(paths))

    async def one_client() -> None:
        while queue:
            path, began = queue.pop(), time.perf_counter()
            response = await client.get(path)
            latencies.append((time.perf_counter() - began) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"GET {path}: {response.status_code}")

    began = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    rate = round(len(latencies) / (time.perf_counter() - began), 1)
    return {"requests_per_s": rate, "latency_ms": latency_summary(latencies, digits=2)}


async def fill(run: Stack) -> None:
    """The registrations and events of `--registrations` and `--events`, then VACUUM ANALYZE."""
    args = run.args
    print(
        f"filling {args.registrations:,} registrations and {args.events:,} events in "
        f"{args.projects} project(s) ..."
    )
    await execute(
        run.plain_url,
        FILL,
        registrations=args.registrations,
        events=args.events,
        projects=args.projects,
    )


async def cursor_paths(
    client: httpx.AsyncClient, count: int, first_page: Callable[[], str]
) -> list[str]:
    """Pages reached by following `nextCursor` (up to 5 deep) from first pages."""
    paths: list[str] = []
    while len(paths) < count:
        base = first_page()
        answer = (await client.get(base)).json()
        for _ in range(5):
            if not answer["nextCursor"]:
                break
            paths.append(f"{base}&cursor={answer['nextCursor']}")
            answer = (await client.get(paths[-1])).json()
    return paths[:count]


async def run_reads(run: Stack) -> dict[str, Any]:
    args, rng = run.args, random.Random(7)  # a repeatable choice of ids
    await fill(run)
    n = args.requests
    with run.api() as server:
        async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=10) as client:
            ids = [
                f"/v1/registrations/reg-{rng.randint(1, args.registrations):06d}" for _ in range(n)
            ]

            def status_page() -> str:
                return f"/v1/registrations?status={rng.choice(STATES)}&limit=50"

            def facts_page() -> str:
                return fact_filter(rng, args.registrations)

            pages = [status_page() for _ in range(n // 2)]
            pages += await cursor_paths(client, n // 2, status_page)
            facts = [facts_page() for _ in range(n // 2)]
            facts += await cursor_paths(client, n // 2, facts_page)
            await measure(client, ids[:200] + pages[:100], args.concurrency)  # warm-up
            results = {
                "get_registration": await measure(client, ids, args.concurrency),
                "filtered_page": await measure(client, pages, args.concurrency),
                "facts_filtered_page": await measure(client, facts, args.concurrency),
            }
            if args.projects > 1:
                projects = [p["id"] for p in (await client.get("/v1/projects")).json()["items"]]

                def project_page() -> str:
                    query = rng.choice(
                        ["", f"&status={rng.choice(STATES)}", "&updatedSince=2026-01-05T00:00:00Z"]
                    )
                    return f"/v1/registrations?projectId={rng.choice(projects)}{query}&limit=50"

                by_project = [project_page() for _ in range(n)]
                results["project_filtered_page"] = await measure(
                    client, by_project, args.concurrency
                )
            return results


def options(doc: str | None) -> argparse.ArgumentParser:
    """The database's size and the requests per measure (bench.console's too)."""
    options = parser(doc)
    options.add_argument("--registrations", type=int, default=100_000)
    options.add_argument("--events", type=int, default=1_000_000)
    options.add_argument("--requests", type=int, default=2_000, help="per measure (2000)")
    options.add_argument(
        "--projects", type=int, default=1, help="Sinch projects the rows are spread over (1)"
    )
    return options


def main() -> int:
    options_ = options(__doc__)
    # The targets are one caller's; with more at once the figures measure the two cores shared
    # by the server, PostgreSQL and the Python client.
    options_.add_argument("--concurrency", type=int, default=1, help="requests at once (1)")
    args = options_.parse_args()
    with stack("api", args) as run:
        results = asyncio.run(run_reads(run))
    print(f"\nGET over HTTP, {args.concurrency} at a time, {args.requests} requests each")
    shown, met = reads_table(results, TARGETS)
    print(shown)
    return finish(run, results, met, [])


if __name__ == "__main__":
    sys.exit(main())
