"""The outbox: every write to `deliveries` and to their attempts log (`delivery_attempts`). A
delivery per matching subscription and change, written by the statement that numbers the change
(app/changes/repository.py: a change is numbered if and only if its deliveries are written); then
each attempt's outcome and the attempt itself, a retry, bulk recovery, the give-ups, the attempts'
pruning (called by app/subscriptions/ and the prune cron). A leaf that only knows the tables, so
that the change feed below and the senders above share it. Nothing here commits: callers own the
transaction.

A subscription's filters are kept as `,A,B,` (values hold no comma: the API refuses them) and
matched exactly with replace(): plain SQL.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    FromClause,
    Insert,
    Integer,
    String,
    and_,
    any_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import DriverStatement, rowcount
from app.core.models import (
    DELIVERIES,
    DELIVERY_ATTEMPTS,
    REGISTRATION_CHANGES,
    SUBSCRIPTIONS,
    DeliveryState,
)
from app.projects.queries import only
from app.tokens.principal import Visible

# `'pending'` written into the statement, not bound: the partial indexes of the pending deliveries
# (`WHERE state = 'pending'`) serve only a query whose plan knows the value. Bound, PostgreSQL's
# generic plan (chosen for a prepared statement after five runs) cannot use them and walked every
# delivery of the subscription: 35 ms at 2k pending instead of 0.4.
PENDING = literal(DeliveryState.PENDING.value, literal_execute=True)


def filter_text(values: list[str] | None) -> str | None:
    """How a filter is kept: `,A,B,`; None (or empty) keeps everything."""
    return "," + ",".join(values) + "," if values else None


def filter_values(text: str | None) -> list[str] | None:
    return text.strip(",").split(",") if text else None


def _matches(kept: ColumnElement[Any], value: ColumnElement[Any]) -> ColumnElement[bool]:
    # `,A,B,` holds `,value,` exactly when removing that needle changes it: replace() compares
    # exactly, and needs no escaping (LIKE would need its wildcards escaped).
    needle = literal(",", String()) + value + literal(",", String())
    return or_(kept.is_(None), func.replace(kept, needle, "") != kept)


def deliveries_for(changes: FromClause, now: ColumnElement[Any]) -> Insert:
    """An INSERT of a pending delivery for each enabled subscription matching each row of
    `changes` (rows with the change's `id`, `registration_id`, `project_id`, `status`,
    `registration_type`, `kind`: the changes being numbered): a delivery belongs to its change's
    project, and a subscription limited to projects (`project_filter`) gets only theirs."""
    subscriptions = SUBSCRIPTIONS
    matching = and_(
        subscriptions.c.enabled.is_(True),
        _matches(subscriptions.c.status_filter, changes.c.status),
        _matches(subscriptions.c.type_filter, changes.c.registration_type),
        _matches(subscriptions.c.kind_filter, changes.c.kind),
        _matches(subscriptions.c.project_filter, changes.c.project_id),
    )
    return insert(DELIVERIES).from_select(
        [
            "subscription_id",
            "change_id",
            "registration_id",
            "project_id",
            "state",
            "attempts",
            "next_attempt_at",
            "created_at",
            "updated_at",
        ],
        select(
            subscriptions.c.id,
            changes.c.id,
            changes.c.registration_id,
            changes.c.project_id,
            literal(DeliveryState.PENDING.value, String()),
            literal(0, Integer()),
            now,
            now,
            now,
        ).select_from(changes.join(subscriptions, matching)),
    )


def _failed_with(why: str) -> dict[str, Any]:
    """The values that end a pending delivery `failed`: the last error of one already tried is
    kept, `why` added to it."""
    return {
        "state": DeliveryState.FAILED.value,
        "last_error": case(
            (DELIVERIES.c.last_error.is_(None), why),
            else_=DELIVERIES.c.last_error + "; " + why,
        ),
    }


async def fail_pending(session: AsyncSession, subscription_id: str, why: str, now: datetime) -> int:
    """End every pending delivery of a subscription that will not be sent (it was disabled);
    the last error of one already tried is kept, `why` added to it."""
    result = await session.execute(
        update(DELIVERIES)
        .where(
            DELIVERIES.c.subscription_id == subscription_id,
            DELIVERIES.c.state == PENDING,
        )
        .values(**_failed_with(why), updated_at=now)
    )
    return rowcount(result)


GIVEN_UP_PRUNED = (
    "given up: not sent before its change left the feed (CHANGE_RETENTION_DAYS) while the "
    "subscription was disabled"
)


async def give_up_unsent(session: AsyncSession, *, through_seq: Any, now: datetime) -> int:
    """Mark `failed` (with `GIVEN_UP_PRUNED`) the pending deliveries of DISABLED subscriptions
    whose change is numbered `through_seq` or lower: the changes pruning is about to delete
    (app.changes.repository.pruned_through). An enabled subscription's pending deliveries are
    left alone: pruning stops below them. Answers how many were given up."""
    result = await session.execute(
        update(DELIVERIES)
        .where(
            DELIVERIES.c.state == PENDING,
            DELIVERIES.c.subscription_id.in_(
                select(SUBSCRIPTIONS.c.id).where(SUBSCRIPTIONS.c.enabled.is_(False))
            ),
            DELIVERIES.c.change_id.in_(
                select(REGISTRATION_CHANGES.c.id).where(REGISTRATION_CHANGES.c.seq <= through_seq)
            ),
        )
        .values(**_failed_with(GIVEN_UP_PRUNED), next_attempt_at=None, updated_at=now)
    )
    return rowcount(result)


async def record_attempt(
    session: AsyncSession,
    delivery_id: int,
    *,
    state: DeliveryState,
    status_code: int | None,
    error: str | None,
    next_attempt_at: datetime | None,
    now: datetime,
) -> None:
    """The outcome of one attempt."""
    await session.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id == delivery_id)
        .values(
            state=state.value,
            attempts=DELIVERIES.c.attempts + 1,
            last_status_code=status_code,
            last_error=error,
            next_attempt_at=next_attempt_at,
            updated_at=now,
        )
    )


_SUCCEEDED = DriverStatement(
    update(DELIVERIES)
    .where(DELIVERIES.c.id == any_(bindparam("ids", type_=ARRAY(BigInteger()))))
    .values(
        state=DeliveryState.SUCCEEDED.value,
        attempts=DELIVERIES.c.attempts + 1,
        last_status_code=bindparam("status_code", type_=DELIVERIES.c.last_status_code.type),
        last_error=None,
        next_attempt_at=None,
        updated_at=bindparam("now", type_=DELIVERIES.c.updated_at.type),
    )
)


async def record_successes(
    driver: Any, delivery_ids: Collection[int], status_code: int, now: datetime
) -> None:
    """Attempts that succeeded with `status_code`: one statement for all of them, sent on
    `driver` (the asyncpg connection of the caller's transaction: the sender's cycle)."""
    await _SUCCEEDED.execute(
        driver, {"ids": list(delivery_ids), "status_code": status_code, "now": now}
    )


async def retry_now(
    session: AsyncSession, delivery_id: int, now: datetime, visible: Visible = None
) -> str | None:
    """Make a delivery of one of `visible`'s projects (None: any) pending and due now (a person
    asked); answers its project, None if there is no such delivery."""
    result = await session.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id == delivery_id, only(DELIVERIES.c.project_id, visible))
        .values(
            state=DeliveryState.PENDING.value,
            next_attempt_at=now,
            updated_at=now,
        )
        .returning(DELIVERIES.c.project_id)
    )
    project_id: str | None = result.scalar_one_or_none()
    return project_id


ATTEMPT_COLUMNS: Final = (
    "delivery_id",
    "subscription_id",
    "attempted_at",
    "succeeded",
    "request_headers",
    "response_status",
    "response_body",
    "latency_ms",
    "error",
)
"""The attempts log's columns `log_attempts` writes."""
_ATTEMPTS = (
    func.unnest(
        *(bindparam(name, type_=ARRAY(DELIVERY_ATTEMPTS.c[name].type)) for name in ATTEMPT_COLUMNS)
    )
    .table_valued(*ATTEMPT_COLUMNS)
    .render_derived(name="attempt")
)
_LOG_ATTEMPTS = DriverStatement(
    insert(DELIVERY_ATTEMPTS).from_select(
        list(ATTEMPT_COLUMNS), select(*(_ATTEMPTS.c[name] for name in ATTEMPT_COLUMNS))
    )
)


