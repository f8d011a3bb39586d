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
import re
from datetime import datetime
from typing import Final

from pydantic import SecretStr
from sqlalchemy import and_, delete, exists, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.actions import Action
from app.audit.repository import Actor, record
from app.callbacks.secrets import CURRENT
from app.core.db import utcnow
from app.core.models import PROJECTS, CallbackSecret
from app.core.settings import DEFAULT_PROJECT_ID, Settings
from app.projects.secrets import SecretBox

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


# --- adding, renaming, removing (the CLI's `project ...` and the console's projects page) ------

PROJECT_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A project id as Sinch spells them (UUIDs in practice): safe in a URL path segment."""


class ProjectRefused(Exception):
    """A project write refused, with a message fit for the caller (never a secret)."""


DATA_TABLES: Final = (
    "deliveries",
    "registration_changes",
    "registration_history",
    "callback_events",
    "registrations",
)
"""A project's data, in the order `remove_project(with_data=True)` deletes it (deliveries and
changes before the registrations they refer to). Its counts, marks (`sync_state`) and callback
secrets follow it: they mean nothing without the project."""


async def add_project(
    session: AsyncSession,
    box: SecretBox,
    *,
    project_id: str,
    name: str,
    key_id: str,
    key_secret: SecretStr,
    callback_secret: SecretStr | None,
    actor: Actor,
    now: datetime,
) -> None:
    """Add project `project_id` with its Sinch key (the secret sealed with `box`) and, when
    given, its first callback secret (accepted at once, as `current`). `ProjectRefused` when the
    id is not a project id or is taken. Audited (no secret in the entry). The caller commits;
    every running process knows the project within `REFRESH_SECONDS` of the commit
    (app/callbacks/secrets.py, app/worker)."""
    if not PROJECT_ID_PATTERN.fullmatch(project_id):
        raise ProjectRefused(
            "a project id is letters, digits, '.', '_' or '-' (up to 128), starting with a letter"
            " or digit"
        )
    if not name.strip() or not key_id.strip() or not key_secret.get_secret_value():
        raise ProjectRefused("a project needs a name, a key id and a key secret")
    added = await session.execute(
        postgresql.insert(PROJECTS)
        .values(
            id=project_id,
            name=name.strip(),
            key_id=key_id.strip(),
            key_secret_sealed=box.seal(key_secret),
            from_settings=False,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[PROJECTS.c.id])
        .returning(PROJECTS.c.id)
    )
    if added.first() is None:
        raise ProjectRefused(f"project {project_id} exists already")
    if callback_secret is not None and callback_secret.get_secret_value():
        session.add(
            CallbackSecret(
                project_id=project_id,
                secret=callback_secret.get_secret_value(),
                state=CURRENT,
                created_at=now,
                updated_at=now,
            )
        )
    record(
        session,
        actor,
        Action.PROJECT_ADD,
        project_id,
        now=now,
        project_id=None,
        detail={"name": name.strip(), "keyId": key_id.strip()},
    )


async def rename_project(
    session: AsyncSession, project_id: str, name: str, *, actor: Actor, now: datetime
) -> None:
    """Give project `project_id` the name `name`; `ProjectRefused` when there is no such project
    or the name is empty. Audited."""
    if not name.strip():
        raise ProjectRefused("a project needs a name")
    renamed = await session.execute(
        update(PROJECTS)
        .where(PROJECTS.c.id == project_id)
        .values(name=name.strip(), updated_at=now)
        .returning(PROJECTS.c.id)
    )
    if renamed.first() is None:
        raise ProjectRefused(f"no project {project_id}")
    record(
        session,
        actor,
        Action.PROJECT_RENAME,
        project_id,
        now=now,
        project_id=None,
        detail={"name": name.strip()},
    )


async def data_rows(session: AsyncSession, project_id: str) -> dict[str, int]:
    """How many rows of each of `DATA_TABLES` project `project_id` has (tables without any
    left out)."""
    counts: dict[str, int] = {}
    for table in DATA_TABLES:
        # Table names are this module's constants, never input.
        found = await session.execute(
            text(f"SELECT count(*) FROM {table} WHERE project_id = :p"),  # noqa: S608
            {"p": project_id},
        )
        if count := int(found.scalar_one()):
            counts[table] = count
    return counts


async def remove_project(
    session: AsyncSession,
    project_id: str,
    *,
    with_data: bool,
    actor: Actor,
    settings_project_id: str,
    now: datetime,
) -> dict[str, int]:
    """Remove project `project_id`: refused (`ProjectRefused`, nothing changed) when it is the
    settings-defined project (made again at every start: unset `SINCH_PROJECT_ID` instead), when
    there is no such project, or when it still has data (`DATA_TABLES`) and `with_data` is False.
    With `with_data` its data is deleted too. Its callback secrets, marks and counts go with it;
    its audit entries stay, detached from it (their `detail` and target still name it). Answers
    the rows deleted per table. Audited. The caller commits; every running API process refuses
    its callbacks (404) within `REFRESH_SECONDS` of the commit."""
    if project_id == settings_project_id:
        raise ProjectRefused(
            f"{project_id} is the project the settings define (SINCH_PROJECT_ID): it is made"
            " again at every start; change the settings instead"
        )
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _STARTUP_LOCK})
    exists_now = await session.execute(
        select(PROJECTS.c.id).where(PROJECTS.c.id == project_id).with_for_update()
    )
    if exists_now.first() is None:
        raise ProjectRefused(f"no project {project_id}")
    counts = await data_rows(session, project_id)
    if counts and not with_data:
        held = ", ".join(f"{count} {table}" for table, count in counts.items())
        raise ProjectRefused(
            f"project {project_id} still has data ({held}); remove it with its data"
            ' (--with-data, or the console\'s "with its data") to delete that data too'
        )
    for table in DATA_TABLES:
        await session.execute(
            text(f"DELETE FROM {table} WHERE project_id = :p"),  # noqa: S608
            {"p": project_id},
        )
    # After the data: deleting it wrote count deltas of the project (0009's triggers).
    for table in ("count_deltas", "count_totals"):
        await session.execute(
            text(f"DELETE FROM {table} WHERE project_id = :p"),  # noqa: S608
            {"p": project_id},
        )
    await session.execute(
        text("UPDATE audit_log SET project_id = NULL WHERE project_id = :p"), {"p": project_id}
    )
    # callback_secrets and sync_state go with the row (ON DELETE CASCADE).
    await session.execute(delete(PROJECTS).where(PROJECTS.c.id == project_id))
    record(
        session,
        actor,
        Action.PROJECT_REMOVE,
        project_id,
        now=now,
        project_id=None,
        detail={"withData": with_data, "deleted": counts},
    )
    return counts
