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

from app.audit.router import router as audit_router
from app.callbacks.endpoint import (
    CALLBACK_PATH,
    OPENAPI_OPERATION,
    PROJECT_CALLBACK_PATH,
    PROJECT_OPENAPI_OPERATION,
    UNSUPPORTED_ENCODING,
    CallbackEndpoint,
    callback_project,
)
from app.callbacks.enqueuer import Enqueuer
from app.callbacks.secrets import AcceptedSecrets
from app.callbacks.writer import InboxWriter
from app.catalog.router import routers as catalog_routers
from app.changes.router import router as changes_router
from app.changes.sequencer import Sequencer
from app.changes.service import FeedReader
from app.changes.signal import ChangeSignal
from app.console.router import install_console
from app.core.db import create_engine, create_reader, create_sessionmaker
from app.core.jobs import create_redis
from app.core.lifecycle import within
from app.core.logs import configure_logging, warn_about_missing_configuration
from app.core.metrics import Metrics
from app.core.problems import install_problem_handlers
from app.core.settings import Settings
from app.counts.router import router as counts_router
from app.events.router import router as events_router
from app.forecasts.router import router as forecasts_router
from app.health import router as health_router
from app.projects.clients import ProjectClients
from app.projects.router import router as projects_router
from app.projects.service import settle_at_start
from app.registrations.router import router as registrations_router
from app.sinch.client import SinchClient, create_http_client
from app.submissions.router import reader as attachments_reader
from app.submissions.router import router as submissions_router
from app.subscriptions.router import router as subscriptions_router
from app.tokens.directory import TokenDirectory
from app.web.bodies import BodyGuard
from app.web.deps import Resources
from app.web.docs import install_docs

log = logging.getLogger(__name__)


class ServiceAPI(FastAPI):
    """FastAPI, with POSTs to the callback endpoint answered in front of FastAPI itself,
    and every other request's body behind `BodyGuard` (token first, capped).

    The callback endpoint is the hot path: Sinch may deliver thousands of callbacks a second, and
    FastAPI's middleware layers cost about as much CPU per request as verifying and keeping a
    callback does (README, Performance). The endpoint needs none of them: a plain ASGI app that
    reads its own body, answers its own errors as problem documents and runs no dependencies.
    """

    _callbacks: CallbackEndpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Callbacks before FastAPI's own `__call__`, whose per-request check of OpenTelemetry's
        # providers (FastAPI's native telemetry) cost 3 % of the API's CPU per callback.
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and callback_project(scope["path"]) is not None
        ):
            if self._callbacks is None:
                self._callbacks = CallbackEndpoint()  # in the event loop: its timer needs one
            await self._callbacks(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        stack = BodyGuard(super().build_middleware_stack())

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await stack(scope, receive, send)
            elif _encoded(scope):
                # No route decodes a body: refused here (the endpoint refuses its own), unread.
                await send(UNSUPPORTED_ENCODING.start)
                await send(UNSUPPORTED_ENCODING.body)
            else:
                await stack(scope, receive, send)

        return app


def _encoded(scope: Scope) -> bool:
    """Whether the request's body has a Content-Encoding other than identity."""
    for name, value in scope["headers"]:
        if name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            return True
    return False


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
        reader = create_reader(engine)
        await settle_at_start(sessionmaker, settings)
        callback_secrets = AcceptedSecrets(settings, reader, redis)
        await callback_secrets.start()
        tokens = TokenDirectory(reader, sessionmaker, ttl=settings.token_cache_seconds)
        changes = ChangeSignal(redis)
        sequencer = Sequencer(sessionmaker, redis)
        changes.start()
        sequencer.start()
        resources = Resources(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            reader=reader,
            redis=redis,
            metrics=Metrics(),
            sinch=SinchClient.from_settings(settings, http)
            if settings.sinch_credentials_configured
            else None,
            tokens=tokens,
        )
        # Everything built so far lives as long as the process: keep the collector from scanning
        # it again and again (full collections otherwise pause requests for tens of ms).
        gc.collect()
        gc.freeze()
        log.info("api started", extra={"database": settings.safe_database_url()})
        try:
            # What one package uses stands apart, named as that package reads it (the callback
            # endpoint; `app.changes.live`), so that `Resources` names no domain type.
            yield {
                "resources": resources,
                "inbox": inbox,
                "callback_secrets": callback_secrets,
                "changes": changes,
                "feed": FeedReader(create_reader(engine)),
                "sequencer": sequencer,
                "project_clients": ProjectClients(settings, http, sessionmaker),
            }
        finally:
            # Every step bounded (`within`): a shutdown that cannot hang, whatever one step does;
            # one that fails or overruns is logged and the next still runs.
            await within(10, changes.stop(), "stopping the change signal")
            await within(15, sequencer.stop(), "stopping the sequencer")
            await within(10, callback_secrets.stop(), "stopping the callback secrets' refresh")
            await within(10, tokens.close(), "closing the token directory")
            await within(45, inbox.stop(), "stopping the inbox writer")
            await within(10, enqueuer.stop(), "stopping the enqueuer")
            await within(10, http.aclose(), "closing the Sinch HTTP client")
            await within(10, redis.aclose(), "closing Redis")
            await within(10, engine.dispose(), "closing the database pool")
            log.info("api stopped")

    app = ServiceAPI(
        title="Sinch sender ID registrations",
        summary="Keeps a converged local copy of Sinch sender ID registrations.",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's pages load their assets from CDNs; app/web/docs.py serves its own.
        docs_url=None,
        redoc_url=None,
        # DOCS_ENABLED=false: the interactive pages and the document they read are not served.
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    install_problem_handlers(app)
    if settings.docs_enabled:
        install_docs(app)
    # POSTs to the callback endpoint never reach the router (`ServiceAPI`); the route is there
    # for the other methods' 405. FastAPI does not describe a plain ASGI route by itself.
    for path in (CALLBACK_PATH, PROJECT_CALLBACK_PATH):
        app.router.routes.append(
            Route(path, CallbackEndpoint(), methods=["POST"], include_in_schema=False)
        )
    app.include_router(health_router)
    app.include_router(registrations_router)
    app.include_router(submissions_router)
    app.include_router(attachments_reader)
    app.include_router(events_router)
    app.include_router(changes_router)
    app.include_router(subscriptions_router)
    app.include_router(audit_router)
    app.include_router(counts_router)
    app.include_router(forecasts_router)
    app.include_router(projects_router)
    for router in catalog_routers:
        app.include_router(router)
    install_console(app)
    _describe_callback_endpoint(app)
    return app


def _describe_callback_endpoint(app: FastAPI) -> None:
    describe_routes = app.openapi

    def openapi() -> dict[str, Any]:
        schema = describe_routes()
        schema["paths"].setdefault(CALLBACK_PATH, {})["post"] = OPENAPI_OPERATION
        schema["paths"].setdefault(PROJECT_CALLBACK_PATH, {})["post"] = PROJECT_OPENAPI_OPERATION
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
