"""Every table of the service.

- `projects`: the Sinch projects this deployment serves (app/projects/). Every row of a project's
  data below carries its `project_id` (a foreign key, `ON UPDATE CASCADE`: the placeholder
  project of migration 0010 is renamed at start, app/projects/service.py); `market_policies`,
  `subscriptions` and `api_tokens` belong to the deployment, `audit_log` rows to a project only
  when the write concerned one.
- `callback_events`: the inbox. One row per distinct callback Sinch delivered, kept with its raw
  bytes before the endpoint answers 200. The worker moves it from `received` to `processed`,
  `failed` or `invalid`.
- `registrations`: the local copy of each registration, converging on Sinch's truth.
- `registration_history`: every status change applied, with Sinch's time of the change.
- `registration_sender_ids`, `registration_tags`: each registration's sender IDs and tags, one row
  each, so that `senderId=` and `tag=` are indexed lookups (the registration's own JSON columns
  hold them in Sinch's order, for answering).
- `market_policies`: Sinch's map from a policy to its market (GET /markets/details), refreshed
  at most daily (app/registrations/markets.py).
- `catalog_markets`, `catalog_policies`, `policy_changes`: each project's markets and policies
  as Sinch serves them (GET /markets/availability, /markets/details, /policies/{id}), refreshed
  daily, and what changed in a policy each time a refresh found it changed (app/catalog/).
  Deleted with their project: a copy of Sinch's, fetched again at will.
- `registration_changes`: the change feed. One row per change of a registration's answer (its
  status or a fact), written in the transaction that makes the change, holding the answer as of
  that change; numbered (`seq`) after commit, in the order the changes become visible
  (app/changes/repository.py).
- `subscriptions`, `deliveries`: the changes pushed to internal services (Standard Webhooks): a
  delivery per matching subscription and change, written when the change is numbered (an
  outbox), sent by the delivery worker (app/subscriptions/).
- `delivery_attempts`: every POST of a delivery (its time, headers, the receiver's status and the
  first 4 KiB of its answer, latency, error), written by the sending cycle that records the
  delivery's outcome; deleted with its delivery, or past `EVENT_RETENTION_DAYS`. Of its
  delivery's project, through the delivery.
- `sync_state`: small named values the worker keeps (the reconciliation watermark).
- `api_tokens`: the internal API's tokens made by `python -m app token create`, each kept as the
  SHA-256 of the token (never the token), with its scope (app/tokens/).
- `audit_log`: who did which write, when and from where; each row written in the transaction of
  the write it records (app/audit/).
- `callback_secrets`: callback secrets made by `python -m app secret rotate`, which every API
  process accepts besides `SINCH_CALLBACK_SECRETS` (app/callbacks/secrets.py).
- `idempotency_keys`: each `Idempotency-Key` sent with a POST and the first answer it got, for
  24 hours (app/web/idempotency.py).
- `count_deltas`, `count_totals`: events by state, registrations by status and the hourly series,
  kept by database triggers (migration 0009) and read without counting rows (app/counts/,
  docs/counting.md).
- `registration_stays`, `registration_forecasts`, `time_in_state`, `decision_curves`: the
  time-in-state read model (app/forecasts/): each registration's stays in each state and its
  decision clock and forecast, and the figures per market, type and state, kept by the worker's
  forecasts cron so that a read never walks the history.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any, ClassVar, Final, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.core.db import UTCDateTime


def index(
    table: str, *columns: str, only: tuple[str, str] | None = None, using: str = "btree"
) -> Index:
    """An index of `table` over `columns` in this order, named as the migrations name it:
    `ix_<table>_<columns joined by _>` (said once here, not restated beside each list).

    `only=(name, condition)` makes it partial: only the rows where the SQL `condition` holds,
    with `name` before the columns in the index's name (`ix_deliveries_pending_...`). `using`:
    PostgreSQL's index method (`hash` answers equalities only, and gives no order)."""
    if only is None:
        return Index(f"ix_{table}_{'_'.join(columns)}", *columns, postgresql_using=using)
    part, condition = only
    return Index(
        f"ix_{table}_{part}_{'_'.join(columns)}",
        *columns,
        postgresql_where=text(condition),
        postgresql_using=using,
    )