async def log_attempts(driver: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Keep attempts in the attempts log (`delivery_attempts`; each row its `ATTEMPT_COLUMNS` by
    name, the request headers a dict or None), sent on `driver` (the asyncpg connection of the
    caller's transaction): one statement for all of them, the rows as one array per column, so
    that PostgreSQL runs one insert, not one per POST."""
    if not rows:
        return
    columns = {name: [row[name] for row in rows] for name in ATTEMPT_COLUMNS}
    # Sent past SQLAlchemy's JSON type, which would have serialized them: JSON text.
    columns["request_headers"] = [
        None if value is None else json.dumps(value) for value in columns["request_headers"]
    ]
    await _LOG_ATTEMPTS.execute(driver, columns)


async def prune_attempts(session: AsyncSession, *, before: datetime, limit: int) -> int:
    """Delete up to `limit` attempts made before `before`, oldest first (the prune cron). Walks the
    primary key from its start: ids grow with time, so the old rows come first and no index on
    the time is needed."""
    oldest = (
        select(DELIVERY_ATTEMPTS.c.id)
        .where(DELIVERY_ATTEMPTS.c.attempted_at < before)
        .order_by(DELIVERY_ATTEMPTS.c.id)
        .limit(limit)
    )
    result = await session.execute(
        delete(DELIVERY_ATTEMPTS).where(DELIVERY_ATTEMPTS.c.id.in_(oldest.scalar_subquery()))
    )
    return rowcount(result)


def _failed_since(subscription_id: str, since: datetime, *, by_outcome: bool) -> list[Any]:
    """Failed deliveries of a subscription written at or after `since` (`by_outcome`: marked
    failed at or after it)."""
    at = DELIVERIES.c.updated_at if by_outcome else DELIVERIES.c.created_at
    return [
        DELIVERIES.c.subscription_id == subscription_id,
        DELIVERIES.c.state == DeliveryState.FAILED.value,
        at >= since,
    ]


async def count_failed(
    session: AsyncSession, subscription_id: str, since: datetime, *, by_outcome: bool = False
) -> int:
    """How many deliveries `retry_failed` would make pending (a dry run reads it here, beside the
    write it announces)."""
    found = await session.scalar(
        select(func.count())
        .select_from(DELIVERIES)
        .where(*_failed_since(subscription_id, since, by_outcome=by_outcome))
    )
    return found or 0


async def retry_failed(
    session: AsyncSession,
    subscription_id: str,
    since: datetime,
    now: datetime,
    *,
    by_outcome: bool = False,
) -> int:
    """Make every failed delivery of a subscription written at or after `since` (`by_outcome`:
    marked failed at or after it) pending and due now; answers how many. Their order holds:
    the sender's `due` sends a registration's earliest pending change first."""
    result = await session.execute(
        update(DELIVERIES)
        .where(*_failed_since(subscription_id, since, by_outcome=by_outcome))
        .values(state=DeliveryState.PENDING.value, next_attempt_at=now, updated_at=now)
    )
    return rowcount(result)
