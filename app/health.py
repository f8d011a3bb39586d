"""`/healthz` (the process runs), `/readyz` (the database and Redis answer) and `/metrics`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy import func, select, text

from app.deps import ResourcesDep
from app.models import CallbackEvent, EventState

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 2.0


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
    """`database` and `redis` on /readyz: "ok" or what went wrong; empty on /healthz."""


@router.get("/healthz", response_model=Health, summary="The process is running")
async def healthz() -> Health:
    return Health(status="ok", checks={})


async def _check(probe: Awaitable[object]) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await probe
    except TimeoutError:
        return "timeout"
    except Exception as exc:
        # The class name only: driver messages can carry host names or user names.
        return f"error: {type(exc).__name__}"
    return "ok"


@router.get(
    "/readyz",
    response_model=Health,
    summary="The database and Redis answer",
    responses={503: {"model": Health, "description": "A dependency does not answer."}},
)
async def readyz(resources: ResourcesDep) -> JSONResponse:
    async def ping_database() -> None:
        async with resources.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    database, redis = await asyncio.gather(_check(ping_database()), _check(resources.redis.ping()))
    ok = database == "ok" and redis == "ok"
    health = Health(
        status="ok" if ok else "unavailable", checks={"database": database, "redis": redis}
    )
    return JSONResponse(health.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(resources: ResourcesDep) -> Response:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS), resources.engine.connect() as connection:
            rows = await connection.execute(
                select(CallbackEvent.state, func.count()).group_by(CallbackEvent.state)
            )
            counts: dict[str, int] = {state: count for state, count in rows}
        for state in EventState:
            resources.metrics.events_by_state.labels(state.value).set(counts.get(state.value, 0))
    except Exception as exc:  # metrics still answer; the gauges keep their last values
        log.warning("event counts not refreshed for /metrics: %s", type(exc).__name__)
    return Response(resources.metrics.render(), media_type=CONTENT_TYPE_LATEST)
