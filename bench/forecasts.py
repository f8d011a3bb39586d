"""Benchmark of the time-in-state answers and forecasts on a large history.

Fills a fresh database with 100,000 registrations in 12 markets and 1,000,000 history rows (ten
status changes each: queue, processing, the customer asked twice, a hold, ...; two in five still
waiting, on hold), runs the forecasts cron's work in this process (`app.forecasts.service.
refresh`, timed: the first run derives every registration; a second run, with nothing changed,
is timed too), then serves `uvicorn app.main:app` and measures over real HTTP, one request at a
time, latency per request on the client (target p99 <= 100 ms each, issue 28):
1. GET /v1/stats/time-in-state: unfiltered, by market, by market and state, with `since`;
2. GET /v1/registrations?overdue=true (first pages and pages by cursor, with and without a
   market);
3. GET /v1/registrations/{id}, which carries the registration's `forecast`.

Run from the repository root: `.venv/bin/python -m bench.forecasts` (see bench/README.md).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.core.db import create_engine, create_sessionmaker
from app.core.settings import Settings
from app.forecasts import service
from bench.api import MARKETS, TYPES, cursor_paths, measure
from bench.support import AUTH, Stack, execute, finish, parser, stack, table, verdict

TARGET_MS = 100.0
NOW = datetime(2026, 12, 1, tzinfo=UTC)
# Each registration's life, a state per history row (the first ones of a life are the oldest);
# lives are cut after 4 to 10 rows, and those cut before a decision are still waiting.
LIFE = [
    "IN_QUEUE",
    "IN_PROGRESS",
    "PENDING",
    "IN_PROGRESS",
    "ON_HOLD",
    "IN_PROGRESS",
    "PENDING_ATTACHMENTS",
    "IN_QUEUE",
    "IN_PROGRESS",
]

FILL = [
    # Registrations: a market and type each, submitted over 2026; the status is set below, from
    # the newest history row. (Built from constants only: nothing from outside reaches this SQL.)
    f"""
    INSERT INTO registrations (id, project_id, status, registration_type, status_changed_at,
                               last_synced_at, sinch, created_at, updated_at, sender_ids, tags,
                               market_code, eta_date)
    SELECT 'reg-' || lpad(n::text, 6, '0'), (SELECT id FROM projects WHERE from_settings),
           'IN_QUEUE',
           (ARRAY{TYPES})[1 + (n / 7) % 2],
           NULL, now(), json_build_object('id', 'reg-' || lpad(n::text, 6, '0')),
           now(), now(), json_build_array('S' || lpad(n::text, 6, '0')), '[]'::json,
           (ARRAY{MARKETS})[1 + n % {len(MARKETS)}],
           (timestamptz '2026-01-01' + (n % 300) * interval '1 day' + interval '20 days')::date
    FROM generate_series(1, {{registrations}}) AS n
    """,
    # Ten rows each: the life above, each stay lasting 1 to 12 days give or take 12 hours (by
    # market), the tenth row a decision (one in three rejected) for three in five registrations,
    # ON_HOLD (still waiting) for the others.
    f"""
    INSERT INTO registration_history (registration_id, project_id, from_status, to_status, at,
                                      source, event_id, recorded_at)
    SELECT 'reg-' || lpad(n::text, 6, '0'), (SELECT id FROM projects WHERE from_settings), NULL,
           CASE WHEN k < 10 THEN (ARRAY{LIFE})[k]
                WHEN n % 5 >= 3 THEN 'ON_HOLD'
                WHEN n % 5 = 0 THEN 'REJECTED' ELSE 'APPROVED' END,
           timestamptz '2026-01-01' + (n % 300) * interval '1 day'
             + k * (1 + n % {len(MARKETS)}) * interval '1 day'
             + ((n * 7919 + k * 104729) % 43200) * interval '1 second',
           'reconcile', NULL, now()
    FROM generate_series(1, {{registrations}}) AS n, generate_series(1, 10) AS k
    """,
    """
    UPDATE registrations r SET status = h.to_status, status_changed_at = h.at, status_since = h.at
    FROM (SELECT DISTINCT ON (registration_id) registration_id, to_status, at
          FROM registration_history ORDER BY registration_id, id DESC) h
    WHERE h.registration_id = r.id
    """,
    "VACUUM ANALYZE",
    "CHECKPOINT",
]


async def longest_hold(held: list[float]) -> None:
    """Until cancelled: append to `held` how late each 1 ms sleep woke, in ms. The refresh runs in
    the callbacks' worker, on its event loop: while a batch's Python work holds the loop, no
    callback is applied."""
    while True:
        began = time.monotonic()
        await asyncio.sleep(0.001)
        held.append((time.monotonic() - began - 0.001) * 1000)


async def refresh(run: Stack) -> dict[str, float]:
    """The forecasts cron's work, twice: seconds for each run, and the longest it held the event
    loop (ms)."""
    engine = create_engine(Settings(_env_file=None, database_url=run.url))  # type: ignore[call-arg]
    try:
        sessions = create_sessionmaker(engine)
        timings = {}
        # The second run a second later, as the cron's next would be: at the same time, step 4
        # would find every forecast already made at that time, and skip them all.
        for label, now in (("first_run", NOW), ("second_run", NOW + timedelta(seconds=1))):
            held: list[float] = []
            monitor = asyncio.create_task(longest_hold(held))
            began = time.monotonic()
            report = await service.refresh(sessions, now=now)
            timings[f"{label}_s"] = round(time.monotonic() - began, 1)
            monitor.cancel()
            timings[f"{label}_loop_held_ms"] = round(max(held, default=0.0), 1)
            print(
                f"  forecasts refresh: {report} in {timings[f'{label}_s']} s, the event loop held"
                f" at most {timings[f'{label}_loop_held_ms']} ms",
                flush=True,
            )
        return timings
    finally:
        await engine.dispose()


async def run_reads(run: Stack) -> dict[str, Any]:
    args, rng = run.args, random.Random(11)
    print(f"filling {args.registrations:,} registrations and their history ...")
    await execute(run.plain_url, FILL, registrations=args.registrations)
    history = await run.value("SELECT count(*) FROM registration_history")
    print(f"  {history:,} history rows")
    timings = await refresh(run)
    await execute(run.plain_url, ["VACUUM ANALYZE"])
    overdue = await run.value("SELECT count(*) FROM registration_forecasts WHERE overdue")
    n = args.requests
    with run.api() as server:
        async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=10) as client:

            def stats_path() -> str:
                market = rng.choice(MARKETS)
                return "/v1/stats/time-in-state?" + rng.choice(
                    [
                        "",
                        f"marketCode={market}",
                        f"marketCode={market}&status=IN_PROGRESS",
                        f"registrationType={TYPES[0]}&since=2026-06-01T00:00:00%2B00:00",
                    ]
                )

            def overdue_page() -> str:
                market = rng.choice(MARKETS)
                return rng.choice(
                    [
                        "/v1/registrations?overdue=true&limit=50",
                        f"/v1/registrations?overdue=true&marketCode={market}&limit=50",
                    ]
                )

            stats = [stats_path() for _ in range(n)]
            pages = [overdue_page() for _ in range(n // 2)]
            pages += await cursor_paths(client, n // 2, overdue_page)
            ids = [
                f"/v1/registrations/reg-{rng.randint(1, args.registrations):06d}" for _ in range(n)
            ]
            await measure(client, stats[:100] + pages[:100] + ids[:100], 1)  # warm-up
            return {
                "history_rows": history,
                "overdue": overdue,
                "refresh": timings,
                "time_in_state": await measure(client, stats, 1),
                "overdue_page": await measure(client, pages, 1),
                "registration_with_forecast": await measure(client, ids, 1),
            }


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--registrations", type=int, default=100_000)
    options.add_argument("--requests", type=int, default=2_000, help="per measure (2000)")
    args = options.parse_args()
    with stack("forecasts", args) as run:
        results = asyncio.run(run_reads(run))
    print(
        f"\n{results['history_rows']:,} history rows, {results['overdue']:,} overdue; forecasts "
        f"refresh {results['refresh']['first_run_s']} s (first), "
        f"{results['refresh']['second_run_s']} s (nothing changed); the event loop held at most "
        f"{results['refresh']['first_run_loop_held_ms']} and "
        f"{results['refresh']['second_run_loop_held_ms']} ms"
    )
    print(f"GET over HTTP, one at a time, {args.requests} requests each")
    rows: list[list[object]] = [["", "req/s", "p50 ms", "p99 ms", "max ms", "target p99"]]
    measured = ("time_in_state", "overdue_page", "registration_with_forecast")
    for name in measured:
        latency = results[name]["latency_ms"]
        figures_ms = [latency[key] for key in ("p50", "p99", "max")]
        rows.append(
            [name, results[name]["requests_per_s"], *figures_ms, verdict(latency["p99"], TARGET_MS)]
        )
    print(table(rows))
    met = all(results[name]["latency_ms"]["p99"] <= TARGET_MS for name in measured)
    problems = [] if results["overdue"] else ["no registration is overdue: the filter read nothing"]
    return finish(run, results, met, problems)


if __name__ == "__main__":
    sys.exit(main())
