"""Which market a policy belongs to, from Sinch's market details list. The one writer of
`market_policies`.

A registration document has no documented top-level `marketCode`; Sinch links a policy to its
market in GET /markets/details (`marketVersions[].specialConditions.chainedSpecialConditions[]
.policyId`; docs/sinch.md). That list rarely changes, so it is fetched at most once a day
(`MAX_AGE`) by the worker and kept here; applying a snapshot looks a policy up in it, without a
network call. A policy the list does not name, or names under two markets, has no market: unknown
stays null, never a guess.

A snapshot applied while the map is being replaced could read the old map and commit after the
registrations were filled from the new one. `lock_for_lookup` (a shared lock on the map's mark row,
which `refresh` updates first) orders the two.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.models import MARKET_POLICIES, SYNC_STATE
from app.registrations import repository
from app.registrations.facts import MAX_MARKET_CODE, MAX_STATE, MAX_TEXT

if TYPE_CHECKING:
    from app.sinch.client import SinchClient
    from app.sinch.schemas import MarketVersion

log = logging.getLogger(__name__)

MAX_AGE: Final = timedelta(days=1)
MARK: Final = "market_policies"
"""The `sync_state` row holding when the map was last loaded (created by migration 0005)."""


@dataclass(frozen=True, slots=True)
class Policy:
    market_code: str
    registration_type: str | None


def policy_markets(versions: Iterable[MarketVersion]) -> dict[str, Policy]:
    """Policy id -> its market, from Sinch's market versions. Pure. A policy named under two
    different markets is left out (ambiguous), as is anything too long to be an id or a code."""
    found: dict[str, Policy] = {}
    ambiguous: set[str] = set()
    for version in versions:
        code = version.market_code
        if not code or len(code) > MAX_MARKET_CODE:
            continue
        for policy_id in version.policy_ids:
            if not policy_id or len(policy_id) > MAX_TEXT:
                continue
            known = found.get(policy_id)
            if known is not None and known.market_code != code:
                ambiguous.add(policy_id)
            kind = version.registration_type
            kind = kind if kind is not None and len(kind) <= MAX_STATE else None
            found.setdefault(policy_id, Policy(code, kind))
    return {policy: market for policy, market in found.items() if policy not in ambiguous}


async def lock_for_lookup(session: AsyncSession) -> None:
    """Hold the map still until this transaction ends (see the module docstring)."""
    await session.execute(
        select(SYNC_STATE.c.name).where(SYNC_STATE.c.name == MARK).with_for_update(read=True)
    )


async def market_of(session: AsyncSession, policy_id: str | None) -> str | None:
    """The market of `policy_id` as the map knows it; None when it does not."""
    if policy_id is None:
        return None
    await lock_for_lookup(session)
    result = await session.execute(
        select(MARKET_POLICIES.c.market_code).where(MARKET_POLICIES.c.policy_id == policy_id)
    )
    return result.scalar_one_or_none()


async def is_due(session: AsyncSession, project_id: str, now: datetime) -> bool:
    """Whether the map is a day old (or never loaded) as far as project `project_id` loaded it."""
    loaded = await repository.get_mark(session, project_id, MARK)
    return loaded is None or now - loaded >= MAX_AGE


@dataclass(frozen=True, slots=True)
class RefreshReport:
    policies: int
    registrations_filled: int


async def refresh(
    sessionmaker: async_sessionmaker[AsyncSession], sinch: SinchClient, *, now: datetime
) -> RefreshReport:
    """Load Sinch's market details (outside any transaction), replace the map with them and give
    registrations without a market their policy's. Raises the Sinch client's errors (the map is
    then left as it was)."""
    markets = policy_markets([version async for version in sinch.list_market_details()])
    if not markets:
        # An empty list says nothing about policies we knew: keep the map rather than lose it.
        log.warning("market details named no policy; the market map stays as it was")
        return RefreshReport(policies=0, registrations_filled=0)
    async with sessionmaker.begin() as session:
        # First: this waits for snapshots that read the old map, and holds new ones back.
        await repository.set_mark(session, sinch.project_id, MARK, now, now=now)
        await session.execute(delete(MARKET_POLICIES))
        if markets:
            await session.execute(
                insert(MARKET_POLICIES),
                [
                    {
                        "policy_id": policy_id,
                        "market_code": policy.market_code,
                        "registration_type": policy.registration_type,
                        "updated_at": now,
                    }
                    for policy_id, policy in markets.items()
                ],
            )
        filled = await repository.fill_markets(session, now=now)
    log.info(
        "market details loaded",
        extra={"policies": len(markets), "registrations_filled": filled},
    )
    return RefreshReport(policies=len(markets), registrations_filled=filled)
