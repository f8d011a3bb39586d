"""`GET /v1/stats/time-in-state`, a registration's `forecast` and `overdue=true`, over real HTTP,
after the forecasts cron's work (run here with an injected clock)."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes import repository as changes
from app.core.db import utcnow
from app.core.models import HistorySource, Project
from app.forecasts import service
from app.registrations.service import apply_snapshot
from app.sinch.schemas import SinchRegistration
from tests.api.conftest import assert_problem, put_document
from tests.forecasts.test_refresh import DAY, NOW, document, gb_history
from tests.support.projects import settings_project

Sessions = async_sessionmaker[AsyncSession]


async def seeded(sessionmaker: Sessions) -> None:
    await gb_history(sessionmaker)
    await put_document(
        sessionmaker,
        document("gb-late", "GB", [("IN_QUEUE", NOW - 40 * DAY), ("IN_PROGRESS", NOW - 39 * DAY)]),
    )
    await put_document(
        sessionmaker,
        document(
            "gb-pending",
            "GB",
            [("IN_QUEUE", NOW - 4 * DAY), ("PENDING", NOW - 3 * DAY)],
            etaDate="2026-07-30",
        ),
    )
    await put_document(
        sessionmaker, document("fr-1", "FR", [("IN_QUEUE", NOW - 2 * DAY)], etaDate="2026-06-20")
    )
    await put_document(sessionmaker, document("de-1", "DE", [("IN_QUEUE", NOW - 2 * DAY)]))
    await service.refresh(sessionmaker, now=NOW)


async def test_time_in_state_per_market_and_state(
    v1: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    before = await v1.get("/v1/stats/time-in-state")
    assert before.status_code == 200
    assert before.json()["items"] == []
    assert before.json()["computedAt"] is None

    await seeded(sessionmaker)
    body = (await v1.get("/v1/stats/time-in-state")).json()
    items = {(i["marketCode"], i["status"]): i for i in body["items"]}
    assert set(items[("GB", "IN_PROGRESS")]) == {
        "projectId",
        "marketCode",
        "registrationType",
        "status",
        "p50",
        "p85",
        "p95",
        "samples",
        "open",
    }
    progress = items[("GB", "IN_PROGRESS")]
    assert (progress["samples"], progress["open"]) == (25, 1)
    assert progress["registrationType"] == "ALPHANUMERIC_SENDER_ID"
    assert 14 * 86_400 <= progress["p50"] <= 14 * 86_400 * 1.1
    assert progress["p50"] <= progress["p85"] <= progress["p95"]
    # Waiting on the customer is a state of its own: one stay, still running, no figure.
    assert items[("GB", "PENDING")] | {} == {
        **items[("GB", "PENDING")],
        "samples": 0,
        "open": 1,
        "p50": None,
    }
    # A market with one stay still running: nothing to tell yet, and said so.
    assert items[("DE", "IN_QUEUE")]["p50"] is None
    assert items[("DE", "IN_QUEUE")]["open"] == 1

    decisions = {d["marketCode"]: d for d in body["decisions"]}
    assert decisions["GB"]["samples"] == 25
    # Every decision an approval, but gb-late still waits longer than any decided one did: its
    # outcome is unknown, so the share approved is known only to be at least 25/26.
    assert 25 / 26 - 1e-9 <= decisions["GB"]["approvedShare"] < 1.0
    assert decisions["FR"]["samples"] == 0
    assert decisions["FR"]["p50"] is None

    only = (
        await v1.get(
            "/v1/stats/time-in-state",
            params={
                "marketCode": "GB",
                "status": "IN_QUEUE",
                "registrationType": "ALPHANUMERIC_SENDER_ID",
            },
        )
    ).json()
    assert [(i["marketCode"], i["status"]) for i in only["items"]] == [("GB", "IN_QUEUE")]
    assert [d["marketCode"] for d in only["decisions"]] == ["GB"]

    # A window: stays that began in the month of `since` or later. The 25 decided GB
    # registrations began 60 days before NOW, gb-late 40 days before: a window from 35 days
    # before holds the recent ones only.
    since = (NOW - timedelta(days=35)).replace(day=1) + timedelta(days=32)
    recent = (
        await v1.get(
            "/v1/stats/time-in-state",
            params={"marketCode": "GB", "since": since.replace(day=1).isoformat()},
        )
    ).json()
    assert recent["since"] == since.replace(day=1).date().isoformat()
    statuses = {i["status"]: (i["samples"], i["open"]) for i in recent["items"]}
    # In June only gb-pending began stays in GB: its queue (ended) and its PENDING (running).
    assert statuses == {"IN_QUEUE": (1, 0), "PENDING": (0, 1)}


async def test_bad_filters_are_problems(v1: httpx.AsyncClient) -> None:
    for params in (
        {"since": "yesterday"},
        {"since": "2026-06-01T00:00:00"},  # no offset
        {"marketCode": ""},
        {"status": "x" * 300},
    ):
        assert_problem(await v1.get("/v1/stats/time-in-state", params=params), 422)
    assert_problem(await v1.get("/v1/registrations", params={"overdue": "perhaps"}), 422)


async def test_forecast_on_registrations_and_the_overdue_filter(
    v1: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    await seeded(sessionmaker)
    late = (await v1.get("/v1/registrations/gb-late")).json()["forecast"]
    assert late["overdue"] is True
    assert late["basis"] == "history"
    assert late["samples"] == 25
    assert late["waitingOn"] == "sinch"
    assert late["waitingOnSinchSeconds"] == 40 * 86_400
    assert set(late["decisionBy"]) == {"p50", "p85"}

    pending = (await v1.get("/v1/registrations/gb-pending")).json()["forecast"]
    assert pending["waitingOn"] == "customer"
    assert pending["waitingOnSinchSeconds"] == 86_400
    assert pending["waitingOnCustomerSeconds"] == 3 * 86_400
    assert pending["overdue"] is False

    fr = (await v1.get("/v1/registrations/fr-1")).json()["forecast"]
    assert (fr["basis"], fr["samples"], fr["overdue"]) == ("sinch-eta", 0, False)
    assert fr["decisionBy"] == {"p50": "2026-06-21T00:00:00+00:00", "p85": None}
    de = (await v1.get("/v1/registrations/de-1")).json()["forecast"]
    assert (de["basis"], de["decisionBy"]) == ("too-few-samples", {"p50": None, "p85": None})
    decided = (await v1.get("/v1/registrations/gb-03")).json()["forecast"]
    assert (decided["basis"], decided["overdue"], decided["waitingOn"]) == ("decided", False, None)

    overdue = (await v1.get("/v1/registrations", params={"overdue": "true"})).json()
    assert [r["id"] for r in overdue["items"]] == ["gb-late"]
    assert overdue["items"][0]["forecast"]["overdue"] is True
    not_overdue = await v1.get("/v1/registrations", params={"overdue": "false", "limit": 500})
    assert "gb-late" not in {r["id"] for r in not_overdue.json()["items"]}
    assert len(not_overdue.json()["items"]) == 28  # 29 kept, one overdue
    # With the other filters, and paged.
    paged = (
        await v1.get(
            "/v1/registrations", params={"overdue": "true", "marketCode": "GB", "limit": 1}
        )
    ).json()
    assert [r["id"] for r in paged["items"]] == ["gb-late"]


async def test_becoming_overdue_is_a_change_on_the_feed(
    v1: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    await seeded(sessionmaker)
    async with sessionmaker.begin() as session:
        await changes.number(session)
    items = (await v1.get("/v1/changes", params={"limit": 500})).json()["items"]
    overdue = [item for item in items if item["kind"] == "overdue"]
    assert [
        (i["registrationId"], i["fromStatus"], i["toStatus"], i["source"]) for i in overdue
    ] == [("gb-late", "IN_PROGRESS", "IN_PROGRESS", "forecast")]
    assert overdue[0]["at"] == NOW.isoformat()
    assert overdue[0]["registration"]["status"] == "IN_PROGRESS"


async def test_each_project_has_its_own_figures(
    v1: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    await seeded(sessionmaker)
    async with sessionmaker.begin() as session:
        session.add(Project(id="other", name="Other", created_at=utcnow(), updated_at=utcnow()))
    async with sessionmaker.begin() as session:
        await apply_snapshot(
            session,
            SinchRegistration.from_document(
                document("other-1", "GB", [("IN_QUEUE", NOW - 5 * DAY), ("IN_PROGRESS", NOW)])
            ),
            project_id="other",
            source=HistorySource.RECONCILE,
            event_id=None,
            fetched_at=utcnow(),
            now=utcnow(),
        )
    await service.refresh(sessionmaker, now=NOW)
    other = (await v1.get("/v1/stats/time-in-state", params={"projectId": "other"})).json()
    assert {
        (i["projectId"], i["marketCode"], i["status"], i["samples"], i["open"])
        for i in other["items"]
    } == {
        ("other", "GB", "IN_QUEUE", 1, 0),
        ("other", "GB", "IN_PROGRESS", 0, 1),
    }
    assert [(d["projectId"], d["samples"], d["open"]) for d in other["decisions"]] == [
        ("other", 0, 1)
    ]
    everything = (await v1.get("/v1/stats/time-in-state")).json()
    assert {i["projectId"] for i in everything["items"]} == {
        "other",
        await _settings_project(sessionmaker),
    }
    # Its forecast stands on its own project's decisions (none), not on the other's 25.
    forecast = (await v1.get("/v1/registrations/other-1")).json()["forecast"]
    assert (forecast["basis"], forecast["samples"]) == ("too-few-samples", 0)


async def _settings_project(sessionmaker: Sessions) -> str:
    async with sessionmaker() as session:
        return await settings_project(session)


def _forecasts_age(metrics: str) -> float | None:
    ages = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("forecasts_computed_age_seconds ")
    ]
    return ages[0] if ages else None


async def test_metrics_say_how_old_the_forecasts_are(
    v1: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    """An operator alerts on the forecasts' age: it grows when no process runs the cron (with
    DELIVERY_WORKER=apart, when no delivery worker runs)."""
    assert _forecasts_age((await v1.get("/metrics")).text) is None  # no figure yet: not shown
    await seeded(sessionmaker)  # figures computed as of NOW, months ago
    # The age is the API's clock at the scrape minus the figures' `computed_at`: between the
    # clock's readings just before and just after the scrape.
    before = utcnow()
    age = _forecasts_age((await v1.get("/metrics")).text)
    after = utcnow()
    assert age is not None
    assert (before - NOW).total_seconds() <= age <= (after - NOW).total_seconds()
    computed = utcnow()
    await service.refresh(sessionmaker, now=computed)
    fresh = _forecasts_age((await v1.get("/metrics")).text)
    assert fresh is not None and 0 <= fresh <= (utcnow() - computed).total_seconds()
