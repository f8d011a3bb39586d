"""Documents of the internal API about registrations (docs/api.md lists the fields)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field

from app.catalog.concerns import missing_attachments, named_attachments, named_fields
from app.catalog.diff import FieldChangeKind
from app.changes.schemas import ReasonOut, RegistrationView
from app.core.models import HistorySource
from app.core.schemas import ApiModel, ApiTime, same_named
from app.forecasts.schemas import ForecastOut
from app.registrations.queries import VersionView
from app.registrations.states import Action, needs_action


class NeedsActionOut(ApiModel):
    """What the customer must do for the registration to move on, and what Sinch said."""

    action: Action = Field(
        description="`update` (PENDING: change what Sinch asked about, then `PUT` the "
        "registration), `upload_attachments` (PENDING_ATTACHMENTS: upload the mandatory "
        "attachments still missing), `submit_again` (REJECTED is final: submit a new one)."
    )
    reason: ReasonOut | None = Field(
        description="What Sinch asked, in its words: its newest log message written for the "
        "current state; null when Sinch has written none for it yet."
    )
    since: ApiTime | None = Field(description="When it entered this state (Sinch's time).")
    fields: list[str] | None = Field(
        default=None,
        description="The fields concerned, as paths into the registration's document (`sinch`), "
        "which is laid out as the `PUT` that answers takes it "
        "(`$.requestDetails[0].additionalDetails[0].companyDetails.website`, "
        "`$.requestDetails[0].senderIdDetails[*].useCase`): those of the policy whose title or "
        "name Sinch's message (`reason`) contains; `[]` when it names none; null when the "
        "registration's policy is not in the catalog (app/catalog/concerns.py).",
    )
    attachments: list[str] | None = Field(
        default=None,
        description="The attachments concerned (the policy's attachment ids): for "
        "PENDING_ATTACHMENTS the mandatory ones Sinch's document does not list as uploaded, and "
        "any attachment Sinch's message names; null when the policy is not in the catalog.",
    )


class RegistrationOut(RegistrationView):
    """The local copy of a registration, with its facts (docs/api.md, Registration facts)."""

    sinch: dict[str, Any] | None = Field(
        description="The last full document fetched from Sinch, exactly as Sinch sent it."
    )
    forecast: ForecastOut | None = Field(
        default=None,
        description="When it will be decided, from this service's history of its market "
        "(computed by the forecasts cron every `FORECAST_INTERVAL_SECONDS`; null until its first "
        "run after the registration arrived). Not part of a change's image: it moves with time, "
        "not with changes; a change of kind `overdue` tells when it passes its due time.",
    )
    needs_action: NeedsActionOut | None = Field(
        default=None,
        description="Set while the registration waits on the customer (PENDING, "
        "PENDING_ATTACHMENTS, REJECTED): what to do, and what Sinch asked; null otherwise. "
        "`GET /v1/registrations?needsAction=true` lists these.",
    )

    @classmethod
    def of(
        cls, row: object, forecast: object | None, policy: Mapping[str, Any] | None = None
    ) -> RegistrationOut:
        """The answer of a `registrations` row with its `registration_forecasts` row (or None)
        and its policy's document as the catalog keeps it (None when unknown: `needsAction`
        then names no fields or attachments)."""
        answer = cls.model_validate(row)
        update: dict[str, Any] = {}
        if forecast is not None:
            update["forecast"] = ForecastOut.model_validate(forecast)
        action = needs_action(answer.status)
        if action is not None:
            reason = answer.reason
            # A message written for an earlier state says nothing of what is asked now.
            current = reason if reason is not None and reason.state == answer.status else None
            fields = attachments = None
            if policy is not None:
                message = current.message if current is not None else ""
                fields = named_fields(policy, message, answer.sinch)
                named = named_attachments(policy, message)
                if action is Action.UPLOAD_ATTACHMENTS:
                    missing = missing_attachments(policy, answer.sinch)
                    attachments = missing + [a for a in named if a not in missing]
                else:
                    attachments = named
            update["needs_action"] = NeedsActionOut(
                action=action,
                reason=current,
                since=answer.status_since,
                fields=fields,
                attachments=attachments,
            )
        return answer.model_copy(update=update) if update else answer

    @staticmethod
    def policy_keys(rows: Iterable[Any]) -> list[tuple[str, str | None]]:
        """(project id, policy id) of the `rows` whose answer needs their policy (those waiting
        on the customer), for `catalog.queries.policy_documents`."""
        return [(r.project_id, r.policy_id) for r in rows if needs_action(r.status) is not None]


class RegistrationPage(ApiModel):
    items: list[RegistrationOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")


class HistoryItem(ApiModel):
    """One status change applied to the registration."""

    project_id: str = Field(description="The Sinch project it belongs to.")

    from_status: str | None = Field(description="Null on the registration's first row.")
    to_status: str
    at: ApiTime = Field(description="Sinch's time of the change.")
    source: HistorySource
    event_id: str | None = Field(
        description="Sinch's event id of the callback that caused the change (or whose check "
        "did); null when no callback was involved or it carried no id."
    )
    note: str | None = Field(
        default=None,
        description="Why the change needs explaining; null for most rows. Set when Sinch's "
        "document overruled a status a callback had set (a hint never outranks the truth).",
    )


class HistoryOut(ApiModel):
    items: list[HistoryItem] = Field(
        description="Oldest first, in the order the changes were applied here (so each row's "
        "fromStatus is the toStatus of the row before it, even when a snapshot corrected a "
        "callback that claimed a later time)."
    )


class VersionChange(ApiModel):
    """One field of Sinch's document that differs from the version before."""

    path: str = Field(
        description="The field's JSON path (`$.requestDetails[0].senderIdDetails[0].senderId`); "
        "an array's items by position."
    )
    change: FieldChangeKind = Field(description="`added`, `changed` or `removed`.")
    from_: Any = Field(
        default=None,
        alias="from",
        description="Its value before (null when `added`); an object or array emptied is a "
        "change to `{}` or `[]`.",
    )
    to: Any = Field(default=None, description="Its value after (null when `removed`).")


class VersionItem(ApiModel):
    """One distinct document Sinch gave for the registration."""

    version: int = Field(description="1, 2, ... in the order the documents were applied here.")
    at: ApiTime = Field(
        description="Sinch's time of the document (`updateTime`; when it was fetched without one)."
    )
    recorded_at: ApiTime = Field(description="When this service kept it.")
    source: str = Field(
        description="What brought it: `refetch`, `reconcile`, `submitted` (Sinch's answer to a "
        "write through this service; a deletion keeps the last document with status `DELETED`), "
        "or `migration` (the document held when versions began to be kept)."
    )
    changes: list[VersionChange] | None = Field(
        description="What changed from the version before, by path; null for the first version "
        "kept (nothing to compare it with)."
    )

    @classmethod
    def of(cls, view: VersionView) -> VersionItem:
        return cls(
            changes=None
            if view.changes is None
            else [
                VersionChange(path=c.path, change=c.change, from_=c.before, to=c.after)
                for c in view.changes
            ],
            **same_named(cls, view, but={"changes"}),
        )


class VersionPage(ApiModel):
    items: list[VersionItem] = Field(description="Oldest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")
