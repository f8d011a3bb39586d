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
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.callbacks.endpoint import CALLBACK_PATH, OPENAPI_OPERATION, CallbackEndpoint
from app.callbacks.enqueuer import Enqueuer
from app.callbacks.writer import InboxWriter
from app.changes.router import router as changes_router
from app.changes.sequencer import Sequencer
from app.changes.service import FeedReader
from app.changes.signal import ChangeSignal
from app.console.router import install_console
from app.counts.router import router as counts_router
from app.db import create_engine, create_reader, create_sessionmaker
from app.deps import Resources
from app.docs import install_docs
from app.events.router import router as events_router
from app.health import router as health_router
from app.jobs import create_redis
from app.logs import configure_logging, warn_about_missing_configuration
from app.metrics import Metrics
from app.problems import install_problem_handlers
from app.registrations.router import router as registrations_router
from app.settings import Settings
from app.sinch.client import SinchClient, create_http_client
from app.subscriptions.router import router as subscriptions_router

log = logging.getLogger(__name__)


class ServiceAPI(FastAPI):
    """FastAPI, with POSTs to the callback endpoint answered in front of its middleware stack.

    The callback endpoint is the hot path: Sinch may deliver thousands of callbacks a second, and
    FastAPI's middleware layers cost about as much CPU per request as verifying and keeping a
    callback does (README, Performance). The endpoint needs none of them: a plain ASGI app that
    reads its own body, answers its own errors as problem documents and runs no dependencies.
    """

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        endpoint = CallbackEndpoint()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if (
                scope["type"] == "http"
                and scope["path"] == CALLBACK_PATH
                and scope["method"] == "POST"
            ):
                await endpoint(scope, receive, send)
            else:
                await stack(scope, receive, send)

        return app


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
        sessionmaker = create_sessionmaker(engine)
        changes = ChangeSignal(redis)
        sequencer = Sequencer(sessionmaker, redis)
        changes.start()
        sequencer.start()
        resources = Resources(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            reader=create_reader(engine),
            redis=redis,
            metrics=Metrics(),
            inbox=inbox,
            sinch=SinchClient.from_settings(settings, http)
            if settings.sinch_credentials_configured
            else None,
            changes=changes,
            feed=FeedReader(create_reader(engine)),
            sequencer=sequencer,
        )
        # Everything built so far lives as long as the process: keep the collector from scanning
        # it again and again (full collections otherwise pause requests for tens of ms).
        gc.collect()
        gc.freeze()
        log.info("api started", extra={"database": settings.safe_database_url()})
        try:
            yield {"resources": resources}
        finally:
            await changes.stop()
            await sequencer.stop()
            await inbox.stop()
            await enqueuer.stop()
            await http.aclose()
            await redis.aclose()
            await engine.dispose()
            log.info("api stopped")

    app = ServiceAPI(
        title="Sinch sender ID registrations",
        summary="Keeps a converged local copy of Sinch sender ID registrations.",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's pages load their assets from CDNs; app/docs.py serves its own.
        docs_url=None,
        redoc_url=None,
    )
    install_problem_handlers(app)
    install_docs(app)
    # POSTs to the callback endpoint never reach the router (`ServiceAPI`); the route is there
    # for the other methods' 405. FastAPI does not describe a plain ASGI route by itself.
    app.router.routes.append(
        Route(CALLBACK_PATH, CallbackEndpoint(), methods=["POST"], include_in_schema=False)
    )
    app.include_router(health_router)
    app.include_router(registrations_router)
    app.include_router(events_router)
    app.include_router(changes_router)
    app.include_router(subscriptions_router)
    app.include_router(counts_router)
    install_console(app)
    _describe_callback_endpoint(app)
    return app


def _describe_callback_endpoint(app: FastAPI) -> None:
    describe_routes = app.openapi

    def openapi() -> dict[str, Any]:
        schema = describe_routes()
        schema["paths"].setdefault(CALLBACK_PATH, {})["post"] = OPENAPI_OPERATION
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def __getattr__(name: str) -> Any:
    if name == "app":
        # uvicorn has configured its own logging (its handlers and formats) and now loads the app,
        # before its first line ("Started server process"): from here on every line goes through
        # the service's formatter. The lifespan configures it again (idempotent) for other hosts.
        settings = Settings()
        configure_logging(settings)
        return create_app(settings)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
