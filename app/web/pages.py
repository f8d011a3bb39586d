"""The page a listing's request asks for: its `limit` and `cursor` query parameters
(app.core.pagination), taken by a route as one dependency, and the keyset protocol that goes with
them (read one row more than the page, then split) in one place.

There is one dependency per kind of cursor, because each kind declares its own pattern in the
OpenAPI document: `RowIdPageDep`, `TextIdPageDep`, `TimeRowIdPageDep`. Their query parameters are
`limit` then `cursor`, as each listing declared them itself before; a route lists its page before
`VisibleDep` so that `projectId` stays after them in the document (FastAPI lists a route's own
parameters first, then each dependency's in the order of the signature).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from pydantic import BaseModel

from app.core.pagination import (
    DEFAULT_LIMIT,
    KeyT,
    LimitQuery,
    RowIdCursorQuery,
    RowT,
    TextIdCursorQuery,
    TimeRowIdCursorQuery,
    optional_cursor,
    page,
)


@dataclass(frozen=True)
class PageAsked:
    """At most `limit` items after the position `cursor` names (None: the first page).

    Made by FastAPI from the query through a subclass, which declares the cursor's pattern; the
    cursor is read as a sort key only by `after`, since some listings choose the key's model from
    their other filters."""

    limit: LimitQuery = DEFAULT_LIMIT
    cursor: str | None = None

    def after(self, key: type[KeyT]) -> KeyT | None:
        """The sort key the cursor names, read by `key` (a 422 problem for a cursor it refuses);
        None for the first page."""
        return optional_cursor(self.cursor, key)

    def split(
        self, rows: Sequence[RowT], key_of: Callable[[RowT], BaseModel]
    ) -> tuple[Sequence[RowT], str | None]:
        """`rows`, read with a LIMIT of `limit + 1` (one more tells whether another page follows,
        without a COUNT), as this page's items and the next page's cursor (None: the last page)."""
        return page(rows, self.limit, key_of)


@dataclass(frozen=True)
class RowIdPageAsked(PageAsked):
    """A page of a listing whose key is a row number."""

    cursor: RowIdCursorQuery = None


@dataclass(frozen=True)
class TextIdPageAsked(PageAsked):
    """A page of a listing whose key is a text id, with or without a time."""

    cursor: TextIdCursorQuery = None


@dataclass(frozen=True)
class TimeRowIdPageAsked(PageAsked):
    """A page of a listing whose key is a time and a row number."""

    cursor: TimeRowIdCursorQuery = None


RowIdPageDep = Annotated[RowIdPageAsked, Depends()]
TextIdPageDep = Annotated[TextIdPageAsked, Depends()]
TimeRowIdPageDep = Annotated[TimeRowIdPageAsked, Depends()]
