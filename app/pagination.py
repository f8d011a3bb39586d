"""Keyset pagination: opaque cursors, the `limit` and `cursor` query parameters, and pages.

A cursor is the base64url (unpadded) form of the JSON of the last row's sort key, as a pydantic
model of the listing's own (`extra="forbid"`, so a cursor of one ordering is refused by another).
Clients must treat it as opaque: pass back `nextCursor` unchanged. The next page holds the rows
strictly after that key in the listing's order, so a walk never repeats or skips a row whose key
does not change, however many rows are inserted meanwhile, and no query ever uses OFFSET.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar

from fastapi import Query
from pydantic import BaseModel, ValidationError

from app.problems import ProblemError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_CURSOR_LENGTH = 1024

KeyT = TypeVar("KeyT", bound=BaseModel)
RowT = TypeVar("RowT")

LimitQuery = Annotated[
    int,
    Query(
        ge=1,
        le=MAX_LIMIT,
        description=f"Largest number of items on the page (1 to {MAX_LIMIT}).",
    ),
]
CursorQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_CURSOR_LENGTH,
        description="`nextCursor` of the previous page, unchanged; absent for the first page.",
    ),
]


class InvalidCursorError(ProblemError):
    """A cursor this listing did not hand out (or one of another listing): 400."""

    def __init__(self) -> None:
        super().__init__(
            400,
            "The cursor is not valid for this listing: pass back a nextCursor unchanged.",
            title="Invalid cursor",
        )


def encode_cursor(key: BaseModel) -> str:
    """The opaque cursor of a sort key."""
    return base64.urlsafe_b64encode(key.model_dump_json().encode()).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, model: type[KeyT]) -> KeyT:
    """The sort key a cursor holds, validated by `model`; `InvalidCursorError` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return model.model_validate_json(raw)
    except (ValueError, binascii.Error, ValidationError):
        # ValidationError is a ValueError; named for the reader. Its text is not echoed: it would
        # quote the caller's input.
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