# Named constraints make migrations reproducible.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


def project_key(
    *, nullable: bool = False, ondelete: str | None = None, primary_key: bool = False
) -> Mapped[Any]:
    """The `project_id` column of a project's data: a foreign key to `projects`, following a
    rename of the project (the placeholder's, app/projects/service.py)."""
    return mapped_column(
        String(255),
        ForeignKey("projects.id", onupdate="CASCADE", ondelete=ondelete),
        nullable=nullable,
        primary_key=primary_key,
    )


class Project(Base):
    """A Sinch project this deployment serves (app/projects/)."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    """Sinch's project id, as in Sinch's paths (`/v1/projects/{id}/...`)."""
    name: Mapped[str] = mapped_column(String(255))
    key_id: Mapped[str | None] = mapped_column(String(255))
    """The Sinch API key's id (None: no credentials, e.g. the placeholder project)."""
    key_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The key's secret, Fernet-encrypted with `PROJECT_SECRETS_KEY` (app/projects/secrets.py);
    None when it comes from the environment (the settings-defined project) or is not set."""
    from_settings: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    """True for the one project the single-project settings define (`SINCH_PROJECT_ID`, ...):
    its credentials and callback secrets are read from the environment."""
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    def __repr__(self) -> str:
        # Never the sealed secret (nor whether one is set beyond a yes/no).
        return (
            f"Project(id={self.id!r}, name={self.name!r}, key_id={self.key_id!r}, "
            f"key_secret={'set' if self.key_secret_sealed else 'unset'})"
        )


class EventState(StrEnum):
    """Where a kept callback stands. Names are part of the internal API (docs/api.md)."""

    RECEIVED = "received"
    PROCESSED = "processed"
    FAILED = "failed"
    INVALID = "invalid"


class HistorySource(StrEnum):
    """What caused a status change: a trusted callback, a GET checking one, or reconciliation."""

    CALLBACK = "callback"
    REFETCH = "refetch"
    RECONCILE = "reconcile"
    SUBMITTED = "submitted"
    """Sinch's answer to a create, update or delete sent through this service (app/submissions/)."""


class CallbackEvent(Base):
    __tablename__ = "callback_events"
    __table_args__ = (
        # A callback's identity is its project's: the same event id (or body) sent for two
        # projects is two events.
        UniqueConstraint("project_id", "dedup_key", name="uq_callback_events_project_id_dedup_key"),
        index("callback_events", "project_id", "id"),
        index("callback_events", "state", "received_at"),
        index("callback_events", "registration_id", "id"),
        index("callback_events", "state", "id"),
        Index(
            "ix_callback_events_outcome_id",
            "outcome",
            "id",
            postgresql_where=text("outcome IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = project_key()
    """The project whose callback route (and secrets) received it."""
    dedup_key: Mapped[str] = mapped_column(String(255))
    """The event's identity: Sinch's event id when the body has one, else `sha256:<hex of body>`."""
    event_id: Mapped[str | None] = mapped_column(String(255))
    """Sinch's event id as sent (None when the body has none)."""
    registration_id: Mapped[str | None] = mapped_column(String(255))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, Any]]
    peer: Mapped[str | None] = mapped_column(String(64))
    secret_index: Mapped[int] = mapped_column(SmallInteger)
    """Which of `SINCH_CALLBACK_SECRETS` verified the signature (0 is the current one)."""
    received_at: Mapped[datetime]
    duplicate_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    state: Mapped[str] = mapped_column(String(16), default=EventState.RECEIVED)
    outcome: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None]


