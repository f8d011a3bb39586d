"""`python -m app secret rotate`: a new callback secret, accepted everywhere before Sinch uses it.

The steps, each only once the one before succeeded:
1. the new secret is kept as `pending` (`callback_secrets`): every API process accepts it within
   about a second (app/callbacks/secrets.py);
2. a probe signed with it is POSTed to the callback endpoint of each given URL, over fresh
   connections, until every API process announced in Redis has answered one with its instance
   id; when the deadline passes first, the pending secret is withdrawn (audited) and the rotation
   refused: Sinch is not touched;
3. the secret is PUT to Sinch's callback configuration;
4. it becomes `current` (the one before it `previous`, still accepted), audited in that
   transaction.

Decision: the probe goes through the callback endpoint itself, so a process is judged by the very
code that verifies Sinch's callbacks. A load balancer chooses which process a probe reaches; the
probes continue (one per URL per round) until each announced process has answered, so with N
processes behind one URL that takes a few rounds. A process that never gets a probe within the
deadline counts as not accepting.
"""

from __future__ import annotations

import asyncio
import secrets as secrets_module
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from arq import ArqRedis
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.repository import Actor
from app.callbacks import secrets
from app.core.db import utcnow
from app.sinch.client import SinchClient

CALLBACK_PATH = "/callbacks/sinch/registrations"
ROUND_PAUSE_SECONDS = 0.2


@dataclass
class ProbeReport:
    live: set[str] = field(default_factory=set)
    """The API processes announced in Redis at the last round."""
    accepted: set[str] = field(default_factory=set)
    """Those that answered a probe signed with the new secret."""
    answers: Counter[str] = field(default_factory=Counter)
    """Every probe's answer: an HTTP status, or `no answer`."""

    @property
    def complete(self) -> bool:
        return bool(self.live) and self.live <= self.accepted

    def describe(self) -> str:
        answers = ", ".join(f"{status} x{count}" for status, count in sorted(self.answers.items()))
        if not self.live:
            return f"no running API process announced itself in Redis (probe answers: {answers})"
        missing = sorted(self.live - self.accepted)
        return (
            f"{len(missing)} of {len(self.live)} running API processes did not accept the new "
            f"secret ({', '.join(missing)}); probe answers: {answers}"
        )


class RotationRefused(Exception):
    """The probe failed: the new secret is withdrawn and Sinch was not changed."""


@dataclass
class Rotation:
    previous: SecretStr
    """What Sinch signed with before."""
    new: SecretStr
    probe: ProbeReport


async def probe_every_process(
    redis: ArqRedis, api_urls: Sequence[str], secret: str, *, within: float
) -> ProbeReport:
    """Send signed probes to each URL, round after round, until every API process announced in
    Redis has accepted one or `within` seconds have passed."""
    report = ProbeReport()
    deadline = time.monotonic() + within
    # No keep-alive: each probe opens its own connection, which a balancer may give another
    # process.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=5.0, limits=limits) as client:
        while True:
            report.live = await secrets.live_instances(redis)
            for url in api_urls:
                nonce = uuid.uuid4().hex
                body, headers = secrets.signed_probe(secret, nonce)
                try:
                    answer = await client.post(
                        url.rstrip("/") + CALLBACK_PATH, content=body, headers=headers
                    )
                except httpx.HTTPError:
                    report.answers["no answer"] += 1
                    continue
                report.answers[str(answer.status_code)] += 1
                instance = _instance(answer, nonce)
                if instance is not None:
                    report.accepted.add(instance)
            if report.complete or time.monotonic() >= deadline:
                return report
            await asyncio.sleep(ROUND_PAUSE_SECONDS)


def _instance(answer: httpx.Response, nonce: str) -> str | None:
    if answer.status_code != 200:
        return None
    try:
        document = answer.json()
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("probe") != nonce:
        return None
    instance = document.get("instance")
    return instance if isinstance(instance, str) else None


async def rotate(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
    sinch: SinchClient,
    api_urls: Sequence[str],
    *,
    project_id: str,
    actor: Actor,
    within: float,
) -> Rotation:
    """The steps of the module's docstring, for project `project_id` (whose Sinch client `sinch`
    is). `RotationRefused` when a process does not accept the
    new secret in time; a Sinch error from the PUT leaves the secret `pending` (still accepted,
    harmless: the next rotation retires it)."""
    previous = (await sinch.get_callback_configuration()).hmac_secret
    new = secrets_module.token_urlsafe(32)
    async with sessionmaker.begin() as session:
        row_id = await secrets.add_pending(session, project_id, new, now=utcnow())
    try:
        report = await probe_every_process(redis, api_urls, new, within=within)
    except BaseException:
        async with sessionmaker.begin() as session:
            await secrets.withdraw(
                session, project_id, row_id, actor=actor, now=utcnow(), reason="probe interrupted"
            )
        raise
    if not report.complete:
        reason = report.describe()
        async with sessionmaker.begin() as session:
            await secrets.withdraw(
                session, project_id, row_id, actor=actor, now=utcnow(), reason=reason
            )
        raise RotationRefused(reason)
    await sinch.put_callback_configuration(SecretStr(new))
    async with sessionmaker.begin() as session:
        await secrets.activate(session, project_id, row_id, actor=actor, now=utcnow())
    return Rotation(previous=previous, new=SecretStr(new), probe=report)
