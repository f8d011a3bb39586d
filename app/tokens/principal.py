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


Visible = frozenset[str] | None
"""The projects a request may see: None for every project, else exactly these (maybe none)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who presented an accepted token: its name (never the token), its scope, and the projects
    it is limited to (None: every project; `python -m app token create ... --project A`)."""

    name: str
    scope: Scope
    projects: frozenset[str] | None = None

    def sees(self, project_id: str | None) -> bool:
        """Whether a row of `project_id` is this token's to see (None: a deployment-wide row, such
        as a token's audit entry, which only an unlimited token sees)."""
        if self.projects is None:
            return True
        return project_id is not None and project_id in self.projects

    def visible(self, project_id: str | None = None) -> Visible:
        """The projects a request sees with the filter `projectId=project_id` (None: no filter):
        the token's limit, narrowed to the one project named. A project outside the limit leaves
        none (an empty list answers, as for a project that does not exist: never a hint)."""
        if project_id is None:
            return self.projects
        return frozenset({project_id}) if self.sees(project_id) else frozenset()


class TokenLookupError(Exception):
    """The database tokens could not be read (the database does not answer): raised by
    `app.tokens.directory.TokenDirectory`, answered by `app.web.auth` as a 503 problem."""