class RegistrationImage:
    """The columns of a registration's answer (all of it but the status and Sinch's document): a
    registration holds them, and each of its changes holds a copy as of that change
    (`registration_changes`; app.changes.repository.IMAGE_COLUMNS)."""

    registration_type: Mapped[str | None] = mapped_column(String(64))
    status_changed_at: Mapped[datetime | None]
    """Sinch's time of the newest information applied: recency is judged against it."""
    last_synced_at: Mapped[datetime | None]
    """When the fetch from Sinch whose document is applied began (our clock)."""
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # The registration facts (docs/api.md; read by app/registrations/facts.py).
    sender_ids: Mapped[list[str]] = mapped_column(JSON())
    """Sinch's order."""
    tags: Mapped[list[str]] = mapped_column(JSON())
    """Sinch's order."""
    market_code: Mapped[str | None] = mapped_column(String(16))
    """The document's top-level `marketCode`, else its policy's market; None when unknown."""
    policy_id: Mapped[str | None] = mapped_column(String(255))
    eta_date: Mapped[date | None] = mapped_column(Date())
    price: Mapped[dict[str, Any] | None]
    status_since: Mapped[datetime | None]
    """Sinch's time at which the current `status` began: the `at` of the change that set it."""
    reason_message: Mapped[str | None] = mapped_column(Text)
    """Sinch's newest log message, or the comments of the callback that moved the status."""
    reason_state: Mapped[str | None] = mapped_column(String(64))
    reason_at: Mapped[datetime | None]


class Registration(RegistrationImage, Base):
    __tablename__ = "registrations"
    __table_args__ = (
        index("registrations", "project_id", "id"),
        # A project's pages by state and its feed of changes (migration 0014): a project and a
        # state are not independent, so walking one index and filtering the other can read the
        # whole table for an empty page.
        index("registrations", "project_id", "status", "id"),
        index("registrations", "project_id", "status_changed_at", "id"),
        index("registrations", "status", "id"),
        index("registrations", "registration_type", "id"),
        index("registrations", "status_changed_at", "id"),
        index("registrations", "status", "status_changed_at", "id"),
        index("registrations", "registration_type", "status_changed_at", "id"),
        index("registrations", "market_code", "id"),
        index("registrations", "facts_due_at"),
        index("registrations", "status", "status_since", "id"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    """Sinch's registration id: unique across projects (Sinch makes it), so the key alone. Its
    sender ids and tags rows belong to the project through it."""
    project_id: Mapped[str] = project_key()
    status: Mapped[str] = mapped_column(String(64))
    """Sinch's state name, kept as sent even when this service does not know it."""
    callback_applied_at: Mapped[datetime | None]
    """When a trusted callback last moved the status (our clock): a snapshot fetched after it
    outranks it, whatever time the callback claimed (app/registrations/service.py)."""
    sinch: Mapped[dict[str, Any] | None]
    """The last full document fetched from Sinch, as Sinch sent it."""
    # Sinch's order; also one row each in `registration_sender_ids` and `registration_tags`, for
    # lookups. Defaults here only: a change always copies them.
    sender_ids: Mapped[list[str]] = mapped_column(JSON(), default=list, server_default="[]")
    tags: Mapped[list[str]] = mapped_column(JSON(), default=list, server_default="[]")
    facts_due_at: Mapped[datetime | None]
    """Set (our clock) when a callback moved the registration into a state whose meaning lives in
    Sinch's document (`facts.FACT_STATES`); cleared by a snapshot fetched after it. The worker
    fetches registrations with this set (app/worker/tasks.py)."""


class RegistrationSenderId(Base):
    __tablename__ = "registration_sender_ids"
    __table_args__ = (
        Index("ix_registration_sender_ids_sender_id", "sender_id", "registration_id"),
    )

    registration_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("registrations.id", ondelete="CASCADE"), primary_key=True
    )
    sender_id: Mapped[str] = mapped_column(String(255), primary_key=True)


class RegistrationTag(Base):
    __tablename__ = "registration_tags"
    __table_args__ = (Index("ix_registration_tags_tag", "tag", "registration_id"),)

    registration_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("registrations.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(255), primary_key=True)


class MarketPolicy(Base):
    """One policy's market, from Sinch's market details list."""

    __tablename__ = "market_policies"

    policy_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    market_code: Mapped[str] = mapped_column(String(16))
    registration_type: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime]


class CatalogMarket(Base):
    """A market open to registrations of one type, for one project: Sinch's availability entry
    and market versions (app/catalog/)."""

    __tablename__ = "catalog_markets"
    __table_args__ = (Index("ix_catalog_markets_sort_key", "sort_key", unique=True),)

    project_id: Mapped[str] = project_key(ondelete="CASCADE", primary_key=True)
    market_code: Mapped[str] = mapped_column(String(16), primary_key=True)
    registration_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    sort_key: Mapped[str] = mapped_column(String(400))
    """`<marketCode>:<registrationType>:<projectId>`: the listing's order and cursor."""
    market_name: Mapped[str | None] = mapped_column(String(255))
    available: Mapped[bool] = mapped_column(Boolean)
    """Whether GET /markets/availability names it (a market version alone does not)."""
    versions: Mapped[list[Any]] = mapped_column(JSON())
    """Its market versions (GET /markets/details), as Sinch sent them."""
    policy_ids: Mapped[list[str]] = mapped_column(JSON())
    """The policies its versions' special conditions name, in Sinch's order."""
    refreshed_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    """When a refresh last found it different (or first found it)."""


class CatalogPolicy(Base):
    """A policy as one project's Sinch serves it (app/catalog/)."""

    __tablename__ = "catalog_policies"

    project_id: Mapped[str] = project_key(ondelete="CASCADE", primary_key=True)
    policy_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    market_code: Mapped[str | None] = mapped_column(String(16))
    registration_type: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str | None] = mapped_column(String(32))
    """Sinch's `policyStatus` (`ENABLED`, `DISABLED`), as sent."""
    document: Mapped[dict[str, Any]]
    """The policy as Sinch sent it."""
    digest: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the document's canonical JSON: a refresh compares it to see a change."""
    refreshed_at: Mapped[datetime]
    changed_at: Mapped[datetime]
    """When a refresh first found this document (the policy's first fetch, or its last change)."""


