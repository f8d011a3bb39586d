"""Shapes shared by the internal API's documents: the camelCase base model, times, and problems.

Problem documents themselves are made by app/core/problems.py; `problem_responses` only describes
them in the OpenAPI document, so routes can list the errors they answer.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from app.core.problems import PROBLEM_MEDIA_TYPE


class ApiModel(BaseModel):
    """A document of the internal API: camelCase field names (FastAPI serializes by alias),
    built from ORM rows by attribute."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, from_attributes=True, frozen=True
    )


def same_named(model: type[BaseModel], row: object, *, but: Collection[str]) -> dict[str, Any]:
    """The fields of `model` but those of `but`, read from `row`'s attributes of the same name:
    what a document shows of a row as it is, for the fields it shows otherwise to be added."""
    return {name: getattr(row, name) for name in model.model_fields if name not in but}


def _iso_with_offset(value: datetime) -> str:
    # pydantic would write UTC as `Z`; the contract asks for an offset, so `+00:00` it is.
    return value.astimezone(UTC).isoformat()


ApiTime = Annotated[
    datetime,
    PlainSerializer(_iso_with_offset, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""A time in an answer: ISO 8601 in UTC with its offset, e.g. `2026-01-01T10:00:00+00:00`."""


class Problem(BaseModel):
    """An error answer (RFC 9457)."""

    type: str = Field(default="about:blank", description="Always `about:blank`.")
    title: str = Field(description="The HTTP status's phrase, or a short title of the problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str | None = Field(default=None, description="What went wrong, for a human.")
    errors: list[dict[str, Any]] | None = Field(
        default=None,
        description="On 422: each invalid parameter's location (`loc`), message and type.",
    )


# Inline rather than a `$ref`: FastAPI files a response `model` under application/json only.
PROBLEM_SCHEMA: dict[str, Any] = Problem.model_json_schema()

_DESCRIPTIONS = {
    401: "No bearer token, a token that is not accepted, or no token configured at all.",
    403: "The token is accepted, but its scope does not allow this (`read` on a route that acts).",
    404: "Not found.",
    408: "The request did not arrive whole in time.",
    409: "The resource is not in a state that allows this (the detail says why).",
    410: "The cursor names changes no longer kept: resynchronise (the detail says how).",
    413: "The body (or the file it carries) is larger than this service takes.",
    422: "A parameter is not valid (a cursor included); `errors` says which.",
    502: "Sinch answered something this service cannot use.",
    503: "Sinch cannot be reached now, or is not configured.",
    504: "Sinch did not answer in time.",
}

_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The authentication scheme: `Bearer`.",
            "schema": {"type": "string"},
        }
    },
    503: {
        "Retry-After": {
            "description": "Seconds to wait before trying again, when Sinch said so.",
            "required": False,
            "schema": {"type": "string"},
        }
    },
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses, each a problem document."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}},
        }
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        responses[status] = entry
    return responses


def operation(
    operation_id: str, summary: str, *errors: int, description: str | None = None
) -> dict[str, Any]:
    """How a route of the API is documented, as its decorator's keyword arguments: its
    `operationId`, summary, description (omitted: none) and the problems it answers besides
    those of its router (`problem_responses`)."""
    documented: dict[str, Any] = {"operation_id": operation_id, "summary": summary}
    if description is not None:
        documented["description"] = description
    if errors:
        documented["responses"] = problem_responses(*errors)
    return documented


PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]+$"
"""Text parameters (ids, states) hold no control characters: PostgreSQL refuses NUL in text."""
MAX_TEXT_LENGTH = 255


def text_filter(
    description: str, *, alias: str | None = None, max_length: int = MAX_TEXT_LENGTH
) -> Any:
    """A listing's filter by one text (`Query`): 1 to `max_length` printable characters."""
    return Query(
        alias=alias,
        min_length=1,
        max_length=max_length,
        pattern=PRINTABLE_PATTERN,
        description=description,
    )


def text_path(description: str, *, alias: str, max_length: int = MAX_TEXT_LENGTH) -> Any:
    """A route's path parameter of one text (`Path`): 1 to `max_length` printable characters."""
    return Path(
        alias=alias,
        min_length=1,
        max_length=max_length,
        pattern=PRINTABLE_PATTERN,
        description=description,
    )


_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339_text(value: object) -> object:
    # pydantic also reads a number ("0.5") as seconds since 1970: the document says date-time.
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return value
    raise ValueError("expected a date-time with an offset (RFC 3339)")


def _as_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # A valid date-time that exists only with its offset, e.g. 9999-12-31T23:59:59-05:00 (past
        # the largest datetime in UTC): read as that end, which no stored time passes either.
        offset = value.utcoffset()
        west = offset is not None and offset < timedelta(0)
        return (datetime.max if west else datetime.min).replace(tzinfo=UTC)


QueryTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text), AfterValidator(_as_utc)]
"""A time parameter: an RFC 3339 date-time with an offset (a time without one is refused), read as
UTC; one past either end of datetime's range once in UTC is read as that end."""
