"""Benchmark of the operator console's pages on a large PostgreSQL database.

Fills a fresh database as `bench.api` does (100,000 registrations, 1,000,000 events, one in a
thousand failed), folds the counts once as the worker's `fold_counts` cron does, serves `uvicorn
app.main:app`, signs in, and GETs each page `--requests` times, one at a time (target p99 <= 150
ms): the overview, registrations by status and searched by sender ID, a registration, events
(all, failed, by outcome), an event, the "replay all failed" confirmation, the subscriptions.

Run from the repository root: `.venv/bin/python -m bench.console` (see bench/README.md).
"""

from __future__ import annotations

import asyncio
import random
import re
import sys
from collections.abc import Callable
from typing import Any

import httpx

from app.core.db import create_engine, create_sessionmaker, utcnow
from app.core.settings import Settings
from app.counts import service as counts
from bench import api
from bench.support import TOKEN, Stack, finish, stack, table, verdict

TARGET_P99_MS = 150.0


async def run_pages(run: Stack) -> dict[str, Any]:
    args, rng = run.args, random.Random(7)
    await api.fill(run)
    engine = create_engine(Settings(_env_file=None, database_url=run.url))
    print(f"  folded {await counts.fold(create_sessionmaker(engine), utcnow()):,} deltas")
    await engine.dispose()
    regs = "/console/registrations"
    pages: dict[str, Callable[[], str]] = {
        "overview": lambda: "/console",
        "registrations_by_status": lambda: (
            f"/console/registrations?status={rng.choice(api.STATES)}"
        ),
        "registrations_search_sender_id": lambda: f"{regs}?q=ACME{rng.randrange(api.BRANDS):04d}",
        "registration": lambda: (
            f"/console/registrations/reg-{rng.randint(1, args.registrations):06d}"
        ),
        "events": lambda: "/console/events",
        "events_failed": lambda: "/console/events?state=failed",
        "events_by_outcome": lambda: "/console/events?outcome=applied%3Atrusted",
        "event": lambda: f"/console/events/{rng.randint(1, args.events)}",
        "replay_failed_confirmation": lambda: "/console/events/replay-failed",
        "subscriptions": lambda: "/console/subscriptions",
    }
    with run.api() as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            form = await client.get("/console/sign-in")
            marker = re.search(r'name="marker" value="([^"]+)"', form.text)
            signed_in = await client.post(
                "/console/sign-in", data={"token": TOKEN, "marker": marker[1] if marker else ""}
            )
            if signed_in.status_code != 303:
                raise RuntimeError(f"sign-in answered {signed_in.status_code}")
            await api.measure(client, [page() for page in pages.values() for _ in range(5)], 1)
            return {
                name: await api.measure(client, [page() for _ in range(args.requests)], 1)
                for name, page in pages.items()
            }


def main() -> int:
    options = api.options(__doc__)
    options.set_defaults(requests=300)
    args = options.parse_args()
    with stack("console", args) as run:
        results = asyncio.run(run_pages(run))
    print(f"\nconsole pages over HTTP, one at a time, {args.requests} requests each")
    rows: list[list[object]] = [["", "p50 ms", "p99 ms", "max ms", "target p99"]]
    for name, figures in results.items():
        latency = figures["latency_ms"]
        figures_ms = [latency[key] for key in ("p50", "p99", "max")]
        rows.append([name, *figures_ms, verdict(latency["p99"], TARGET_P99_MS)])
    print(table(rows))
    met = all(figures["latency_ms"]["p99"] <= TARGET_P99_MS for figures in results.values())
    return finish(run, results, met, [])


if __name__ == "__main__":
    sys.exit(main())
