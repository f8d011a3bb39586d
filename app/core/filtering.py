"""The optional equality filters of a listing's query, in one place: a reader names each column
with the value asked for it, and only the values given (not None) narrow the rows."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select
from sqlalchemy.orm import QueryableAttribute

_S = TypeVar("_S", bound=Select[*tuple[Any, ...]])
Filter = tuple[ColumnElement[Any] | QueryableAttribute[Any], object]
"""A column and the value asked for it; None: not asked (every value)."""


def where_given(statement: _S, *filters: Filter) -> _S:
    """`statement` with `column == value` for each of `filters` whose value is not None."""
    for column, value in filters:
        if value is not None:
            statement = statement.where(column == value)
    return statement
