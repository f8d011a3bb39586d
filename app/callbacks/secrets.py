"""The callback secrets an API process accepts, and how a rotation reaches every process.

Accepted: the rows of `callback_secrets` (made by `python -m app secret rotate`) and
`SINCH_CALLBACK_SECRETS`, in this order: the `current` row (what Sinch was last told to sign
with), the environment's secrets, the `previous` rows, the `pending` ones; a secret listed twice
counts once. So position 0 (the `secret` label of `sinch_callback_secret_matches_total`, the
`secret_index` of an event) is the one Sinch signs with, as far as this service knows.

How processes learn a new secret: the database is the record (a process started later, or one
whose Redis was emptied, still finds it). Each API process re-reads the rows every
`REFRESH_SECONDS` (one small indexed query; the callback endpoint only reads a tuple) and, in the
same loop, announces itself in Redis (`INSTANCES_KEY`, a sorted set of instance ids by last
announcement), so that a rotation knows which processes are running.

How a rotation checks them: it signs a probe (`probe_body`) with the new secret and POSTs it to the
callback endpoint, over fresh connections, until every announced process has answered it with its
instance id (`probe_answer`): a process answers a probe only once its signature verifies, and never
keeps it as an event. A process that does not accept the secret answers 401, like to any unsigned
callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime

from arq import ArqRedis
from pydantic import SecretStr
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.actions import Action
from app.audit.repository import Actor, record
from app.callbacks.signature import SIGNATURE_HEADER, sign
from app.core.lifecycle import stop_task
from app.core.models import CallbackEvent, CallbackSecret
from app.core.settings import Settings

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0
INSTANCE_TTL_SECONDS = 5.0
"""A process not announced for this long is taken for gone (a rotation no longer waits for it)."""
INSTANCES_KEY = "sinch-registrations:api-instances"
PROBE_PREFIX = b'{"sinchRegistrationsSecretProbe":'
"""A probe's body starts with exactly these bytes (`probe_body`): one `startswith` on the hot
path, after the signature is verified, tells a probe from a callback."""

PENDING, CURRENT, PREVIOUS = "pending", "current", "previous"


def accepted_secrets(
    rows: Sequence[tuple[str, str]], environment: Sequence[SecretStr]
) -> tuple[SecretStr, ...]:
    """The accepted secrets in order (the module's docstring), from `(state, secret)` rows."""
    ordered = [secret for state, secret in rows if state == CURRENT]
    ordered += [secret.get_secret_value() for secret in environment]
    ordered += [secret for state, secret in rows if state == PREVIOUS]
    ordered += [secret for state, secret in rows if state == PENDING]
    return tuple(SecretStr(secret) for secret in dict.fromkeys(ordered))


async def read_accepted(
    session: AsyncSession, project_id: str, environment: Sequence[SecretStr]
) -> tuple[SecretStr, ...]:
    """The accepted secrets of project `project_id` as its rows of `callback_secrets` and
    `environment` (its secrets from the environment, if any) stand now. The one read of those
    rows: each API process's `AcceptedSecrets` and `secret status` come here."""
    rows = await session.execute(
        select(CallbackSecret.state, CallbackSecret.secret)
        .where(CallbackSecret.project_id == project_id)
        .order_by(CallbackSecret.id.desc())
    )
    return accepted_secrets([(row.state, row.secret) for row in rows], environment)


class AcceptedSecrets:
    """This process's accepted secrets (`accepted`) of project `project_id`, kept fresh by a task
    of its own, which also announces the process in Redis. If the database does not answer, the
    last secrets read stay. The environment's `SINCH_CALLBACK_SECRETS` are accepted for the
    settings-defined project only."""

    def __init__(
        self,
        settings: Settings,
        reader: async_sessionmaker[AsyncSession],
        redis: ArqRedis,
        *,
        project_id: str,
    ) -> None:
        self.project_id = project_id
        self._environment: tuple[SecretStr, ...] = (
            tuple(settings.sinch_callback_secrets)
            if project_id == settings.settings_project_id
            else ()
        )
        self._reader = reader
        self._redis = redis
        self.instance_id = uuid.uuid4().hex[:16]
        self.accepted: tuple[SecretStr, ...] = self._environment
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failing = False

    async def refresh(self) -> None:
        """Read the rows again (raises when the database does not answer)."""
        async with self._reader() as session:
            self.accepted = await read_accepted(session, self.project_id, self._environment)

    async def announce(self) -> None:
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(INSTANCES_KEY, {self.instance_id: now})
            pipe.zremrangebyscore(INSTANCES_KEY, "-inf", now - 60)  # long gone: keep the set small
            await pipe.execute()

    async def start(self) -> None:
        """Read once (the process accepts the rotated secrets from its first request on), then
        keep reading and announcing in the background."""
        with contextlib.suppress(Exception):
            await self.refresh()
        self._task = asyncio.create_task(self._run(), name="callback-secrets")

    async def stop(self) -> None:
        """Stop refreshing (bounded: `app/core/lifecycle.py`), then leave the instances."""
        self._stopping = True
        await stop_task(self._task)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self._redis.zrem(INSTANCES_KEY, self.instance_id)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                async with asyncio.timeout(REFRESH_SECONDS * 3):
                    await self.refresh()
                    await self.announce()
                if self._failing:
                    log.info("callback secrets read again")
                self._failing = False
            except Exception as exc:
                if not self._failing:  # once per streak, not every second
                    log.warning("callback secrets not refreshed: %s", type(exc).__name__)
                self._failing = True
            await asyncio.sleep(REFRESH_SECONDS)


# --- probes -----------------------------------------------------------------------------------


def probe_body(nonce: str) -> bytes:
    return PROBE_PREFIX + json.dumps(nonce).encode() + b"}"


def read_probe(body: bytes) -> str | None:
    """The nonce of a probe's body, or None when `body` is not one."""
    if not body.startswith(PROBE_PREFIX):
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    nonce = document.get("sinchRegistrationsSecretProbe") if isinstance(document, dict) else None
    return nonce if isinstance(nonce, str) else None


def probe_answer_body(nonce: str, instance_id: str) -> bytes:
    return json.dumps({"probe": nonce, "instance": instance_id}).encode()


def signed_probe(secret: str, nonce: str) -> tuple[bytes, dict[str, str]]:
    body = probe_body(nonce)
    return body, {SIGNATURE_HEADER: sign(body, secret), "Content-Type": "application/json"}


async def live_instances(redis: ArqRedis) -> set[str]:
    """The API processes that announced themselves within `INSTANCE_TTL_SECONDS`."""
    members = await redis.zrangebyscore(INSTANCES_KEY, time.time() - INSTANCE_TTL_SECONDS, "+inf")
    return {m.decode() if isinstance(m, bytes) else str(m) for m in members}


# --- the rows (nothing here commits) ----------------------------------------------------------


async def add_pending(session: AsyncSession, project_id: str, secret: str, *, now: datetime) -> int:
    row = CallbackSecret(
        project_id=project_id, secret=secret, state=PENDING, created_at=now, updated_at=now
    )
    session.add(row)
    await session.flush()
    return row.id


async def activate(
    session: AsyncSession, project_id: str, row_id: int, *, actor: Actor, now: datetime
) -> None:
    """The pending row `row_id` of project `project_id` becomes `current`; the project's current
    one (and any other pending one) `previous`; its older `previous` rows are deleted (accepted no
    more). Other projects' rows are untouched. Audited."""
    of_project = CallbackSecret.project_id == project_id
    await session.execute(
        delete(CallbackSecret).where(of_project, CallbackSecret.state == PREVIOUS)
    )
    await session.execute(
        update(CallbackSecret)
        .where(of_project, CallbackSecret.id != row_id)
        .values(state=PREVIOUS, updated_at=now)
    )
    await session.execute(
        update(CallbackSecret)
        .where(of_project, CallbackSecret.id == row_id)
        .values(state=CURRENT, updated_at=now)
    )
    record(
        session,
        actor,
        Action.CALLBACK_SECRET_ROTATE,
        None,
        now=now,
        detail={"row": row_id},
        project_id=project_id,
    )


async def withdraw(
    session: AsyncSession,
    project_id: str,
    row_id: int,
    *,
    actor: Actor,
    now: datetime,
    reason: str,
) -> None:
    """Delete the pending row `row_id` of project `project_id` (its secret is accepted no more)
    and audit the refusal."""
    await session.execute(
        delete(CallbackSecret).where(
            CallbackSecret.project_id == project_id, CallbackSecret.id == row_id
        )
    )
    record(
        session,
        actor,
        Action.CALLBACK_SECRET_ROTATE_REFUSED,
        None,
        now=now,
        detail={"row": row_id, "reason": reason},
        project_id=project_id,
    )


REPORT_LIMIT = 1000
"""At most this many of the newest callbacks are verified again for a report: enough to tell
which secret Sinch signs with, without reading minutes of a busy inbox."""


async def recent_matches(
    session: AsyncSession, project_id: str, secrets: Mapping[str, str], *, since: datetime
) -> Counter[str]:
    """How many of project `project_id`'s callbacks kept since `since` (the newest
    `REPORT_LIMIT` at most) each secret of `secrets` (label -> secret) signed, by verifying each
    kept body and signature again; `other` for the rest."""
    rows = await session.execute(
        select(CallbackEvent.body, CallbackEvent.headers)
        .where(CallbackEvent.project_id == project_id, CallbackEvent.received_at >= since)
        .order_by(CallbackEvent.id.desc())
        .limit(REPORT_LIMIT)
    )
    counts: Counter[str] = Counter()
    wanted = SIGNATURE_HEADER.lower()
    for body, headers in rows:
        given = next((str(v) for k, v in (headers or {}).items() if k.lower() == wanted), "")
        given = given.strip().lower()
        label = next(
            (
                name
                for name, secret in secrets.items()
                if hmac.compare_digest(
                    sign(body, secret).encode(), given.encode("ascii", "replace")
                )
            ),
            "other",
        )
        counts[label] += 1
    return counts
