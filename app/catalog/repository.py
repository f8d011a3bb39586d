"""The one writer of `catalog_markets`, `catalog_policies` and `policy_changes`. Nothing here
commits: the caller owns the transaction.

`store` replaces one project's catalog with what a refresh fetched: markets no longer served are
deleted, a policy no longer named by any market is kept (registrations still name it), and a
policy whose document changed gets a `policy_changes` row (app/catalog/diff.py) and a
`policy_changed` change on the feed for each of the project's registrations under it, in this
same transaction (its subscribers' deliveries come when the change is numbered).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog.diff import diff, digest, is_empty
from app.changes import repository as changes
from app.core.models import (
    CATALOG_MARKETS,
    CATALOG_POLICIES,
    POLICY_CHANGES,
    REGISTRATIONS,
    ChangeKind,
    ChangeSource,
)

_LOCK: Final = 0x0CA7_A106
"""Advisory lock (with the project's hash): one refresh of a project writes at a time."""


@dataclass(frozen=True, slots=True)
class FetchedMarket:
    market_code: str
    registration_type: str
    market_name: str | None
    available: bool
    versions: list[Any]
    policy_ids: list[str]


@dataclass(frozen=True, slots=True)
class FetchedPolicy:
    policy_id: str
    market_code: str | None
    registration_type: str | None
    document: dict[str, Any]


@dataclass(slots=True)
class StoreReport:
    markets: int = 0
    policies: int = 0
    changed: list[str] = field(default_factory=list)
    """Policies whose document changed (a `policy_changes` row each)."""
    announced: int = 0
    """Changes put on the feed (one per registration of a changed policy)."""


def sort_key(market_code: str, registration_type: str, project_id: str) -> str:
    return f"{market_code}:{registration_type}:{project_id}"


async def _store_markets(
    session: AsyncSession, project_id: str, markets: list[FetchedMarket], now: datetime
) -> None:
    table = CATALOG_MARKETS
    kept = {
        (row.market_code, row.registration_type): row
        for row in await session.execute(select(table).where(table.c.project_id == project_id))
    }
    fetched = {(m.market_code, m.registration_type) for m in markets}
    gone = [key for key in kept if key not in fetched]
    for market_code, registration_type in gone:
        await session.execute(
            delete(table).where(
                table.c.project_id == project_id,
                table.c.market_code == market_code,
                table.c.registration_type == registration_type,
            )
        )
    for market in markets:
        values = {
            "market_name": market.market_name,
            "available": market.available,
            "versions": market.versions,
            "policy_ids": market.policy_ids,
        }
        row = kept.get((market.market_code, market.registration_type))
        if row is None:
            await session.execute(
                insert(table).values(
                    project_id=project_id,
                    market_code=market.market_code,
                    registration_type=market.registration_type,
                    sort_key=sort_key(market.market_code, market.registration_type, project_id),
                    refreshed_at=now,
                    updated_at=now,
                    **values,
                )
            )
            continue
        same = all(getattr(row, name) == value for name, value in values.items())
        await session.execute(
            update(table)
            .where(
                table.c.project_id == project_id,
                table.c.market_code == market.market_code,
                table.c.registration_type == market.registration_type,
            )
            .values(refreshed_at=now, **({} if same else {"updated_at": now, **values}))
        )


async def announce(session: AsyncSession, project_id: str, policy_id: str, *, now: datetime) -> int:
    """A `policy_changed` change on the feed for each of the project's registrations under
    `policy_id` (their status unchanged); answers how many."""
    rows = await session.execute(
        select(REGISTRATIONS.c.id, REGISTRATIONS.c.status).where(
            REGISTRATIONS.c.project_id == project_id, REGISTRATIONS.c.policy_id == policy_id
        )
    )
    by_status: dict[str, list[str]] = defaultdict(list)
    for registration_id, status in rows:
        by_status[status].append(registration_id)
    for status, ids in by_status.items():
        await changes.record(
            session,
            ids,
            kind=ChangeKind.POLICY_CHANGED.value,
            from_status=status,
            at=now,
            source=ChangeSource.CATALOG.value,
            now=now,
        )
    return sum(len(ids) for ids in by_status.values())


async def _store_policies(
    session: AsyncSession,
    project_id: str,
    policies: list[FetchedPolicy],
    now: datetime,
    report: StoreReport,
) -> None:
    table = CATALOG_POLICIES
    kept = {
        row.policy_id: row
        for row in await session.execute(
            select(table.c.policy_id, table.c.digest, table.c.document).where(
                table.c.project_id == project_id
            )
        )
    }
    for policy in policies:
        document = policy.document
        status = document.get("policyStatus")
        values: dict[str, object] = {
            "market_code": policy.market_code,
            "registration_type": policy.registration_type,
            "status": status if isinstance(status, str) else None,
            "refreshed_at": now,
        }
        new_digest = digest(document)
        row = kept.get(policy.policy_id)
        where = (table.c.project_id == project_id, table.c.policy_id == policy.policy_id)
        if row is not None and row.digest == new_digest:
            await session.execute(update(table).where(*where).values(**values))
            continue
        # A new or changed document: kept with its digest and the time it changed.
        values.update(document=document, digest=new_digest, changed_at=now)
        if row is None:
            key = {"project_id": project_id, "policy_id": policy.policy_id}
            await session.execute(insert(table).values(**key, **values))
            continue
        await session.execute(update(table).where(*where).values(**values))
        changed = diff(row.document, document)
        if is_empty(changed):  # only the version id moved
            continue
        announced = await announce(session, project_id, policy.policy_id, now=now)
        await session.execute(
            insert(POLICY_CHANGES).values(
                project_id=project_id,
                policy_id=policy.policy_id,
                changed_at=now,
                diff=changed,
                registrations=announced,
            )
        )
        report.changed.append(policy.policy_id)
        report.announced += announced


async def store(
    session: AsyncSession,
    project_id: str,
    markets: list[FetchedMarket],
    policies: list[FetchedPolicy],
    *,
    now: datetime,
) -> StoreReport:
    """Replace project `project_id`'s catalog with what was fetched (module docstring)."""
    await session.execute(select(func.pg_advisory_xact_lock(_LOCK, func.hashtext(project_id))))
    report = StoreReport(markets=len(markets), policies=len(policies))
    await _store_markets(session, project_id, markets, now)
    await _store_policies(session, project_id, policies, now, report)
    return report