class PolicyChange(Base):
    """What a refresh found changed in a policy (app/catalog/diff.py), once per change."""

    __tablename__ = "policy_changes"
    __table_args__ = (index("policy_changes", "project_id", "policy_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = project_key(ondelete="CASCADE")
    policy_id: Mapped[str] = mapped_column(String(255))
    changed_at: Mapped[datetime]
    diff: Mapped[dict[str, Any]]
    """`{"added": [...], "changed": [...], "removed": [...]}`, each entry a field's path and its
    rule(s) before and after."""
    registrations: Mapped[int] = mapped_column(Integer)
    """How many registrations of the policy the change feed announced it to."""


class RegistrationHistory(Base):
    __tablename__ = "registration_history"
    __table_args__ = (
        Index("ix_registration_history_registration_id_at", "registration_id", "at", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    registration_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("registrations.id", ondelete="CASCADE")
    )
    project_id: Mapped[str] = project_key()
    """The registration's project."""
    from_status: Mapped[str | None] = mapped_column(String(64))
    to_status: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    """Sinch's time of the change."""
    source: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str | None] = mapped_column(String(255))
    """Sinch's event id of the callback that caused the change (or whose check did); None when
    the callback had none, or when no callback was involved."""
    recorded_at: Mapped[datetime]
    note: Mapped[str | None] = mapped_column(Text)
    """Why the change needs explaining, e.g. a snapshot overruling a callback's claim."""


class RegistrationVersion(Base):
    """One distinct document Sinch gave for a registration, numbered from 1 in the order applied
    here (app/registrations/repository.py `keep_version`). A document equal to the last kept one
    (same `digest`) is not kept again, so the newest version is the registration's `sinch`."""

    __tablename__ = "registration_versions"

    registration_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("registrations.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    project_id: Mapped[str] = project_key()
    """The registration's project."""
    document: Mapped[dict[str, Any]]
    """The document as Sinch sent it."""
    digest: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the document's canonical JSON (app/catalog/diff.py `digest`)."""
    source: Mapped[str] = mapped_column(String(16))
    """What brought the document (a `HistorySource`; `migration` for the document a registration
    held when versions began to be kept, revision 0018)."""
    at: Mapped[datetime]
    """Sinch's time of the document (its `updateTime`; when it was fetched, without one)."""
    recorded_at: Mapped[datetime]


class ChangeSource(StrEnum):
    """What recorded a change of the feed: a status change's `HistorySource`, the forecasts
    cron finding a registration overdue (app/forecasts/), or a catalog refresh finding its
    policy changed (app/catalog/)."""

    CALLBACK = HistorySource.CALLBACK.value
    REFETCH = HistorySource.REFETCH.value
    RECONCILE = HistorySource.RECONCILE.value
    SUBMITTED = HistorySource.SUBMITTED.value
    FORECAST = "forecast"
    CATALOG = "catalog"


class ChangeKind(StrEnum):
    """What a change of the feed changed: the status (and maybe facts), or only facts."""

    STATUS = "status"
    DETAILS = "details"
    OVERDUE = "overdue"
    """The registration has waited past its market's p85 or Sinch's `etaDate` (app/forecasts/)."""
    POLICY_CHANGED = "policy_changed"
    """Sinch changed the registration's policy (app/catalog/): its fields may need an update."""


class RegistrationChange(RegistrationImage, Base):
    __tablename__ = "registration_changes"
    __table_args__ = (
        Index("ix_registration_changes_seq", "seq", unique=True),
        # The few rows the sequencer has yet to number, found without reading the others.
        Index(
            "ix_registration_changes_unnumbered",
            "id",
            postgresql_where=text("seq IS NULL"),
        ),
        index("registration_changes", "recorded_at"),
        index("registration_changes", "project_id", "seq"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    seq: Mapped[int | None] = mapped_column(BigInteger)
    """The change's place in the feed; None until the sequencer numbers it, after its commit."""
    registration_id: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = project_key()
    """The registration's project (copied with its answer, `IMAGE_COLUMNS`)."""
    kind: Mapped[str] = mapped_column(String(16))
    from_status: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(64))
    """The status after the change (the feed's `toStatus`)."""
    at: Mapped[datetime]
    """Sinch's time of the change (for a market filled from Sinch's list: when it was filled)."""
    source: Mapped[str] = mapped_column(String(16))
    recorded_at: Mapped[datetime]
    # With `RegistrationImage`: the registration's answer as of the change, as `registrations`
    # held it.


class DeliveryState(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Subscription(Base):
    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    status_filter: Mapped[str | None] = mapped_column(Text)
    """The statuses it wants, as `,A,B,` (matched with LIKE); None: every status."""
    type_filter: Mapped[str | None] = mapped_column(Text)
    """The registration types it wants, as `,A,B,`; None: every type."""
    kind_filter: Mapped[str | None] = mapped_column(Text)
    """The kinds of change it wants (`status`, `details`), as `,A,B,`; None: every kind."""
    project_filter: Mapped[str | None] = mapped_column(Text)
    """The projects whose changes it wants, as `,A,B,`; None: every project."""
    enabled: Mapped[bool] = mapped_column(Boolean)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None]
    """When it was last disabled (None while enabled): where its backlog begins."""
    secret: Mapped[str] = mapped_column(Text)
    """`whsec_` + base64: kept as is, since the service signs with it."""
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_until: Mapped[datetime | None]
    """Deliveries are signed with the previous secret too until then (a rotation's overlap)."""
    failing_since: Mapped[datetime | None]
    """The first failed attempt since the last success; None while deliveries succeed."""
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


PENDING_ONLY: Final = ("pending", "state = 'pending'")
"""The deliveries still to send: the dispatcher's and the sender's partial indexes."""


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        # The pending ones only (a small part of the table, and a row leaves these indexes when
        # it succeeds: fewer index entries per success, migration 0017): what is due per
        # subscription (and when the next comes due: one probe each, migration 0019); a
        # subscription's in change order, and whether an earlier one of a registration waits
        # (repository.due).
        index("deliveries", "subscription_id", "next_attempt_at", only=PENDING_ONLY),
        index("deliveries", "subscription_id", "change_id", only=PENDING_ONLY),
        index("deliveries", "subscription_id", "registration_id", "change_id", only=PENDING_ONLY),
        index("deliveries", "subscription_id", "id"),
        # By change for equalities only (the cascade from pruned changes): as a b-tree, plans
        # kept for the due read walked it in change order over every delivery (migration 0019).
        index("deliveries", "change_id", using="hash"),
        index("deliveries", "project_id"),
        # A delivery's id names its message (`webhook-id`): never given twice, which its sequence
        # ensures even after the newest rows were deleted.
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("subscriptions.id", ondelete="CASCADE")
    )
    change_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("registration_changes.id", ondelete="CASCADE"),
    )
    registration_id: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = project_key()
    """The change's (its registration's) project."""
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class DeliveryAttempt(Base):
    """One POST of a delivery (or one that was not sent, saying why). Its payload is not kept:
    it is its change's body (`delivery.body_of`), which never changes once numbered."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (
        # The attempts page: a subscription's newest first; its failures alone (outcome=failed).
        index("delivery_attempts", "subscription_id", "attempted_at", "id"),
        index(
            "delivery_attempts",
            "subscription_id",
            "attempted_at",
            "id",
            only=("failed", "NOT succeeded"),
        ),
        # A delivery's attempts, and the cascade when deliveries are deleted.
        index("delivery_attempts", "delivery_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("deliveries.id", ondelete="CASCADE")
    )
    subscription_id: Mapped[str] = mapped_column(String(40))
    """The delivery's (kept here for the listing's index; deleted with the delivery)."""
    attempted_at: Mapped[datetime]
    succeeded: Mapped[bool] = mapped_column(Boolean)
    request_headers: Mapped[dict[str, Any] | None]
    """The headers sent (the signature, never a secret); None when nothing was sent."""
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    """The first 4 KiB of the answer's body, as text (undecodable bytes replaced)."""
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)


