"""Who presented an accepted token (`Principal`) and what it may do (`Scope`): plain values that the
token directory, the HTTP edge and the console share, so none of them imports another for these."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    """What a token may do. `write` includes everything `read` may."""

    READ = "read"
    WRITE = "write"

    def allows(self, needed: Scope) -> bool:
        return self is Scope.WRITE or needed is Scope.READ


@dataclass(frozen=True, slots=True)
class Principal:
    """Who presented an accepted token: its name (never the token) and its scope."""

    name: str
    scope: Scope


class TokenLookupError(Exception):
    """The database tokens could not be read (the database does not answer): raised by
    `app.tokens.directory.TokenDirectory`, answered by `app.web.auth` as a 503 problem."""
