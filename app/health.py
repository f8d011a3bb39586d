"""`/healthz` (the process runs), `/readyz` (the database answers, Redis answers and can hold
arq's queue, a callback secret is configured) and `/metrics`.

A door of the API beside app/main.py, not part of the shared edge (app/web/): it looks into the
rooms below (the callback secrets, the counts, the subscriptions' deliveries, the forecasts'
age)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import timedelta
from typing import Literal

from arq import ArqRedis
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from sqlalchemy import text

from app.callbacks.secrets import AcceptedSecrets
from app.core.db import utcnow
from app.core.jobs import memory_verdict, mib
from app.counts import service as counts_service
from app.forecasts import queries as forecasts
from app.subscriptions import repository as subscriptions
from app.subscriptions.rules import failing
from app.web.auth import UnauthorizedError, token_accepted
from app.web.deps import ResourcesDep

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 2.0
REDIS_PROBE_KEY = "arq:readyz-probe"
"""Written (with a short expiry) by every /readyz: whether Redis takes writes is known only by
writing. In arq's key space, where the service needs write rights anyway."""
REDIS_PROBE_TTL_MS = 10_000
UNVERIFIABLE_CALLBACKS = "not configured: callbacks answer 503"
"""`callbackSecret` on /readyz while SINCH_CALLBACK_SECRETS is empty: the callback endpoint
refuses everything (`app/callbacks/endpoint.py`), so the process is not ready for Sinch."""


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
    """`database`, `redis` and `callbackSecret` on /readyz: "ok" or what is wrong; empty on
    /healthz."""


@router.get("/healthz", response_model=Health, summary="The process is running")
async def healthz() -> Health:
    return Health(status="ok", checks={})


async def _check(probe: Awaitable[object]) -> str:
    """Answers "ok" or one short line saying what is wrong: the probe's own answer when it gives
    a string, else the exception's class name."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            verdict = await probe
    except TimeoutError:
        return "timeout"
    except Exception as exc:
        # The class name only: driver messages can carry host names or user names.
        return f"error: {type(exc).__name__}"
    return verdict if isinstance(verdict, str) else "ok"


async def redis_verdict(redis: ArqRedis) -> str:
    """Answers "ok" or why Redis cannot hold arq's queue: it refuses writes (`maxmemory`
    reached under `noeviction`, a write probe refused, a read-only replica) or it may evict keys
    (any `maxmemory-policy` but `noeviction`: queued jobs would silently vanish). One round trip:
    INFO memory and a small write, pipelined. What Redis does not tell (INFO refused, as hosted
    Redis may) is unknown, not a failure. Raises when Redis cannot be reached."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.info("memory")
        pipe.set(REDIS_PROBE_KEY, b"1", px=REDIS_PROBE_TTL_MS)
        memory, written = await pipe.execute(raise_on_error=False)
    if isinstance(written, OutOfMemoryError):
        if isinstance(memory, dict) and memory.get("maxmemory"):
            return (
                f"full: refuses writes (used {mib(memory.get('used_memory', 0))}"
                f" of maxmemory {mib(memory['maxmemory'])})"
            )
        return "full: refuses writes (OOM)"
    if isinstance(written, ReadOnlyError):
        return "read-only: refuses writes (a replica)"
    if isinstance(written, Exception) and not isinstance(written, ResponseError):
        raise written  # the connection failed mid-probe: let `_check` name it
    if not isinstance(memory, dict):
        return "ok"  # INFO refused: eviction and memory unknown; the write went through
    return memory_verdict(memory)


def _announce(request: Request, redis: str) -> None:
    """Log a Redis that cannot hold the queue once per episode and kind, loudly (probes come every
    few seconds), and say when it is fine again. Kept per app, on its state."""
    kind = None if redis == "ok" or redis.startswith(("error", "timeout")) else redis.split(":")[0]
    state = request.app.state
    announced: str | None = getattr(state, "redis_problem_announced", None)
    if kind == announced:
        return
    state.redis_problem_announced = kind
    if kind is not None:
        log.error("Redis cannot hold the job queue: %s (/readyz answers 503)", redis)
    elif announced is not None:
        log.warning("Redis can hold the job queue again (was: %s)", announced)


@router.get(
    "/readyz",
    response_model=Health,
    summary="The database answers; Redis answers and can hold the job queue; callbacks can be "
    "verified",
    description="`checks` has `database`, `redis` and `callbackSecret`, each `ok` or what is "
    "wrong. `callbackSecret` is `not configured: callbacks answer 503` while "
    "SINCH_CALLBACK_SECRETS is empty: such a process keeps no callback.",
    responses={
        503: {
            "model": Health,
            "description": "A dependency does not answer, Redis refuses writes or may evict "
            "queued jobs, or no callback secret is configured; `checks` says which and why.",
        }
    },
)
async def readyz(request: Request, resources: ResourcesDep) -> JSONResponse:
    async def ping_database() -> None:
        async with resources.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    database, redis = await asyncio.gather(
        _check(ping_database()), _check(redis_verdict(resources.redis))
    )
    _announce(request, redis)
    callback_secrets: AcceptedSecrets = request.state.callback_secrets
    secret = "ok" if callback_secrets.accepted else UNVERIFIABLE_CALLBACKS
    checks = {"database": database, "redis": redis, "callbackSecret": secret}
    ok = all(verdict == "ok" for verdict in checks.values())
    health = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(health.model_dump(), status_code=200 if ok else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="With METRICS_TOKEN set, only for `Authorization: Bearer <METRICS_TOKEN>`.",
    response_class=Response,
)
async def metrics(request: Request, resources: ResourcesDep) -> Response:
    expected = resources.settings.metrics_token
    if expected is not None:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token_accepted(presented.strip(), [expected]):
            raise UnauthorizedError("/metrics needs the bearer token METRICS_TOKEN.")
    try:
        now = utcnow()
        # Kept by the database as rows change: the cost does not grow with the tables.
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS), resources.reader() as session:
            counts = await counts_service.read(session, now, projects=None)
            oldest = await subscriptions.oldest_pending(session)
            known = await subscriptions.every(session)
            forecasts_computed = await forecasts.last_computed(session)
        for state, count in counts.events_by_state.items():
            resources.metrics.events_by_state.labels(state).set(count)
        resources.metrics.set_registrations(counts.registrations_by_status)
        resources.metrics.set_forecasts_age(
            None if forecasts_computed is None else (now - forecasts_computed).total_seconds()
        )
        gauge = resources.metrics.oldest_pending_delivery
        flag = resources.metrics.subscription_failing
        alert_after = timedelta(minutes=resources.settings.subscription_failing_alert_minutes)
        for subscription in known:
            since = oldest.get(subscription.id)
            gauge.labels(subscription.id).set((now - since).total_seconds() if since else 0.0)
            flagged = failing(subscription.enabled, subscription.failing_since, now, alert_after)
            flag.labels(subscription.id).set(1.0 if flagged else 0.0)
    except Exception as exc:  # metrics still answer; the gauges keep their last values
        log.warning("counts not refreshed for /metrics: %s", type(exc).__name__)
    return Response(resources.metrics.render(), media_type=CONTENT_TYPE_LATEST)