class SyncState(Base):
    __tablename__ = "sync_state"

    project_id: Mapped[str] = mapped_column(
        String(255),
        ForeignKey("projects.id", onupdate="CASCADE", ondelete="CASCADE"),
        primary_key=True,
    )
    """Whose value it is (the reconciliation watermark is a project's)."""
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    """Unique for ever: a revoked token's row stays, so its name is never given to another (a
    console session signed in under the name must not outlive the token)."""
    scope: Mapped[str] = mapped_column(String(8))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """Hex SHA-256 of the token; the token itself is shown once and never kept."""
    project_ids: Mapped[list[str] | None] = mapped_column(postgresql.ARRAY(String(255)))
    """The projects the token may see (migration 0011); None: every project."""
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    """Written at most about once a minute per token and API process, not on every request."""
    revoked_at: Mapped[datetime | None]


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        index("audit_log", "actor", "id"),
        index("audit_log", "action", "id"),
        index("audit_log", "project_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    project_id: Mapped[str | None] = project_key(nullable=True)
    """The project the write concerned; None for the deployment's own (tokens, subscriptions)."""
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(100))
    """The token's name (`env:1`, `reporting`), or `cli:<user>` for the command line."""
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255))
    client: Mapped[str | None] = mapped_column(String(255))
    """The client's address as uvicorn gives it (the peer, or `X-Forwarded-For` from a trusted
    proxy), or `cli@<host>`."""
    forwarded_for: Mapped[str | None] = mapped_column(String(255))
    """`X-Forwarded-For` as the request carried it: what a proxy (or the client) claims."""
    detail: Mapped[dict[str, Any] | None]


