"""`python -m devtools sandbox history`: months of realistic registration history, played into the
sandbox, so that the console's Aging page and `/v1/stats/time-in-state` have something to show.

Each registration is created at the simulator in the past and moved through its life with the
times it happened (Sinch's clock): markets at different speeds, some rejections, customers slow
to answer PENDING, and the youngest still waiting. Every move is logged in the document (as
Sinch's logs are), so the one callback delivered per registration, for its newest state, has the
service fetch a document that tells its whole life. The worker's forecasts cron then derives the
figures (at start-up and every `FORECAST_INTERVAL_SECONDS`).

`plan` is pure (a seeded random generator and a clock in, lifecycles out); `play` sends them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from devtools.simulator import SimulatorControl

CALLBACK_PATH = "/callbacks/sinch/registrations"
DAY: Final = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Market:
    code: str
    sinch_days: float
    """Median time Sinch takes to decide, waiting on Sinch only."""
    spread: float
    """Lognormal sigma of that time: how unpredictable the market is."""
    rejected: float
    """Share of decisions that are rejections."""
    eta_days: int
    """The `etaDate` Sinch gives, in days after submission."""
    weight: int


MARKETS: Final = (
    Market("GB", 3.0, 0.5, 0.08, 5, 5),
    Market("SE", 8.0, 0.6, 0.12, 10, 3),
    Market("DE", 14.0, 0.5, 0.15, 14, 3),
    Market("FR", 25.0, 0.7, 0.25, 21, 2),
    Market("US", 6.0, 1.0, 0.2, 7, 2),
)
PENDING_SHARE: Final = 0.3
"""Registrations Sinch asks the customer for more (PENDING or PENDING_ATTACHMENTS)."""
CUSTOMER_DAYS: Final = 4.0
"""Median time a customer takes to answer; some take weeks."""
HISTORY_DAYS: Final = 120


@dataclass(frozen=True, slots=True)
class Step:
    status: str
    at: datetime
    comment: str


@dataclass(frozen=True, slots=True)
class Lifecycle:
    market: str
    created_at: datetime
    eta: datetime
    steps: tuple[Step, ...]
    """The moves after IN_QUEUE that had happened by `now`, oldest first."""

    @property
    def decided(self) -> bool:
        return bool(self.steps) and self.steps[-1].status in ("APPROVED", "REJECTED")


def _days(rng: random.Random, median: float, sigma: float) -> timedelta:
    return rng.lognormvariate(0.0, sigma) * median * DAY


def plan(rng: random.Random, count: int, now: datetime) -> list[Lifecycle]:
    """`count` lifecycles submitted over the last `HISTORY_DAYS` days, cut at `now`."""
    lifecycles = []
    for _ in range(count):
        market = rng.choices(MARKETS, weights=[m.weight for m in MARKETS])[0]
        created = now - rng.uniform(0, HISTORY_DAYS) * DAY
        sinch = _days(rng, market.sinch_days, market.spread)
        queued = sinch * rng.uniform(0.1, 0.4)
        steps = [Step("IN_PROGRESS", created + queued, "Picked up by support")]
        moment = created + queued
        remaining = sinch - queued
        if rng.random() < PENDING_SHARE:
            state = rng.choice(("PENDING", "PENDING_ATTACHMENTS"))
            moment += remaining * rng.uniform(0.2, 0.6)
            steps.append(Step(state, moment, "Waiting for the customer's documents"))
            moment += _days(rng, CUSTOMER_DAYS, 1.2)
            steps.append(Step("IN_PROGRESS", moment, "The customer answered"))
            remaining *= 0.5
        outcome = "REJECTED" if rng.random() < market.rejected else "APPROVED"
        steps.append(Step(outcome, moment + remaining, f"Decision: {outcome.lower()}"))
        happened = tuple(step for step in steps if step.at <= now)
        eta = created + market.eta_days * DAY
        lifecycles.append(Lifecycle(market.code, created, eta, happened))
    return lifecycles


async def play(
    simulator: SimulatorControl, api_url: str, lifecycles: Sequence[Lifecycle]
) -> list[str]:
    """Create each lifecycle at the simulator and deliver its newest callback to the API (which
    fetches the document: its logs tell the rest). Answers the registrations' ids."""
    callback_url = api_url.rstrip("/") + CALLBACK_PATH
    ids = []
    newest_events = []
    for lifecycle in lifecycles:
        document = await simulator.create_registration(
            callback_url=callback_url,
            at=lifecycle.created_at,
            extra={"marketCode": lifecycle.market, "etaDate": lifecycle.eta.date().isoformat()},
        )
        event = None
        for step in lifecycle.steps:
            event = await simulator.transition(
                document["id"], step.status, at=step.at, comment=step.comment
            )
        ids.append(document["id"])
        if event is None:
            event = (await simulator.events(document["id"]))[-1]
        newest_events.append(event["eventId"])
    await simulator.deliver(event_ids=newest_events, concurrency=4)
    return ids
