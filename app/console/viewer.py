"""Who looks at a console page: the principal as it stands now, the session's CSRF token, and
the projects it sees. Built per request by `app.console.access.viewer`."""

from __future__ import annotations

from dataclasses import dataclass

from app.tokens.principal import Principal, Scope, Visible


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who looks at a page: the principal as it stands now, and the session's CSRF token."""

    principal: Principal
    csrf: str
    session_id: str
    project: str | None = None
    """The project switcher's choice (`?project=`), None: every project the token sees."""
    projects: tuple[str, ...] = ()
    """The projects the token sees, for the switcher (and the subscription form)."""

    @property
    def may_act(self) -> bool:
        return self.principal.scope.allows(Scope.WRITE)

    @property
    def visible(self) -> Visible:
        """What the pages list: the switcher's project within the token's limit."""
        return self.principal.visible(self.project)

    @property
    def limit(self) -> Visible:
        """The token's limit: what a page of one row (by id) may show."""
        return self.principal.projects
