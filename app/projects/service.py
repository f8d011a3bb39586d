"""The project the single-project settings define, made sure of at every start.

`SINCH_PROJECT_ID` (with `SINCH_KEY_ID`, `SINCH_KEY_SECRET`, `SINCH_CALLBACK_SECRETS`) defines one
project, as before projects existed: `ensure_settings_project` upserts its row at the start of each
API and worker process (the one place it is written). Its key secret is never stored: it stays in
the environment (`from_settings`). Without `SINCH_PROJECT_ID` that project is the placeholder
`default` (settings.DEFAULT_PROJECT_ID).

Migration 0010 gives existing rows to `SINCH_PROJECT_ID` when it ran with it set, else to the
placeholder; the first start with `SINCH_PROJECT_ID` set then renames the placeholder to it, and
every row follows (`ON UPDATE CASCADE`), in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Final

from sqlalchemy import and_, exists, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.core.models import PROJECTS
from app.core.settings import DEFAULT_PROJECT_ID, Settings

log = logging.getLogger(__name__)

_STARTUP_LOCK: Final = 0x9A0_7EC7
"""Advisory lock key: processes starting together make sure of the project one after another."""


async def ensure_settings_project(session: AsyncSession, settings: Settings, now: datetime) -> str:
    """Make the settings' project exist as they define it (id, key id, `from_settings`), renaming
    the placeholder to it first when the placeholder holds the data; answers its id. Another
    project marked `from_settings` (the settings named it before) is no longer. Runs in the
    caller's transaction; the caller commits."""
    project_id = settings.settings_project_id
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _STARTUP_LOCK})
    if project_id != DEFAULT_PROJECT_ID:
        taken = exists().where(PROJECTS.c.id == project_id)
        await session.execute(
            update(PROJECTS)
            .where(PROJECTS.c.id == DEFAULT_PROJECT_ID, PROJECTS.c.from_settings, ~taken)
            .values(id=project_id, name=project_id, updated_at=now)
        )
    statement = postgresql.insert(PROJECTS).values(
        id=project_id,
        name=project_id,
        key_id=settings.sinch_key_id,
        key_secret_sealed=None,
        from_settings=True,
        created_at=now,
        updated_at=now,
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[PROJECTS.c.id],
            set_={
                "key_id": statement.excluded.key_id,
                "key_secret_sealed": None,
                "from_settings": True,
                "updated_at": now,
            },
            where=and_(
                PROJECTS.c.key_id.is_distinct_from(statement.excluded.key_id)
                | ~PROJECTS.c.from_settings
                | PROJECTS.c.key_secret_sealed.is_not(None)
            ),
        )
    )
    await session.execute(
        update(PROJECTS)
        .where(PROJECTS.c.from_settings, PROJECTS.c.id != project_id)
        .values(from_settings=False, updated_at=now)
    )
    return project_id


async def project_ids(session: AsyncSession) -> list[str]:
    """Every project's id, in order."""
    return list((await session.execute(select(PROJECTS.c.id).order_by(PROJECTS.c.id))).scalars())


START_TIMEOUT_SECONDS: Final = 5.0
"""Longest a process's start waits on the database for `settle_at_start`."""


async def settle_at_start(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> str:
    """`ensure_settings_project` in a transaction of its own, at a process's start; answers the
    project's id. A database that does not answer within `START_TIMEOUT_SECONDS` is logged, not
    raised: the process starts as it does without its database, and the row is made by the next
    start (or any other process's); until then a callback for the project is answered 503."""
    try:
        async with asyncio.timeout(START_TIMEOUT_SECONDS), sessionmaker.begin() as session:
            await ensure_settings_project(session, settings, utcnow())
    except Exception as exc:
        log.warning("the settings' project was not written at start: %s", type(exc).__name__)
    return settings.settings_project_id
