"""Markets from Sinch's market details: the policy map is loaded by the worker (from the simulator
over real HTTP), kept in the database, looked up when a document names no market, and fills the
registrations applied before it was loaded. Unknown stays null."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from app.core.db import utcnow
from app.core.models import HistorySource
from app.registrations import markets
from app.registrations.service import apply_snapshot
from app.sinch.schemas import MarketVersion, SinchRegistration
from app.worker.context import WorkerContext
from app.worker.tasks import refresh_markets
from devtools.simulator import SimulatorControl
from tests.support.projects import settings_project
from tests.support.reads import registrations


def version(market: Any, *policies: Any) -> MarketVersion:
    document = {
        "marketCode": market,
        "registrationType": "ALPHANUMERIC_SENDER_ID",
        "specialConditions": {"chainedSpecialConditions": [{"policyId": p} for p in policies]},
    }
    found = MarketVersion.from_document(document)
    assert found is not None
    return found


def test_the_map_leaves_out_what_it_cannot_be_sure_of() -> None:
    found = markets.policy_markets(
        [
            version("GB", "pol-gb", "pol-both"),
            version("SE", "pol-se", "pol-both"),  # one policy in two markets: ambiguous
            version("GB", "pol-gb"),  # the same answer twice is no conflict
            version(None, "pol-none"),
            version("X" * 40, "pol-long-market"),
            version("DE", "p" * 300),
        ]
    )
    assert {policy: m.market_code for policy, m in found.items()} == {
        "pol-gb": "GB",
        "pol-se": "SE",
    }


async def apply(ctx: WorkerContext, document: dict[str, Any]) -> None:
    async with ctx["sessionmaker"].begin() as session:
        await apply_snapshot(
            session,
            SinchRegistration.from_document(document),
            project_id=await settings_project(session),
            source=HistorySource.RECONCILE,
            event_id=None,
            fetched_at=utcnow(),
            now=utcnow(),
        )


async def test_policies_give_markets_before_and_after_the_map_is_loaded(
    sim: SimulatorControl, worker_ctx: WorkerContext
) -> None:
    gb = await sim.create_registration(policy_id="sim-policy-gb-alphanumeric")
    se = await sim.create_registration(
        policy_id="sim-policy-se-alphanumeric-multi", sender_ids=["ACME", "ACMEPAY"]
    )
    unlisted = await sim.create_registration(policy_id="sim-policy-unlisted")
    own = await sim.create_registration(
        policy_id="sim-policy-gb-alphanumeric", extra={"marketCode": "IE"}
    )
    for document in (gb, se, unlisted, own):
        await apply(worker_ctx, document)  # before the map: only the document's own market
    before = {r.id: r.market_code for r in await registrations(worker_ctx["settings"])}
    assert before == {gb["id"]: None, se["id"]: None, unlisted["id"]: None, own["id"]: "IE"}

    assert await refresh_markets(worker_ctx) == 6  # GB, SE, DE, FR, US and AU policies
    assert (await sim.stats())["marketDetails"] >= 1
    after = {r.id: r.market_code for r in await registrations(worker_ctx["settings"])}
    assert after == {gb["id"]: "GB", se["id"]: "SE", unlisted["id"]: None, own["id"]: "IE"}
    expected = {d["id"]: (await sim.facts(d["id"]))["marketCode"] for d in (gb, se, unlisted, own)}
    assert after == expected

    # Loaded once a day: a second run does not ask Sinch again.
    asked = (await sim.stats())["marketDetails"]
    assert await refresh_markets(worker_ctx) == -1
    assert (await sim.stats())["marketDetails"] == asked
    project = worker_ctx["settings"].settings_project_id
    async with worker_ctx["sessionmaker"]() as session:
        assert not await markets.is_due(session, project, utcnow())
        assert await markets.is_due(session, project, utcnow() + timedelta(days=1, seconds=1))

    # A registration applied now finds its market in the map.
    later = await sim.create_registration(policy_id="sim-policy-se-alphanumeric-multi")
    await apply(worker_ctx, later)
    [registration] = [r for r in await registrations(worker_ctx["settings"]) if r.id == later["id"]]
    assert registration.market_code == "SE"


async def test_sinch_unavailable_leaves_the_map_as_it_was(
    sim: SimulatorControl, worker_ctx: WorkerContext
) -> None:
    await sim.inject_fault("status", status=503, count=50)
    assert await refresh_markets(worker_ctx) == -1
    project = worker_ctx["settings"].settings_project_id
    async with worker_ctx["sessionmaker"]() as session:
        assert await markets.is_due(session, project, utcnow())
