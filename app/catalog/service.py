"""The catalog's operations: refreshing a project's markets and policies from Sinch (the worker's
daily cron, `python -m app catalog refresh`), and checking a registration request against the
stored policy (`check_request`: `POST /v1/registrations?validateOnly=true`, and the create and
update routes before they call Sinch).

A refresh reads, with the project's own Sinch client, every registration type's available
markets (GET /markets/availability), the market versions (GET /markets/details) and each policy
they name (GET /policies/{id}), all before its one transaction (app/catalog/repository.py
`store`), so a slow Sinch holds no lock. A policy Sinch no longer finds (404) is left as it was
kept; any other Sinch error ends the refresh with nothing written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.catalog import queries
from app.catalog.check import CheckResult, FieldError, check
from app.catalog.repository import FetchedMarket, FetchedPolicy, StoreReport, store
from app.catalog.schemas import CheckOut
from app.core.problems import ProblemError
from app.registrations import repository as registrations
from app.sinch.client import REGISTRATION_TYPES
from app.sinch.errors import SinchNotFoundError

if TYPE_CHECKING:
    from app.sinch.client import SinchClient

log = logging.getLogger(__name__)

POLICY_FETCHES: Final = 8
"""Policies fetched at once: a market list names hundreds, one GET each."""
MARK: Final = "catalog"
"""The `sync_state` row of each project holding when its catalog was last refreshed."""


@dataclass(frozen=True, slots=True)
class Fetched:
    markets: list[FetchedMarket]
    policies: list[FetchedPolicy]
    missing: list[str]
    """Policies a market version names that Sinch answered 404 for."""


async def fetch(sinch: SinchClient) -> Fetched:
    """Everything a refresh stores, read from Sinch (module docstring). Raises the client's
    errors but a policy's 404."""
    available: dict[tuple[str, str], str | None] = {}
    for kind in REGISTRATION_TYPES:
        for market in await sinch.list_market_availability(kind):
            available[(market.market_code, kind)] = market.market_name
    versions: dict[tuple[str, str], list[Any]] = {}
    policy_ids: dict[tuple[str, str], list[str]] = {}
    policy_market: dict[str, tuple[str, str]] = {}
    async for version in sinch.list_market_details():
        if not version.market_code or not version.registration_type:
            continue
        key = (version.market_code, version.registration_type)
        versions.setdefault(key, []).append(
            version.model_dump(by_alias=True, exclude={"policy_ids"})
        )
        named = policy_ids.setdefault(key, [])
        for policy_id in version.policy_ids:
            if policy_id not in named:
                named.append(policy_id)
            policy_market.setdefault(policy_id, key)
    markets = [
        FetchedMarket(
            market_code=code,
            registration_type=kind,
            market_name=available.get((code, kind)),
            available=(code, kind) in available,
            versions=versions.get((code, kind), []),
            policy_ids=policy_ids.get((code, kind), []),
        )
        for code, kind in sorted(available.keys() | versions.keys())
    ]
    gate = asyncio.Semaphore(POLICY_FETCHES)

    async def one(policy_id: str) -> dict[str, Any] | None:
        async with gate:
            try:
                return await sinch.get_policy(policy_id)
            except SinchNotFoundError:
                return None

    # A TaskGroup: the first error cancels the other fetches (the refresh then writes nothing),
    # and is raised as itself, as the client raised it.
    try:
        async with asyncio.TaskGroup() as group:
            tasks = {pid: group.create_task(one(pid)) for pid in policy_market}
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    policies: list[FetchedPolicy] = []
    missing: list[str] = []
    for policy_id, (code, kind) in policy_market.items():
        document = tasks[policy_id].result()
        if document is None:
            missing.append(policy_id)
        else:
            policies.append(FetchedPolicy(policy_id, code, kind, document))
    return Fetched(markets, policies, missing)


async def refresh(
    sessionmaker: async_sessionmaker[AsyncSession], sinch: SinchClient, *, now: datetime
) -> StoreReport:
    """Fetch project `sinch.project_id`'s catalog and store it (module docstring); its mark is
    set in the same transaction. Raises the Sinch client's errors (the catalog then stays as it
    was)."""
    fetched = await fetch(sinch)
    if fetched.missing:
        log.warning(
            "Sinch has no policy %s (named by its market details); kept as it was",
            ", ".join(fetched.missing),
        )
    async with sessionmaker.begin() as session:
        report = await store(session, sinch.project_id, fetched.markets, fetched.policies, now=now)
        await registrations.set_mark(session, sinch.project_id, MARK, now, now=now)
    log.info(
        "catalog refreshed",
        extra={
            "project_id": sinch.project_id,
            "markets": report.markets,
            "policies": report.policies,
            "policies_changed": len(report.changed),
            "changes_announced": report.announced,
        },
    )
    return report


async def is_due(
    session: AsyncSession, project_id: str, now: datetime, *, interval_seconds: int
) -> bool:
    """Whether project `project_id`'s catalog is `interval_seconds` old, or was never fetched."""
    refreshed = await registrations.get_mark(session, project_id, MARK)
    return refreshed is None or (now - refreshed).total_seconds() >= interval_seconds


UNKNOWN_POLICY = (
    "This project's catalog has no such policy: see GET /v1/markets for its policies, or "
    "refresh the catalog (python -m app catalog refresh)."
)


async def check_request(
    session: AsyncSession, project_id: str, body: Mapping[str, Any]
) -> CheckResult:
    """Check a registration request (`body`, the JSON object a caller sent) against its policy
    (`body.policyId`) as project `project_id`'s catalog keeps it (app/catalog/check.py). A
    request without a policy id, or naming a policy the catalog lacks, has one error at
    `$.policyId`. The caller has made sure `project_id` is one its token may see."""
    policy_id = body.get("policyId")
    if not isinstance(policy_id, str) or not policy_id:
        return CheckResult(
            policy_id=None,
            project_id=project_id,
            errors=[FieldError("$.policyId", "required", "This field is required.")],
        )
    row = await queries.policy(session, policy_id, frozenset({project_id}))
    if row is None:
        return CheckResult(
            policy_id=policy_id,
            project_id=project_id,
            errors=[FieldError("$.policyId", "known", UNKNOWN_POLICY)],
        )
    return check(
        row.document,
        body,
        policy_id=policy_id,
        project_id=project_id,
        market_code=row.market_code,
        registration_type=row.registration_type,
    )


def invalid_request(result: CheckResult) -> ProblemError:
    """The 422 problem of a request that does not meet its policy: `errors` (one per field,
    `schemas.FieldErrorOut`: `field` and `path`, `rule`, `message`, `fromSinch`), and the
    policy's `price`."""
    answer = CheckOut.of(result).model_dump(by_alias=True, mode="json")
    return ProblemError(
        422,
        "The request does not meet its policy; see `errors`.",
        extra={
            "errors": answer["errors"],
            "policyId": answer["policyId"],
            "price": answer["price"],
        },
    )
