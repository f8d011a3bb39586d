"""Keyset pagination: cursors, the `limit` and `cursor` query parameters, and pages.

A cursor is the last row's sort key as text, `<time>:<id>`: `<time>` is the key's time in
microseconds since 0001-01-01T00:00:00Z (empty when the listing's order has no time) and `<id>` the
row's id. Clients must treat it as opaque (pass back `nextCursor` unchanged, URL-encoded like any
parameter value: an id may hold `&`, `+` or `#`), but it is no secret and not signed: every string
that matches a listing's declared pattern (`TEXT_ID_CURSOR_PATTERN`, `ROW_ID_CURSOR_PATTERN`, in
the OpenAPI document too) names a position in that listing, so a well-formed cursor is never
refused, whoever made it, and anything else is refused by validation (422) like every other
invalid parameter. The next page holds the rows strictly after that key in the listing's order, so
a walk never repeats or skips a row whose key does not change, however many rows are inserted
meanwhile, and no query ever uses OFFSET.

Reading a cursor is a split and an int(): no base64, no JSON, nothing that can overflow (a time
past either end of datetime's range is read as that end).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import Query
from pydantic import BaseModel, ValidationError

from app.core.problems import ProblemError
from app.core.schemas import MAX_TEXT_LENGTH

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

KeyT = TypeVar("KeyT", bound=BaseModel)
RowT = TypeVar("RowT")

_EPOCH = datetime.min.replace(tzinfo=UTC)
_MAX_MICROSECONDS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_TIME_DIGITS = 18  # _MAX_MICROSECONDS has 18 digits

LimitQuery = Annotated[
    int,
    Query(
        ge=1,
        le=MAX_LIMIT,
        description=f"Largest number of items on the page (1 to {MAX_LIMIT}).",
    ),
]


TEXT_ID_CURSOR_PATTERN = rf"^[0-9]{{0,{_TIME_DIGITS}}}:[^\x00-\x1f\x7f]{{1,{MAX_TEXT_LENGTH}}}$"
"""Cursors of keys with a text id (app.core.schemas' printable text of at most MAX_TEXT_LENGTH
characters), with or without a time: exactly what the registration listing's keys accept."""
ROW_ID_CURSOR_PATTERN = r"^:[1-9][0-9]{0,17}$"
"""Cursors of keys with a row number (below 10**18, far beyond what a BIGINT sequence reaches)."""
TIME_ROW_ID_CURSOR_PATTERN = rf"^[0-9]{{0,{_TIME_DIGITS}}}:[1-9][0-9]{{0,17}}$"
"""Cursors of keys with a time and a row number (a listing ordered by a time, then the id)."""


def _cursor_query(pattern: str) -> Any:
    return Query(
        pattern=pattern,
        max_length=_TIME_DIGITS + 1 + MAX_TEXT_LENGTH,
        description="`nextCursor` of the previous page, unchanged (URL-encoded like any value); "
        "absent for the first page.",
    )


TextIdCursorQuery = Annotated[str | None, _cursor_query(TEXT_ID_CURSOR_PATTERN)]
RowIdCursorQuery = Annotated[str | None, _cursor_query(ROW_ID_CURSOR_PATTERN)]
TimeRowIdCursorQuery = Annotated[str | None, _cursor_query(TIME_ROW_ID_CURSOR_PATTERN)]


class InvalidCursorError(ProblemError):
    """A cursor that names no position of this listing: 422, like any invalid parameter.

    Unreachable over HTTP (the declared pattern refuses such cursors first); kept so that
    `decode_cursor` has one answer for callers that skip that validation.
    """

    def __init__(self) -> None:
        super().__init__(
            422,
            "The request is not valid; see `errors`.",
            extra={
                "errors": [
                    {
                        "loc": ["query", "cursor"],
                        "msg": "Not a cursor of this listing: pass back a nextCursor unchanged.",
                        "type": "cursor",
                    }
                ]
            },
        )


def _microseconds(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def _time(digits: str) -> datetime:
    # Clamped: every real row's time lies within datetime's range, so the position "after a time
    # past the end" selects the same rows as "after the end" (and likewise at the start).
    microseconds = min(int(digits), _MAX_MICROSECONDS) if digits else 0
    return _EPOCH + timedelta(microseconds=microseconds)


def encode_cursor(key: BaseModel) -> str:
    """The cursor of a sort key: a model with an `id` (text or int) and, optionally, `at`."""
    fields = key.model_dump()
    at = fields.get("at")
    time = str(_microseconds(at)) if isinstance(at, datetime) else ""
    return f"{time}:{fields['id']}"


def decode_cursor(cursor: str, model: type[KeyT]) -> KeyT:
    """The sort key a cursor names, validated by `model`; `InvalidCursorError` for anything else.

    A model with an `at` reads a cursor without a time as the earliest time (so a cursor of a
    listing by id starts a listing by time at its beginning); a model without one ignores it.
    """
    time, separator, key_id = cursor.partition(":")
    if not separator or len(time) > _TIME_DIGITS:
        raise InvalidCursorError
    if time and not (time.isascii() and time.isdigit()):  # isdigit() alone admits "²" and "٣"
        raise InvalidCursorError
    values: dict[str, object] = {"id": key_id}
    if "at" in model.model_fields:
        values["at"] = _time(time)
    try:
        return model.model_validate(values)
    except ValidationError:
        # Its text is not echoed: it would quote the caller's input.
        raise InvalidCursorError from None


def optional_cursor(cursor: str | None, model: type[KeyT]) -> KeyT | None:
    return decode_cursor(cursor, model) if cursor is not None else None


def page(
    rows: Sequence[RowT], limit: int, key_of: Callable[[RowT], BaseModel]
) -> tuple[Sequence[RowT], str | None]:
    """Split the rows of a query run with `limit + 1` into the page and the next cursor.

    Fetching one row more than asked tells whether another page exists without a COUNT, so the
    last page has no cursor rather than a cursor to an empty page.
    """
    if len(rows) <= limit:
        return rows, None
    items = rows[:limit]
    return items, encode_cursor(key_of(items[-1]))
