"""Documents of the change feed (docs/api.md, Change feed)."""

from __future__ import annotations

from types import SimpleNamespace

from pydantic import Field

from app.changes.repository import IMAGE_COLUMNS
from app.core.models import ChangeKind, HistorySource, RegistrationChange
from app.core.schemas import ApiModel, ApiTime
from app.registrations.schemas import RegistrationView


class ChangeOut(ApiModel):
    """One change of a registration's answer."""

    seq: int = Field(description="The change's place in the feed: increasing, without gaps.")
    kind: ChangeKind = Field(
        description="`status` when the status changed (facts may have too), `details` when only "
        "facts did."
    )
    registration_id: str
    from_status: str | None = Field(description="Null when the registration was first learnt.")
    to_status: str
    at: ApiTime = Field(description="Sinch's time of the change.")
    source: HistorySource
    recorded_at: ApiTime = Field(description="When this service recorded it (our clock).")
    registration: RegistrationView = Field(
        description="The registration's answer as of this change (as GET /v1/registrations/{id} "
        "answered then, without `sinch`)."
    )

    @classmethod
    def of(cls, row: RegistrationChange) -> ChangeOut:
        image = SimpleNamespace(
            id=row.registration_id,
            status=row.status,
            **{name: getattr(row, name) for name in IMAGE_COLUMNS},
        )
        assert row.seq is not None  # only numbered changes are served
        return cls(
            seq=row.seq,
            kind=ChangeKind(row.kind),
            registration_id=row.registration_id,
            from_status=row.from_status,
            to_status=row.status,
            at=row.at,
            source=HistorySource(row.source),
            recorded_at=row.recorded_at,
            registration=RegistrationView.model_validate(image),
        )


class ChangePage(ApiModel):
    items: list[ChangeOut]
    next_cursor: str = Field(
        description="Pass as `cursor` to read on; the same position when `items` is empty."
    )
