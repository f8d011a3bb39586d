"""The registration facts over real HTTP: read from the documents applied,
answered with every registration, and filtered on (`senderId`, `marketCode`, `tag`, several
`status`), with keyset pages that stay stable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.core.models import HistorySource
from app.registrations.service import apply_snapshot
from app.sinch.schemas import SinchRegistration
from tests.api.conftest import assert_problem
from tests.support.projects import settings_project

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).replace(tzinfo=None).isoformat()


def document(
    registration_id: str,
    status: str = "IN_PROGRESS",
    *,
    at: datetime = T0,
    senders: list[str] | None = None,
    tags: list[str] | None = None,
    market: str | None = "GB",
    **extra: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": registration_id,
        "status": status,
        "registrationType": "ALPHANUMERIC_SENDER_ID",
        "policyId": "pol-gb",
        "createTime": stamp(T0 - timedelta(hours=1)),
        "updateTime": stamp(at),
        "tags": tags if tags is not None else [],
        "requestDetails": [{"senderIdDetails": [{"senderId": s} for s in (senders or ["ACME"])]}],
        **extra,
    }
    if market is not None:
        doc["marketCode"] = market
    return doc


async def put(sessionmaker: Sessions, doc: dict[str, Any]) -> None:
    async with sessionmaker.begin() as session:
        await apply_snapshot(
            session,
            SinchRegistration.from_document(doc),
            project_id=await settings_project(session),
            source=HistorySource.REFETCH,
            event_id=None,
            fetched_at=utcnow(),
            now=utcnow(),
        )


async def ids(v1: httpx.AsyncClient, **params: Any) -> list[str]:
    """Every id the listing answers for `params`, walking its pages one item at a time."""
    found: list[str] = []
    cursor = None
    while True:
        query = {**params, "limit": 1} | ({"cursor": cursor} if cursor else {})
        response = await v1.get("/v1/registrations", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        found += [item["id"] for item in body["items"]]
        cursor = body["nextCursor"]
        if cursor is None:
            return found


async def test_every_answer_carries_the_facts(
    v1: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    await put(
        sessionmaker,
        document(
            "reg-1",
            "PENDING",
            senders=["ACME", "ACMEPAY"],
            tags=["#billing", "#eu"],
            market="SE",
            etaDate="2026-02-01",
            price={"currency": "EUR", "setupFeeAmount": "0.00"},
            logs=[  # Sinch's order is unknown: the newest by time is the reason
                {
                    "createTime": stamp(T0),
                    "message": "Upload a letter",
                    "registrationState": "PENDING",
                },
                {"createTime": stamp(T0 - timedelta(hours=1)), "message": "Submitted"},
            ],
        ),
    )
    body = (await v1.get("/v1/registrations/reg-1")).json()
    assert body["senderIds"] == ["ACME", "ACMEPAY"]
    assert body["marketCode"] == "SE"
    assert body["policyId"] == "pol-gb"
    assert body["tags"] == ["#billing", "#eu"]
    assert body["etaDate"] == "2026-02-01"
    assert body["price"] == {"currency": "EUR", "setupFeeAmount": "0.00"}
    assert datetime.fromisoformat(body["statusSince"]) == T0
    assert body["reason"] == {
        "message": "Upload a letter",
        "state": "PENDING",
        "at": "2026-01-01T10:00:00+00:00",
    }
    [listed] = (await v1.get("/v1/registrations", params={"senderId": "ACMEPAY"})).json()["items"]
    assert listed == body


async def test_status_since_moves_only_with_the_status(
    v1: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    await put(sessionmaker, document("reg-1", "IN_PROGRESS", at=T0))
    await put(sessionmaker, document("reg-1", "IN_PROGRESS", at=T0 + timedelta(hours=1)))
    body = (await v1.get("/v1/registrations/reg-1")).json()
    assert datetime.fromisoformat(body["statusSince"]) == T0
    assert datetime.fromisoformat(body["statusChangedAt"]) == T0 + timedelta(hours=1)

    await put(sessionmaker, document("reg-1", "APPROVED", at=T0 + timedelta(hours=2)))
    body = (await v1.get("/v1/registrations/reg-1")).json()
    assert datetime.fromisoformat(body["statusSince"]) == T0 + timedelta(hours=2)


async def test_is_acme_approved_in_gb(v1: httpx.AsyncClient, sessionmaker: Sessions) -> None:
    await put(sessionmaker, document("gb-acme", "APPROVED", senders=["ACME"], market="GB"))
    await put(sessionmaker, document("se-acme", "APPROVED", senders=["ACME"], market="SE"))
    await put(sessionmaker, document("gb-other", "APPROVED", senders=["OTHER"], market="GB"))
    await put(sessionmaker, document("gb-multi", "PENDING", senders=["X", "ACME"], market="GB"))

    assert await ids(v1, senderId="ACME", marketCode="GB") == ["gb-acme", "gb-multi"]
    assert await ids(v1, senderId="ACME", marketCode="GB", status="APPROVED") == ["gb-acme"]
    assert await ids(v1, senderId="acme") == []  # exactly, as Sinch spells it
    assert await ids(v1, marketCode="SE") == ["se-acme"]
    assert await ids(v1, status="PENDING,APPROVED", marketCode="GB") == [
        "gb-acme",
        "gb-multi",
        "gb-other",
    ]


async def test_tags_must_all_match_and_pages_stay_stable(
    v1: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    tag_sets = [["#a"], ["#a", "#b"], ["#b"], ["#a", "#b", "#c"], []]
    for number, tags in enumerate(tag_sets * 3):
        await put(sessionmaker, document(f"reg-{number:02d}", tags=tags))
    expected_a = [f"reg-{n:02d}" for n, tags in enumerate(tag_sets * 3) if "#a" in tags]
    expected_ab = [
        f"reg-{n:02d}" for n, tags in enumerate(tag_sets * 3) if {"#a", "#b"} <= set(tags)
    ]
    assert await ids(v1, tag="#a") == expected_a
    assert await ids(v1, tag=["#a", "#b"]) == expected_ab
    assert await ids(v1, tag=["#a", "#b", "#c", "#d"]) == []


async def test_lookups_follow_a_changed_document(
    v1: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    await put(sessionmaker, document("reg-1", senders=["OLD"], tags=["#old"], at=T0))
    await put(
        sessionmaker,
        document("reg-1", senders=["NEW1", "NEW2"], tags=["#new"], at=T0 + timedelta(seconds=5)),
    )
    assert await ids(v1, senderId="OLD") == []
    assert await ids(v1, tag="#old") == []
    assert await ids(v1, senderId="NEW2") == ["reg-1"]
    assert await ids(v1, tag="#new") == ["reg-1"]


async def test_odd_documents_are_kept_as_they_are_and_yield_what_can_be_read(
    v1: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    odd = document(
        "reg-odd",
        "REJECTED",
        market=None,
        tags=["#ok", "#n\x00l"],
        requestDetails={"senderIdDetails": {"senderId": "SOLO"}},  # objects, not lists
        logs=[
            {"message": "no time"},
            {"createTime": stamp(T0), "message": "x" * 10_000, "registrationState": "REJECTED"},
        ],
    )
    many = document(
        "reg-many",
        senders=[f"ACME{n:02d}" for n in range(60)] + ["AC\x00ME"],
        etaDate="not a date",
        price="twelve euros",
    )
    await put(sessionmaker, odd)
    await put(sessionmaker, many)

    body = (await v1.get("/v1/registrations/reg-odd")).json()
    assert body["sinch"] == odd  # kept exactly as Sinch sent it
    assert body["senderIds"] == ["SOLO"]
    assert body["tags"] == ["#ok"]
    assert body["marketCode"] is None
    assert body["reason"]["message"] == "x" * 10_000
    body = (await v1.get("/v1/registrations/reg-many")).json()
    assert body["senderIds"] == [f"ACME{n:02d}" for n in range(60)]
    assert (body["etaDate"], body["price"]) == (None, None)
    assert await ids(v1, senderId="ACME59") == ["reg-many"]


@pytest.mark.parametrize(
    "params",
    [
        {"status": ","},
        {"status": " , "},
        {"tag": ""},
        {"tag": [f"#t{n}" for n in range(21)]},
        {"senderId": ""},
        {"marketCode": "G\x01B"},
        {"senderId": "x" * 256},
    ],
    ids=["comma", "blank-status", "empty-tag", "too-many-tags", "empty-sender", "control", "long"],
)
async def test_bad_filters_are_422(v1: httpx.AsyncClient, params: dict[str, Any]) -> None:
    assert_problem(await v1.get("/v1/registrations", params=params), 422)
