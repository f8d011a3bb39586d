"""The outbox: a delivery per matching subscription and change, written by the statement (or in
the transaction) that records the change (app/changes/repository.py). The one place deliveries
are created; a leaf that only knows the tables.

A subscription's filters are kept as `,A,B,` (values hold no comma: the API refuses them) and
matched exactly with replace(): plain SQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Insert,
    Integer,
    String,
    and_,
    func,
    insert,
    literal,
    or_,
    select,
)

from app.core.models import DELIVERIES, SUBSCRIPTIONS, DeliveryState


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
    `changes` (rows with the change's `id`, `registration_id`, `status`, `registration_type`,
    `kind`)."""
    subscriptions = SUBSCRIPTIONS
    matching = and_(
        subscriptions.c.enabled.is_(True),
        _matches(subscriptions.c.status_filter, changes.c.status),
        _matches(subscriptions.c.type_filter, changes.c.registration_type),
        _matches(subscriptions.c.kind_filter, changes.c.kind),
    )
    return insert(DELIVERIES).from_select(
        [
            "subscription_id",
            "change_id",
            "registration_id",
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
            literal(DeliveryState.PENDING.value, String()),
            literal(0, Integer()),
            now,
            now,
            now,
        ).select_from(changes.join(subscriptions, matching)),
    )
