"""The HTTP application: `create_app(settings)` and the lifespan that builds its resources.

`uvicorn app.main:app` serves an app built from the environment; `app` is created on first access
(a module `__getattr__`), so importing this module has no side effect.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app.callbacks.enqueuer import Enqueuer
from app.callbacks.router import router as callbacks_router
from app.callbacks.writer import InboxWriter
from app.db import create_engine, create_reader, create_sessionmaker
from app.deps import Resources
from app.events.router import router as events_router
from app.health import router as health_router
from app.logs import configure_logging, warn_about_missing_configuration
from app.metrics import Metrics
from app.problems import install_problem_handlers
from app.registrations.router import router as registrations_router
from app.settings import Settings
from app.sinch.client import SinchClient, create_http_client
from app.worker.queue import create_redis

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API. Resources are created by the lifespan, once per process, not here."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        configure_logging(settings)
        warn_about_missing_configuration(settings, log)
        engine = create_engine(settings)
        redis = create_redis(settings)
        http = create_http_client(settings)
        enqueuer = Enqueuer(redis)
        inbox = InboxWriter(engine, on_committed=enqueuer.submit)
        enqueuer.start()
        inbox.start()
        resources = Resources(
            settings=settings,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            reader=create_reader(engine),
            redis=redis,
            metrics=Metrics(),
            inbox=inbox,
            sinch=SinchClient.from_settings(settings, http)
            if settings.sinch_credentials_configured
            else None,
        )
        # Everything built so far lives as long as the process: keep the collector from scanning
        # it again and again (full collections otherwise pause requests for tens of ms).
        gc.collect()
        gc.freeze()
        log.info("api started", extra={"database": settings.safe_database_url()})
        try:
            yield {"resources": resources}
        finally:
            await inbox.stop()
            await enqueuer.stop()
            await http.aclose()
            await redis.aclose()
            await engine.dispose()
            log.info("api stopped")

    app = FastAPI(
        title="Sinch sender ID registrations",
        summary="Keeps a converged local copy of Sinch sender ID registrations.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    # Routes are matched in order: the callback endpoint, the hot path, is tried first.
    app.include_router(callbacks_router)
    app.include_router(health_router)
    app.include_router(registrations_router)
    app.include_router(events_router)
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return create_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
