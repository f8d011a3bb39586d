"""The arq worker's settings, built from the service's `Settings`."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, cast

from arq import cron, func
from arq.cron import CronJob
from arq.typing import WorkerCoroutine
from prometheus_client import start_http_server

from app.changes.sequencer import Sequencer
from app.changes.signal import ChangeSignal
from app.core.db import DriverConnections, create_engine, create_sessionmaker
from app.core.jobs import (
    DELIVER,
    DELIVERIES_QUEUE,
    EVENTS_QUEUE,
    PROCESS_EVENT,
    PROCESS_EVENTS,
    REFRESH_FACTS,
    RedisError,
    memory_verdict,
    redis_settings,
)
from app.core.lifecycle import within
from app.core.logs import configure_logging, warn_about_missing_configuration
from app.core.metrics import Metrics
from app.core.settings import Settings
from app.projects.clients import ProjectClients
from app.projects.service import settle_at_start
from app.sinch.client import DEFAULT_DEADLINE_SECONDS, create_http_client
from app.subscriptions.dispatcher import Dispatcher
from app.subscriptions.sender import Sending
from app.worker import tasks, wake
from app.worker.context import WorkerContext
from app.worker.leases import Leases

log = logging.getLogger(__name__)

MAX_JOBS = 30
SHARED_DELIVERY_JOBS = MAX_JOBS // 2
"""With `DELIVERY_WORKER=shared`, at most this many subscriptions' `deliver` jobs run in the
events' worker at once: the other slots are the events' (app/subscriptions/dispatcher.py)."""
DELIVERY_MAX_JOBS = 32
"""Subscriptions one delivery worker serves at once (each job keeps up to 32 POSTs in flight)."""
WORKER_HELD_CONNECTIONS = 8  # of the engine's pool (10, and 10 more on demand)


def every(interval_seconds: int) -> dict[str, Any]:
    """arq cron fields that fire about every `interval_seconds` (cron fires on clock marks, so an
    interval that does not divide a minute or an hour is rounded down to one that does)."""
    if interval_seconds < 60:
        step = max(1, interval_seconds)
        return {"second": set(range(0, 60, step))}
    if interval_seconds < 3600:
        return {"minute": set(range(0, 60, interval_seconds // 60)), "second": 0}
    return {"hour": set(range(0, 24, min(interval_seconds // 3600, 24))), "minute": 0, "second": 0}


def sinch_deadline_seconds(job_timeout_seconds: float) -> float:
    """The total deadline of one Sinch call in the worker (the event job's single try, or a
    cron's tries and backoff): the client's own, but never more than half the job timeout. A slow
    Sinch then ends as our retryable error (noted on the event, retried with backoff) well before
    arq cancels the job, and the rest of the job (two short transactions) has the other half."""
    return min(DEFAULT_DEADLINE_SECONDS, job_timeout_seconds / 2)


async def warn_about_eviction(ctx: WorkerContext) -> None:
    """Say loudly at start-up when Redis may evict keys: arq's queued jobs would silently vanish
    (the sweep finds their events only after `SWEEP_GRACE_SECONDS`). Unknown is not a failure:
    hosted Redis may refuse INFO."""
    try:
        memory = await ctx["redis"].info("memory")
    except RedisError:
        return
    if memory_verdict(memory).startswith("evicts"):
        log.error(
            "Redis maxmemory-policy is %s: it evicts keys, so queued jobs can vanish; "
            "arq needs noeviction",
            memory.get("maxmemory_policy"),
        )


def _job(function: Any) -> WorkerCoroutine:
    """`function` as arq runs it: under a short, renewed lease (app/worker/leases.py), so that a
    dead worker's job is taken up again within `LEASE_SECONDS`."""

    @functools.wraps(function)
    async def run(ctx: WorkerContext, *args: Any, **kwargs: Any) -> Any:
        try:
            async with ctx["leases"].held(ctx["job_id"]):
                return await function(ctx, *args, **kwargs)
        finally:
            wake.job_ended()

    # arq types its context as a plain dict; ours is the `WorkerContext` TypedDict.
    return cast(WorkerCoroutine, run)


def _serve_metrics(metrics: Metrics, port: int, host: str) -> None:
    if not port:
        return
    try:
        # Loopback unless WORKER_METRICS_HOST says otherwise: metrics name hosts and counts that
        # nobody outside the machine needs to read.
        start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:  # another worker on this host has the port: run without
        log.warning("worker metrics not served: %s", exc)


def _start_deliveries(ctx: WorkerContext, settings: Settings, *, jobs: int, queue: str) -> None:
    """What `deliver` jobs share: the change signal that wakes them, their sending state, and the
    dispatcher that enqueues them on `queue` (at most `jobs` running in this process)."""
    ctx["change_signal"] = signal = ChangeSignal(ctx["redis"])
    signal.start()
    ctx["sending"] = Sending(ctx["sessionmaker"], settings, signal)
    ctx["dispatcher"] = dispatcher = Dispatcher(
        ctx["sessionmaker"], ctx["redis"], signal, jobs=jobs, queue=queue
    )
    dispatcher.start()


async def _shutdown(ctx: WorkerContext) -> None:
    # In this order, each step of what start-up made (its key in `ctx`) bounded (`within`): a
    # shutdown that cannot hang, whatever one step does; one that fails or overruns is logged and
    # the next still runs.
    steps: tuple[tuple[str, float, str, Callable[[], Awaitable[object]]], ...] = (
        ("dispatcher", 10, "stopping the delivery dispatcher", lambda: ctx["dispatcher"].stop()),
        ("change_signal", 10, "stopping the change signal", lambda: ctx["change_signal"].stop()),
        ("sequencer", 15, "stopping the sequencer", lambda: ctx["sequencer"].stop()),
        ("http", 10, "closing the Sinch HTTP client", lambda: ctx["http"].aclose()),
        ("connections", 10, "closing the held connections", lambda: ctx["connections"].close()),
        ("engine", 10, "closing the database pool", lambda: ctx["engine"].dispose()),
        ("leases", 5, "stopping the job leases", lambda: ctx["leases"].stop()),
        ("wake", 5, "stopping the queue's wake-ups", lambda: ctx["wake"].stop()),
    )
    for key, seconds, what, step in steps:
        if key in ctx:
            await within(seconds, step(), what)
    log.info("worker stopped")


def _common(settings: Settings, ctx: WorkerContext, *, queue: str) -> None:
    configure_logging(settings)
    warn_about_missing_configuration(settings, log)
    ctx["settings"] = settings
    ctx["engine"] = engine = create_engine(settings)
    ctx["sessionmaker"] = create_sessionmaker(engine)
    ctx["metrics"] = Metrics()
    ctx["leases"] = leases = Leases(ctx["redis"])
    leases.start()
    ctx["wake"] = wake.start(ctx["redis"], queue)
    wake.install()


def _yield_the_cpu(increment: int) -> None:
    """Lower this process's CPU priority by `increment` (Unix nice): on a machine whose cores are
    all busy, the callbacks' worker, the API and PostgreSQL then run first, and deliveries and
    the forecasts take what is left. A process not allowed to change it runs as it is."""
    if increment:
        try:
            os.nice(increment)
        except OSError as exc:
            log.warning("delivery worker priority unchanged: %s", exc)


def build_delivery_worker_settings(settings: Settings) -> type:
    """The `DeliveryWorkerSettings` class for arq: a worker that sends the subscriptions'
    deliveries, from `DELIVERIES_QUEUE`, with a dispatcher of its own, and runs the forecasts
    cron. Its CPU, event loop, connections and job slots are apart from the callbacks'
    (`build_worker_settings`), and its CPU priority is lower (`DELIVERY_WORKER_NICE`)."""

    async def on_startup(ctx: WorkerContext) -> None:
        _common(settings, ctx, queue=DELIVERIES_QUEUE)
        _yield_the_cpu(settings.delivery_worker_nice)
        _serve_metrics(
            ctx["metrics"], settings.delivery_worker_metrics_port, settings.worker_metrics_host
        )
        _start_deliveries(ctx, settings, jobs=DELIVERY_MAX_JOBS, queue=DELIVERIES_QUEUE)
        await warn_about_eviction(ctx)
        log.info("delivery worker started", extra={"database": settings.safe_database_url()})

    attributes: dict[str, Any] = {
        "functions": [_deliver_function(settings)],
        "queue_name": DELIVERIES_QUEUE,
        # The forecasts' CPU-bound work (deriving, quantiles, forecasts) runs here, at this
        # process's lower priority, not in the callbacks' worker, whose event loop and interpreter
        # it held for up to seconds when thousands of registrations had moved (bench/README.md).
        "cron_jobs": [_forecasts_cron(settings)],
        "on_startup": on_startup,
        # One slot more than the dispatcher fills: the cron's, so it never holds a delivery back.
        "max_jobs": DELIVERY_MAX_JOBS + 1,
        **_both_workers(settings),
    }
    return type("DeliveryWorkerSettings", (), attributes)


def _both_workers(settings: Settings) -> dict[str, Any]:
    """The arq settings both kinds of worker share."""
    return {
        "redis_settings": redis_settings(settings),
        "on_shutdown": _shutdown,
        # arq reads at most 100 jobs per poll and polls every 0.5 s by default: a cap near 200
        # jobs/s, and up to half a second of waiting per event. Ours polls when woken (an
        # enqueue, a job's end) and at least this often: app/worker/wake.py.
        "poll_delay": wake.FALLBACK_SECONDS,
        "keep_result": 0,
        "job_timeout": settings.job_timeout_seconds,
        "handle_signals": True,
        # SIGTERM: stop taking jobs, let running ones finish; what is cut short runs again later.
        "job_completion_wait": settings.shutdown_grace_seconds,
        "health_check_interval": 30,
    }


def _function(settings: Settings, function: Any, name: str, *, max_tries: int) -> Any:
    """One of our jobs as arq registers it: leased (`_job`), no result kept, bounded by
    `JOB_TIMEOUT_SECONDS`, run at most `max_tries` times."""
    return func(
        _job(function),
        name=name,
        max_tries=max_tries,
        keep_result=0,
        timeout=settings.job_timeout_seconds,
    )


def _periodic(settings: Settings, task: Any, *, at_startup: bool = False, **when: Any) -> CronJob:
    """A cron of `task` at the arq cron fields `when` (and at start-up if `at_startup`), within
    the one job timeout. `unique`: one run per scheduled time across workers. That does not keep
    two runs from overlapping (each worker's start-up run has a time of its own, and a run may
    outlast its interval): a cron that must run alone says so itself (the forecasts'
    `repository.alone`).

    arq guards every running job with one "in progress" mark sized by the LONGEST timeout of any
    job (+10 s); `_job` shortens it to a renewed lease (app/worker/leases.py), so a dead worker's
    events wait at most `LEASE_SECONDS`. No job gets a longer timeout than process_event's; each
    fits it: process_event makes at most one Sinch call (`sinch_deadline_seconds`), the crons stop
    at their own budget (`tasks.cron_budget`), and a full import belongs to `python -m app
    reconcile`."""
    timeout = settings.job_timeout_seconds
    return cron(_job(task), **when, unique=True, run_at_startup=at_startup, timeout=timeout)


def _forecasts_cron(settings: Settings) -> CronJob:
    """`refresh_forecasts`, every `FORECAST_INTERVAL_SECONDS` and at start-up: in the delivery
    worker, or with `DELIVERY_WORKER=shared` in the one worker. In the delivery worker, which
    runs no sequencer, the job numbers the `overdue` changes it recorded itself."""
    return _periodic(
        settings,
        tasks.refresh_forecasts,
        at_startup=True,
        **every(settings.forecast_interval_seconds),
    )


def _deliver_function(settings: Settings) -> Any:
    # A delivery's retries are its own (next_attempt_at); arq's tries only run again a job whose
    # worker died (its deliveries are still pending).
    return _function(settings, tasks.deliver, DELIVER, max_tries=3)


def build_worker_settings(settings: Settings) -> type:
    """A `WorkerSettings` class for arq, holding `settings` in its start-up hook: the callbacks'
    jobs and the crons but the forecasts', from `EVENTS_QUEUE`; with `DELIVERY_WORKER=shared`,
    the deliveries and the forecasts cron too."""
    shared = settings.delivery_worker == "shared"

    async def on_startup(ctx: WorkerContext) -> None:
        _common(settings, ctx, queue=EVENTS_QUEUE)
        await settle_at_start(ctx["sessionmaker"], settings)
        engine = ctx["engine"]
        # Fewer than the pool holds, so that sessions always find a connection.
        ctx["connections"] = DriverConnections(engine, keep=WORKER_HELD_CONNECTIONS)
        ctx["http"] = http = create_http_client(settings)
        deadline = sinch_deadline_seconds(settings.job_timeout_seconds)
        ctx["projects"] = projects = ProjectClients(
            settings, http, ctx["sessionmaker"], deadline_seconds=deadline
        )
        ctx["sinch"] = projects.settings_client
        _serve_metrics(ctx["metrics"], settings.worker_metrics_port, settings.worker_metrics_host)
        ctx["sequencer"] = sequencer = Sequencer(ctx["sessionmaker"], ctx["redis"])
        sequencer.start()
        if shared:
            _start_deliveries(ctx, settings, jobs=SHARED_DELIVERY_JOBS, queue=EVENTS_QUEUE)
        await warn_about_eviction(ctx)
        log.info("worker started", extra={"database": settings.safe_database_url()})

    def periodic(task: Any, *, at_startup: bool = False, **when: Any) -> CronJob:
        return _periodic(settings, task, at_startup=at_startup, **when)

    cron_jobs = [
        periodic(tasks.sweep, **every(settings.sweep_interval_seconds)),
        periodic(tasks.fold_counts, **every(settings.counts_fold_interval_seconds)),
        *([_forecasts_cron(settings)] if shared else []),
        periodic(tasks.prune_events, hour={3}, minute={17}, second=0),
        # Hourly, and at start-up: loads the market map when it is a day old (markets.MAX_AGE).
        periodic(tasks.refresh_markets, at_startup=True, minute={41}, second=0),
        # Hourly, and at start-up: refreshes each project's catalog when it is
        # CATALOG_REFRESH_INTERVAL_SECONDS old (a day by default).
        periodic(tasks.refresh_catalog, at_startup=True, minute={53}, second=0),
    ]
    if settings.reconcile_interval_seconds > 0:
        cron_jobs.append(
            periodic(
                tasks.reconcile_changes,
                at_startup=True,
                **every(settings.reconcile_interval_seconds),
            )
        )

    backstop = settings.job_max_tries + 2
    attributes: dict[str, Any] = {
        "functions": [
            # Our own give-up comes at `job_max_tries`; arq's limit is a backstop above it (a job
            # is also re-run when a worker dies mid-job).
            _function(settings, tasks.process_event, PROCESS_EVENT, max_tries=backstop),
            # The events' own tries are their `process_event` jobs' (the hand-offs); arq's tries
            # only run again a batch whose worker died (what it finished is done).
            _function(settings, tasks.process_events, PROCESS_EVENTS, max_tries=3),
            _function(settings, tasks.refresh_facts, REFRESH_FACTS, max_tries=backstop),
            *([_deliver_function(settings)] if shared else []),
        ],
        "cron_jobs": cron_jobs,
        "on_startup": on_startup,
        "max_jobs": MAX_JOBS,
        **_both_workers(settings),
    }
    return type("WorkerSettings", (), attributes)
