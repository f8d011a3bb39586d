"""`python -m devtools sandbox history`: the plan is realistic (pure), and played into a running
stack (API, worker, the simulator as Sinch) it gives the time-in-state figures and forecasts."""

from __future__ import annotations

import asyncio
import random
import statistics
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from devtools.history import MARKETS, plan, play
from devtools.simulator import SimulatorControl
from tests.support.stack import API_TOKEN, running_stack

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_the_plan_has_fast_and_slow_markets_rejections_slow_customers_and_open_ones() -> None:
    lifecycles = plan(random.Random(3), 600, NOW)
    assert {c.market for c in lifecycles} == {m.code for m in MARKETS}

    def decision_days(market: str) -> float:
        return statistics.median(
            (c.steps[-1].at - c.created_at).total_seconds() / 86_400
            for c in lifecycles
            if c.market == market and c.decided
        )

    assert decision_days("GB") < decision_days("SE") < decision_days("DE") < decision_days("FR")
    outcomes = [c.steps[-1].status for c in lifecycles if c.decided]
    assert 0.05 < outcomes.count("REJECTED") / len(outcomes) < 0.35
    asked = [c for c in lifecycles if any(s.status.startswith("PENDING") for s in c.steps)]
    assert 0.15 < len(asked) / len(lifecycles) < 0.45
    assert any(not c.decided for c in lifecycles)
    for lifecycle in lifecycles:
        times = [lifecycle.created_at, *(s.at for s in lifecycle.steps)]
        assert times == sorted(times)
        assert times[-1] <= NOW


@pytest.mark.slow
def test_played_history_gives_figures_and_forecasts(tmp_path: Path) -> None:
    with running_stack(tmp_path, "history", FORECAST_INTERVAL_SECONDS="10") as stack:
        # As deployed: the delivery worker runs the forecasts cron.
        stack.start_api_and_worker(delivery_worker=True)
        lifecycles = plan(random.Random(5), 120, datetime.now(UTC))

        async def played() -> list[str]:
            async with SimulatorControl(stack.sim.base_url) as simulator:
                return await play(simulator, stack.api_url, lifecycles)

        ids = asyncio.run(played())
        api = httpx.Client(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
        )
        # The worker fetches each registration's document, then derives the figures at its next
        # forecasts run (every 10 s here).
        for _ in range(120):
            body = api.get("/v1/stats/time-in-state").json()
            decided = sum(d["samples"] for d in body["decisions"])
            if decided == sum(1 for c in lifecycles if c.decided):
                break
            asyncio.run(asyncio.sleep(1))
        else:
            pytest.fail(f"the figures never counted every decision: {body}")
        markets = {d["marketCode"] for d in body["decisions"]}
        assert markets == {c.market for c in lifecycles}
        progress = {i["marketCode"]: i for i in body["items"] if i["status"] == "IN_PROGRESS"}
        assert progress["GB"]["p50"] < progress["FR"]["p50"]
        # Every registration answers a forecast; those still waiting a basis that says what it
        # stands on.
        waiting = [i for i, c in zip(ids, lifecycles, strict=True) if not c.decided]
        for registration_id in waiting:
            forecast = api.get(f"/v1/registrations/{registration_id}").json()["forecast"]
            assert forecast["basis"] in {"history", "sinch-eta", "too-few-samples"}