class CallbackSecret(Base):
    __tablename__ = "callback_secrets"
    __table_args__ = (index("callback_secrets", "project_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = project_key(ondelete="CASCADE")
    """The project whose callbacks it verifies."""
    secret: Mapped[str] = mapped_column(Text)
    """Kept as is: the service must compute HMACs with it (as with SINCH_CALLBACK_SECRETS)."""
    state: Mapped[str] = mapped_column(String(16))
    """`pending` (accepted, not yet given to Sinch), `current`, `previous`."""
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class IdempotencyKey(Base):
    """One `Idempotency-Key` a caller sent with a POST, and the first answer it got
    (app/web/idempotency.py): kept `IDEMPOTENCY_TTL` (24 h), then pruned with the events."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (index("idempotency_keys", "created_at"),)

    owner: Mapped[str] = mapped_column(String(100), primary_key=True)
    """Whose key it is: the principal's name (a token's, `cli:<user>`); two callers' keys never
    meet, as Stripe scopes keys to an account."""
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    """Hex SHA-256 of the method, the path and the body: the same key with another request is
    refused."""
    status: Mapped[int | None] = mapped_column(SmallInteger)
    """The first answer's HTTP status; None while that request is still in flight."""
    body: Mapped[dict[str, Any] | None] = mapped_column(postgresql.JSONB())
    """The first answer's JSON body (a problem document for an error)."""
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class CountDelta(Base):
    """A change of one count, written by a trigger in the transaction that made it. Insert-only
    (writers never wait for each other); the worker folds them into `count_totals`."""

    __tablename__ = "count_deltas"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = project_key()
    """The project of the event or registration counted."""
    name: Mapped[str] = mapped_column(String(128))
    """`event_state:<state>`, `registration_status:<status>` or `h:<YYYY-MM-DDTHH>:<series>`."""
    delta: Mapped[int] = mapped_column(BigInteger)


class CountTotal(Base):
    """A count as of the last fold: the count is this plus its unfolded deltas."""

    __tablename__ = "count_totals"

    project_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("projects.id", onupdate="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class RegistrationStay(Base):
    """A registration's stay in one non-final state, on Sinch's clock (app/forecasts/stays.py)."""

    __tablename__ = "registration_stays"
    __table_args__ = (index("registration_stays", "registration_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    registration_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("registrations.id", ondelete="CASCADE")
    )
    project_id: Mapped[str] = project_key(ondelete="CASCADE")
    """The registration's project."""
    market_code: Mapped[str | None] = mapped_column(String(16))
    registration_type: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(64))
    entered_at: Mapped[datetime]
    left_at: Mapped[datetime | None]
    """None while it is still in the state."""


class RegistrationForecast(Base):
    """A registration's decision clock and forecast, as of `computed_at` (app/forecasts/)."""

    __tablename__ = "registration_forecasts"
    __table_args__ = (
        Index(
            "ix_registration_forecasts_overdue", "registration_id", postgresql_where=text("overdue")
        ),
        # The forecasts cron's step 4: undecided ones, stalest forecast first.
        Index(
            "ix_registration_forecasts_stalest",
            text("forecast_at NULLS FIRST"),
            "registration_id",
            postgresql_where=text("decided_at IS NULL"),
        ),
        # The Aging page: undecided ones, overdue first, longest waiting first.
        Index(
            "ix_registration_forecasts_aging",
            "overdue",
            "sinch_seconds",
            postgresql_where=text("decided_at IS NULL AND submitted_at IS NOT NULL"),
        ),
    )

    registration_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("registrations.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = project_key(ondelete="CASCADE")
    """The registration's project: its forecast stands on its project's decisions."""
    market_code: Mapped[str | None] = mapped_column(String(16))
    registration_type: Mapped[str | None] = mapped_column(String(64))
    eta_date: Mapped[date | None] = mapped_column(Date())
    submitted_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(64))
    customer_seconds: Mapped[float] = mapped_column(Float())
    """Time waiting on the customer in stays that ended (stays.Clock)."""
    waiting_on_customer_since: Mapped[datetime | None]
    decision_p50: Mapped[datetime | None]
    decision_p85: Mapped[datetime | None]
    overdue: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    overdue_since: Mapped[datetime | None]
    """When the cron first found it overdue (our clock); its `overdue` change was recorded then."""
    basis: Mapped[str] = mapped_column(String(32))
    samples: Mapped[int] = mapped_column(Integer)
    approval_chance: Mapped[float | None] = mapped_column(Float())
    sinch_seconds: Mapped[float] = mapped_column(Float())
    waited_customer_seconds: Mapped[float] = mapped_column(Float())
    """Time waiting on the customer up to `computed_at` (the open stay included)."""
    stays_from: Mapped[datetime]
    """`registrations.updated_at` as of the stays and clock kept: newer means derive them again."""
    computed_at: Mapped[datetime]
    forecast_at: Mapped[datetime | None]
    """When the cron last forecast it; None when its clock was derived since (or never forecast):
    each run forecasts the stalest first, so a run stopped at its budget leaves the freshest."""


class TimeInState(Base):
    """p50, p85, p95 of stays in a state per market and type, over stays that began in or after
    `since_month` (app/forecasts/model.py); rewritten whole by the forecasts cron."""

    __tablename__ = "time_in_state"
    __table_args__ = (Index("ix_time_in_state_since_month", "since_month", "market_code"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = project_key(ondelete="CASCADE")
    since_month: Mapped[date] = mapped_column(Date())
    market_code: Mapped[str | None] = mapped_column(String(16))
    registration_type: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(64))
    p50: Mapped[int | None] = mapped_column(BigInteger)
    p85: Mapped[int | None] = mapped_column(BigInteger)
    p95: Mapped[int | None] = mapped_column(BigInteger)
    samples: Mapped[int] = mapped_column(Integer)
    open: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[datetime]


class DecisionCurve(Base):
    """The decision clocks of a market and type, binned (app/forecasts/model.py), with the share of
    Sinch's `etaDate`s that held; rewritten whole by the forecasts cron."""

    __tablename__ = "decision_curves"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = project_key(ondelete="CASCADE")
    market_code: Mapped[str | None] = mapped_column(String(16))
    registration_type: Mapped[str | None] = mapped_column(String(64))
    bins: Mapped[list[list[float]]] = mapped_column(JSON())
    """[bin, outcome (0 open, 1 approved, 2 rejected), count] rows."""
    samples: Mapped[int] = mapped_column(Integer)
    open: Mapped[int] = mapped_column(Integer)
    p50: Mapped[int | None] = mapped_column(BigInteger)
    p85: Mapped[int | None] = mapped_column(BigInteger)
    approved_share: Mapped[float | None] = mapped_column(Float())
    eta_samples: Mapped[int] = mapped_column(Integer)
    """Decided registrations that had an `etaDate`."""
    eta_held: Mapped[int] = mapped_column(Integer)
    """Of those, decided by the end of their `etaDate`."""
    computed_at: Mapped[datetime]


# The tables themselves, typed as such, for the Core statements of the hot paths (the callback
# inbox's bulk insert, the worker's apply).
PROJECTS = cast(Table, Project.__table__)
CALLBACK_EVENTS = cast(Table, CallbackEvent.__table__)
REGISTRATIONS = cast(Table, Registration.__table__)
REGISTRATION_HISTORY = cast(Table, RegistrationHistory.__table__)
REGISTRATION_VERSIONS = cast(Table, RegistrationVersion.__table__)
SYNC_STATE = cast(Table, SyncState.__table__)
REGISTRATION_SENDER_IDS = cast(Table, RegistrationSenderId.__table__)
REGISTRATION_TAGS = cast(Table, RegistrationTag.__table__)
MARKET_POLICIES = cast(Table, MarketPolicy.__table__)
CATALOG_MARKETS = cast(Table, CatalogMarket.__table__)
CATALOG_POLICIES = cast(Table, CatalogPolicy.__table__)
POLICY_CHANGES = cast(Table, PolicyChange.__table__)
REGISTRATION_CHANGES = cast(Table, RegistrationChange.__table__)
SUBSCRIPTIONS = cast(Table, Subscription.__table__)
DELIVERIES = cast(Table, Delivery.__table__)
DELIVERY_ATTEMPTS = cast(Table, DeliveryAttempt.__table__)
COUNT_DELTAS = cast(Table, CountDelta.__table__)
COUNT_TOTALS = cast(Table, CountTotal.__table__)
REGISTRATION_STAYS = cast(Table, RegistrationStay.__table__)
REGISTRATION_FORECASTS = cast(Table, RegistrationForecast.__table__)
TIME_IN_STATE = cast(Table, TimeInState.__table__)
DECISION_CURVES = cast(Table, DecisionCurve.__table__)
IDEMPOTENCY_KEYS = cast(Table, IdempotencyKey.__table__)

FACT_COLUMNS: Final = (
    "sender_ids",
    "tags",
    "market_code",
    "policy_id",
    "eta_date",
    "price",
    "reason_message",
    "reason_state",
    "reason_at",
)
"""The `registrations` columns that hold the facts (`status_since` aside: it follows the status)."""
