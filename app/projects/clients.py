"""Each project's Sinch client, for the worker and the commands: every Sinch call is made with
the credentials of the project the registration or event belongs to.

`ProjectClients.client(project_id)` answers that project's `SinchClient` (None when the project
does not exist, or has no usable credentials). The settings-defined project's client is built from
the environment once (`SinchClient.from_settings`); another project's from its row: its key id
and its key secret, opened with `PROJECT_SECRETS_KEY` (app/projects/secrets.py).

Freshness: a project's row is read again when its entry is older than `REFRESH_SECONDS`, the
period at which API processes re-read the projects' callback secrets (app/callbacks/secrets.py),
so a project added, re-keyed or removed is seen by a running worker within that period of its
next use. The client (and so its OAuth token cache, app/sinch/auth.py) is kept while the key is
unchanged: each project has its own token, fetched with its own key, and no other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Annotated

import httpx
from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.callbacks.secrets import REFRESH_SECONDS
from app.core.models import PROJECTS
from app.core.settings import Settings
from app.projects.secrets import SecretsKeyMissing, WrongSecretsKey, box_of
from app.projects.service import project_ids
from app.sinch.client import DEFAULT_DEADLINE_SECONDS, SinchClient

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Entry:
    read_at: float
    key: tuple[str | None, bytes | None]
    """The row's key id and sealed secret when `client` was built: a change builds another."""
    client: SinchClient | None


@dataclass(eq=False, repr=False, slots=True)
class ProjectClients:
    """The Sinch clients of every project (module docstring). `http` is shared and owned by the
    caller; one instance per event loop, as for `SinchClient`."""

    settings: Settings
    http: httpx.AsyncClient
    sessionmaker: async_sessionmaker[AsyncSession]
    _: KW_ONLY
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
    """Bounds each call of every client, retries included (`SinchClient.from_settings`)."""
    clock: Callable[[], float] = time.monotonic
    settings_client: SinchClient | None = field(init=False)
    """The settings-defined project's client (None without `SINCH_*` credentials)."""
    _entries: dict[str, _Entry] = field(init=False, default_factory=dict)
    """Per project id (other than the settings-defined one), its client as last read."""

    def __post_init__(self) -> None:
        self.settings_client = (
            SinchClient.from_settings(
                self.settings, self.http, deadline_seconds=self.deadline_seconds
            )
            if self.settings.sinch_credentials_configured
            else None
        )

    async def client(self, project_id: str) -> SinchClient | None:
        """Project `project_id`'s client, its row read again when older than `REFRESH_SECONDS`;
        None when the project does not exist here (or no longer) or has no usable key."""
        if project_id == self.settings.settings_project_id:
            return self.settings_client
        now = self.clock()
        entry = self._entries.get(project_id)
        if entry is not None and now - entry.read_at < REFRESH_SECONDS:
            return entry.client
        async with self.sessionmaker() as session:
            row = (
                await session.execute(
                    select(PROJECTS.c.key_id, PROJECTS.c.key_secret_sealed).where(
                        PROJECTS.c.id == project_id
                    )
                )
            ).first()
        if row is None:
            self._entries.pop(project_id, None)
            return None
        key = (row.key_id, row.key_secret_sealed)
        if entry is not None and entry.key == key:
            entry.read_at = now
            return entry.client
        self._entries[project_id] = _Entry(now, key, self._build(project_id, *key))
        return self._entries[project_id].client

    def _build(
        self, project_id: str, key_id: str | None, sealed: bytes | None
    ) -> SinchClient | None:
        if key_id is None or sealed is None:
            return None
        try:
            key_secret = box_of(self.settings.project_secrets_key).open(sealed)
        except (SecretsKeyMissing, WrongSecretsKey) as exc:
            log.warning("project %s has no usable Sinch key: %s", project_id, exc)
            return None
        settings = self.settings
        return SinchClient(
            self.http,
            project_id=project_id,
            key_id=key_id,
            key_secret=key_secret,
            api_base_url=settings.sinch_api_base_url,
            auth_url=settings.sinch_auth_url,
            max_attempts=settings.sinch_max_attempts,
            deadline_seconds=self.deadline_seconds,
        )

    async def every(self) -> list[SinchClient]:
        """The client of every project that has one, by project id (the crons' per-project runs:
        reconciliation, the market map)."""
        async with self.sessionmaker() as session:
            ids = await project_ids(session)
        if self.settings.settings_project_id not in ids:
            ids.insert(0, self.settings.settings_project_id)
        clients = [await self.client(project_id) for project_id in ids]
        return [client for client in clients if client is not None]


async def get_project_clients(request: Request) -> ProjectClients:
    """The API process's `ProjectClients` (the lifespan keeps it as `project_clients`)."""
    # async: a plain function would be run in a worker thread on every request.
    clients: ProjectClients = request.state.project_clients
    return clients


ProjectClientsDep = Annotated[ProjectClients, Depends(get_project_clients)]
"""Every project's Sinch client, for a route that calls Sinch for a project's registration."""
