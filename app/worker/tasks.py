"""The worker's jobs. Thin: each owns its transactions and calls the service steps.

No network call is made while a transaction is open: the GET that checks an event happens between
two short transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from arq import Retry
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog import service as catalog
from app.changes import outbox
from app.changes import repository as changes_repository
from app.changes import service as changes_service
from app.changes.sequencer import number_and_publish
from app.core import idempotency
from app.core.db import utcnow
from app.core.jobs import RedisError, enqueue_events, enqueue_facts
from app.core.models import EventState, HistorySource
from app.counts import service as counts_service
from app.events import processing, service
from app.events import repository as events_repository
from app.events.processing import Finished, MustCheck, Step
from app.forecasts import service as forecasts_service
from app.registrations import markets
from app.registrations import repository as registrations_repository
from app.registrations.reconcile import reconcile
from app.registrations.service import apply_answer
from app.sinch.client import SinchClient
from app.sinch.errors import (
    SinchError,
    SinchNotFoundError,
    SinchRejectedError,
    SinchRetryableError,
)
from app.subscriptions import sender
from app.subscriptions import service as subscriptions_service
from app.worker.context import WorkerContext

log = logging.getLogger(__name__)

T = TypeVar("T")

SWEEP_BATCH = 1000
MAX_RETRY_DELAY_SECONDS = 300.0
FACTS_RETRY_PAUSE = timedelta(minutes=15)
"""After a facts fetch spent its tries on an unavailable Sinch, the next chain starts this late."""
SINCH_ATTEMPTS_PER_TRY = 1
"""Tries of the GET that checks an event, per try of its job. Retrying is the job's (arq `Retry`
with `retry_delay`, at most `JOB_MAX_TRIES` tries), never also the client's: one event costs at
most `JOB_MAX_TRIES` GETs (a 401's token refresh sends one again, and is not a try)."""


def cron_budget(ctx: WorkerContext) -> float:
    """Seconds a cron job may run: below the job timeout, so it ends on its own terms (committed
    work kept, a log line saying what is left) rather than being cancelled by arq."""
    return ctx["settings"].job_budget_seconds


def retry_delay(job_try: int, base: float) -> float:
    """Exponential backoff with full jitter on the upper half: base * 2^(try-1), capped."""
    ceiling = min(base * 2.0 ** (job_try - 1), MAX_RETRY_DELAY_SECONDS)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


async def process_event(ctx: WorkerContext, row_id: int) -> str:
    """Process inbox row `row_id`: apply, ignore, or check it with a GET. Answers the outcome."""
    skew = timedelta(seconds=ctx["settings"].event_time_skew_seconds)
    async with ctx["connections"].connection() as driver:
        step: Step | None = await processing.begin(driver, row_id, now=utcnow(), skew=skew)
    if step is None:
        # Its registration kept moving under it (other writers): the job runs again later.
        delay = retry_delay(ctx.get("job_try", 1), ctx["settings"].job_retry_base_seconds)
        raise Retry(defer=timedelta(seconds=delay))
    if isinstance(step, MustCheck):
        step = await _check(ctx, row_id, step)
    await _processed(ctx, row_id, step)
    _changed(ctx)
    return step.outcome


async def process_events(ctx: WorkerContext, row_ids: list[int]) -> int:
    """Process the inbox rows that one group commit kept, in kept order: apply or ignore each that
    needs no GET; hand each that must be checked with a GET (or whose registration kept moving)
    to a `process_event` job of its own, so that a slow Sinch holds no other event and each
    check has its own tries. Answers how many were handed on."""
    skew = timedelta(seconds=ctx["settings"].event_time_skew_seconds)
    handed_on: list[int] = []
    async with ctx["connections"].connection() as driver:
        async for row_id, step in processing.begin_many(driver, row_ids, skew=skew):
            if step is None or isinstance(step, MustCheck):
                handed_on.append(row_id)
            else:
                await _processed(ctx, row_id, step)
    if handed_on:
        # Raises when Redis refuses: the job then runs again, and what it finished is done.
        await enqueue_events(ctx["redis"], handed_on)
    _changed(ctx)
    return len(handed_on)


async def _processed(ctx: WorkerContext, row_id: int, step: Finished) -> None:
    """What follows an event's end: its facts fetch, its metrics, its log line."""
    if step.facts_due is not None and _sinch_configured(ctx):
        # Recorded in `facts_due_at` too: when Redis cannot take it, the sweep enqueues it.
        with contextlib.suppress(RedisError, OSError):
            await enqueue_facts(ctx["redis"], [step.facts_due])
    metrics = ctx["metrics"]
    metrics.events_processed.labels(step.outcome).inc()
    if step.received_at is not None:
        metrics.processing_lag.observe((utcnow() - step.received_at).total_seconds())
    _log_outcome(row_id, step.outcome)


def _sinch_configured(ctx: WorkerContext) -> bool:
    """Whether any project may have Sinch credentials here: the settings' (`SINCH_*`), or
    projects added with their sealed keys (`PROJECT_SECRETS_KEY` set)."""
    return ctx.get("sinch") is not None or ctx["settings"].project_secrets_key is not None


def _changed(ctx: WorkerContext) -> None:
    """A job may have committed changes of the feed: have them numbered (no wait here)."""
    sequencer = ctx.get("sequencer")
    if sequencer is not None:
        sequencer.poke()


def _log_outcome(row_id: int, outcome: str) -> None:
    """One line per event, its level by outcome: `failed:*` (given up, replayable) and `invalid:*`
    (unreadable, or unknown at Sinch) are warnings, as each asks the operator for something
    (docs/api.md, Outcomes); everything else (`applied`, `ignored`, `checked`, and the unstored
    `already_done`, `missing`) is info."""
    extra = {"row_id": row_id, "outcome": outcome}
    if outcome.startswith("failed:"):
        log.warning("event failed", extra=extra)
    elif outcome.startswith("invalid:"):
        log.warning("event invalid", extra=extra)
    else:
        log.info("event processed", extra=extra)


async def _check(ctx: WorkerContext, row_id: int, step: MustCheck) -> Finished:
    sessionmaker, settings = ctx["sessionmaker"], ctx["settings"]
    log_extra = {"row_id": row_id, "registration_id": step.registration_id}
    # The event's project's credentials, never another project's.
    sinch = await ctx["projects"].client(step.project_id)
    if sinch is None:
        return await _give_up(
            ctx,
            row_id,
            EventState.FAILED,
            "failed:not_configured",
            f"Sinch credentials of project {step.project_id} are not configured; replay the"
            " event once they are",
        )
    ctx["metrics"].sinch_gets.labels(step.decision.reason.value).inc()
    fetched_at = utcnow()
    try:
        snapshot = await sinch.get_registration(
            step.registration_id, max_attempts=SINCH_ATTEMPTS_PER_TRY
        )
    except SinchNotFoundError:
        return await _give_up(
            ctx,
            row_id,
            EventState.INVALID,
            "invalid:unknown_at_sinch",
            "Sinch does not know this registration (404)",
        )
    except SinchRejectedError as exc:
        return await _give_up(ctx, row_id, EventState.FAILED, "failed:rejected", str(exc))
    except SinchRetryableError as exc:
        job_try = ctx.get("job_try", 1)
        if job_try >= settings.job_max_tries:
            log.info("Sinch unavailable on the last of %d tries", job_try, extra=log_extra)
            return await _give_up(
                ctx, row_id, EventState.FAILED, "failed:sinch_unavailable", str(exc)
            )
        async with sessionmaker.begin() as session:
            await events_repository.note_error(session, row_id, str(exc))
        delay = max(retry_delay(job_try, settings.job_retry_base_seconds), exc.retry_after or 0.0)
        log.info("event will be retried in %.1fs (%s)", delay, type(exc).__name__, extra=log_extra)
        raise Retry(defer=timedelta(seconds=delay)) from exc
    except SinchError as exc:
        # An answer this service cannot use (not a registration, another registration): not
        # worth retrying at once, but Sinch may answer better later, so the event is replayable.
        log.info("Sinch answer unusable: %s", exc, extra=log_extra)
        return await _give_up(ctx, row_id, EventState.FAILED, "failed:unusable_answer", str(exc))

    async with sessionmaker.begin() as session:
        return await processing.finish_with_snapshot(
            session,
            row_id,
            snapshot,
            step.decision,
            project_id=step.project_id,
            fetched_at=fetched_at,
            now=utcnow(),
        )


async def refresh_facts(ctx: WorkerContext, registration_id: str) -> str:
    """Fetch a registration that a callback moved into one of `FACT_STATES` and apply it, so its
    reason and facts are Sinch's (app/registrations/facts.py). Answers what happened.

    Low priority and coalesced (app/core/jobs.py: `enqueue_facts`); no GET at all when a document
    fetched since the need arose (an event's check, a refresh) has met it. A Sinch unavailable is
    retried like an event's check, and after the last try the need waits `FACTS_RETRY_PAUSE`
    for the sweep; one that cannot answer usefully (404, refusal, an unusable document) ends the
    wait, since asking again would not help.
    """
    settings = ctx["settings"]
    if not _sinch_configured(ctx):
        return "not_configured"
    extra = {"registration_id": registration_id}
    async with ctx["sessionmaker"]() as session:
        project_id = await registrations_repository.facts_due(session, registration_id)
    if project_id is None:
        return "not_due"
    # The registration's project's credentials, never another project's.
    sinch = await ctx["projects"].client(project_id)
    if sinch is None:
        return "not_configured"
    ctx["metrics"].sinch_gets.labels("facts").inc()
    fetched_at = utcnow()
    try:
        snapshot = await sinch.get_registration(
            registration_id, max_attempts=SINCH_ATTEMPTS_PER_TRY
        )
    except SinchRetryableError as exc:
        job_try = ctx.get("job_try", 1)
        if job_try >= settings.job_max_tries:
            # Not given up, not hammered: the sweep takes it again after a pause.
            later = utcnow() + FACTS_RETRY_PAUSE
            async with ctx["sessionmaker"].begin() as session:
                await registrations_repository.postpone_facts(session, registration_id, until=later)
            log.info(
                "facts not fetched: Sinch unavailable (%s); again after %s",
                type(exc).__name__,
                later.isoformat(timespec="seconds"),
                extra=extra,
            )
            return "sinch_unavailable"
        delay = max(retry_delay(job_try, settings.job_retry_base_seconds), exc.retry_after or 0.0)
        raise Retry(defer=timedelta(seconds=delay)) from exc
    except SinchError as exc:
        log.warning("facts not fetched: %s", exc, extra=extra)
        async with ctx["sessionmaker"].begin() as session:
            await registrations_repository.clear_facts_due(
                session, registration_id, fetched_at=fetched_at
            )
        return "unusable_answer"
    async with ctx["sessionmaker"].begin() as session:
        result = await apply_answer(
            session, sinch, snapshot, source=HistorySource.REFETCH, fetched_at=fetched_at
        )
    _changed(ctx)
    return "applied" if result.applied else "superseded"


async def deliver(ctx: WorkerContext, subscription_id: str) -> int:
    """Send what is due for one subscription (app/subscriptions/sender.py) while changes keep
    coming, within the cron budget's share of the job timeout; meanwhile this worker's
    dispatcher leaves the subscription to it, and looks again when it ends (more may be due).
    Answers how many deliveries were attempted."""
    with ctx["dispatcher"].sending(subscription_id) as admitted:
        if not admitted:  # this process's delivery jobs are all busy: enqueued again later
            return 0
        outcomes = await sender.deliver_subscription(
            ctx["sending"],
            subscription_id,
            budget_seconds=cron_budget(ctx),
        )
    metrics = ctx["metrics"]
    metrics.deliveries_given_up.labels("retry_window").inc(outcomes.pop("given_up", 0))
    for result, count in outcomes.items():
        metrics.deliveries.labels(subscription_id, result).inc(count)
    return sum(count for result, count in outcomes.items() if result != "disabled")


async def _due_clients(
    ctx: WorkerContext, is_due: Callable[[AsyncSession, str], Awaitable[bool]]
) -> list[SinchClient]:
    """The Sinch clients of the projects for which `is_due(session, project_id)` holds."""
    due = []
    for sinch in await ctx["projects"].every():
        async with ctx["sessionmaker"]() as session:
            if await is_due(session, sinch.project_id):
                due.append(sinch)
    return due


async def _fetched(what: str, sinch: SinchClient, refresh: Awaitable[T]) -> T | None:
    """`refresh`'s answer; None, logged, when Sinch fails it (what it refreshes stays as it was
    and is tried again at the cron's next run)."""
    try:
        return await refresh
    except SinchError as exc:
        log.warning(
            "%s of project %s not refreshed (%s); kept as it was", what, sinch.project_id, exc
        )
        return None


async def refresh_markets(ctx: WorkerContext) -> int:
    """Load Sinch's market details, per project with its own client, where the project's map is
    a day old or was never loaded (a no-op without Sinch credentials). Answers how many policies
    the maps loaded now hold, or -1 when none was due."""
    loaded = -1
    now = utcnow()
    for sinch in await _due_clients(ctx, lambda s, project: markets.is_due(s, project, now)):
        refresh = markets.refresh(ctx["sessionmaker"], sinch, now=utcnow())
        report = await _fetched("market details", sinch, refresh)
        if report is not None:
            loaded = max(loaded, 0) + report.policies
            _changed(ctx)
    return loaded


async def refresh_catalog(ctx: WorkerContext) -> int:
    """Refresh the catalog (markets and policies, app/catalog/) of each project whose catalog is
    `CATALOG_REFRESH_INTERVAL_SECONDS` old or was never fetched, with the project's own client,
    within the cron's budget (a project left out is tried at the next run). Answers how many
    projects were refreshed."""
    interval, now = ctx["settings"].catalog_refresh_interval_seconds, utcnow()

    async def due(session: AsyncSession, project_id: str) -> bool:
        return await catalog.is_due(session, project_id, now, interval_seconds=interval)

    refreshed = 0
    try:
        async with asyncio.timeout(cron_budget(ctx)):
            for sinch in await _due_clients(ctx, due):
                refresh = catalog.refresh(ctx["sessionmaker"], sinch, now=utcnow())
                report = await _fetched("catalog", sinch, refresh)
                if report is not None:
                    refreshed += 1
                    if report.announced:
                        _changed(ctx)
    except TimeoutError:
        log.warning(
            "catalog refresh stopped at its budget after %d project(s); the rest are tried at "
            "the next run (`python -m app catalog refresh` has no budget)",
            refreshed,
        )
    return refreshed


async def _give_up(
    ctx: WorkerContext, row_id: int, state: EventState, outcome: str, error: str
) -> Finished:
    async with ctx["sessionmaker"].begin() as session:
        return await processing.give_up(
            session, row_id, state=state, outcome=outcome, error=error, now=utcnow()
        )


async def sweep(ctx: WorkerContext) -> int:
    """Re-enqueue events left `received` past the grace period (Redis was down, a job was lost).

    The inbox, not Redis, is the record of what is left to do. Enqueueing a row whose job is still
    queued is refused (same job id), so this is harmless when nothing was lost. One query and one
    Redis round trip per run (at most `SWEEP_BATCH` rows), so it always fits its timeout.
    """
    cutoff = utcnow() - timedelta(seconds=ctx["settings"].sweep_grace_seconds)
    async with ctx["sessionmaker"]() as session:
        row_ids = await events_repository.received_before(session, cutoff, SWEEP_BATCH)
    enqueued = await enqueue_events(ctx["redis"], row_ids)
    if enqueued:
        log.info("sweep re-enqueued %d events", enqueued)
    # Only the facts of projects with a Sinch client: a project without credentials (the
    # settings' one without SINCH_*, said once at start) would have its rows enqueued every run,
    # answered `not_configured`, and kept ahead of the other projects' in the batch.
    fetchable = frozenset(client.project_id for client in await ctx["projects"].every())
    if fetchable:
        async with ctx["sessionmaker"]() as session:
            due = await registrations_repository.facts_due_before(
                session, cutoff, SWEEP_BATCH, projects=fetchable
            )
        facts = await enqueue_facts(ctx["redis"], due)
        if facts:
            log.info("sweep enqueued %d facts fetches", facts)
    return enqueued


async def reconcile_changes(ctx: WorkerContext) -> int:
    """The periodic reconciliation (a no-op without Sinch credentials), bounded by `cron_budget`.

    Each registration is applied in its own transaction, so a run that stops at its budget keeps
    what it applied; the watermark moves only when a run finishes, so the next run starts from the
    same point. A first import or a long backlog belongs to `python -m app reconcile`.
    """
    budget = cron_budget(ctx)
    seen = 0
    try:
        # Each project with its own client and watermark, within the one budget.
        async with asyncio.timeout(budget):
            for sinch in await ctx["projects"].every():
                seen += (await reconcile(ctx["sessionmaker"], sinch)).seen
    except TimeoutError:
        _changed(ctx)
        log.warning(
            "reconciliation stopped at its %.0f s budget without finishing (the watermark did not "
            "move); if this repeats, run `python -m app reconcile` once",
            budget,
        )
        return 0
    _changed(ctx)
    return seen


async def fold_counts(ctx: WorkerContext) -> int:
    """Fold the counts' deltas into their totals (app/counts/service.py): keeps the console's and
    /metrics' reads cheap; the counts are exact with or without it. Answers how many deltas."""
    return await counts_service.fold(ctx["sessionmaker"], utcnow())


async def refresh_forecasts(ctx: WorkerContext) -> int:
    """Bring the time-in-state figures and the undecided registrations' forecasts up to date
    (app/forecasts/service.py), the stalest forecasts first, bounded by `cron_budget` (what is
    left goes in the next run); registrations that became overdue get their `overdue` change,
    numbered before this returns or, in a process with a sequencer, soon after. Answers how many
    registrations were forecast."""
    report = await forecasts_service.refresh(
        ctx["sessionmaker"], now=utcnow(), stop_at=time.monotonic() + cron_budget(ctx)
    )
    if report.busy:
        log.info("forecasts: another run is under way; this one did nothing")
    if report.overdue:
        if "sequencer" in ctx:
            _changed(ctx)
        else:
            # The delivery worker runs no sequencer: the changes go on the feed now, as the
            # command line's do, rather than at another process's next look. They are committed:
            # if this fails, any sequencer numbers them at its next look (2 s).
            try:
                await number_and_publish(ctx["sessionmaker"], ctx["redis"])
            except (SQLAlchemyError, RedisError, OSError) as exc:
                log.warning(
                    "forecasts: numbering the overdue changes failed (%s); a sequencer "
                    "numbers them within 2 s",
                    type(exc).__name__,
                )
    if not report.complete:
        log.warning(
            "forecasts: stopped at the cron's budget after deriving %d registrations and "
            "forecasting %d; the next run goes on, the stalest first",
            report.derived,
            report.forecast,
        )
    return report.forecast


async def prune_events(ctx: WorkerContext) -> int:
    """Delete processed events past their retention (failed and invalid ones are kept), and the
    delivery attempts past the same (EVENT_RETENTION_DAYS), then the change feed's changes past
    theirs, then the idempotency keys past their 24 hours. Answers how many events were deleted.

    Works in batches, each its own transaction, and stops starting new ones once its share of
    `cron_budget` is spent (events: the first half; changes: up to the whole); what is left goes
    in the next run.
    """
    started = time.monotonic()
    budget = cron_budget(ctx)
    settings = ctx["settings"]
    cutoff = utcnow() - timedelta(days=settings.event_retention_days)
    total, complete = await service.prune(
        ctx["sessionmaker"], processed_before=cutoff, stop_at=started + budget / 2
    )
    if not complete:
        log.info("pruning stopped at its time budget; the next run continues")
    if total:
        log.info("pruned %d processed events", total)
    attempts, complete = await subscriptions_service.prune_attempts(
        ctx["sessionmaker"], before=cutoff, stop_at=started + budget / 2
    )
    if attempts:
        log.info("pruned %d delivery attempts%s", attempts, "" if complete else " (more left)")
    recorded_before = utcnow() - timedelta(days=settings.change_retention_days)
    # The FK of a delivery to its change cascades: a pending delivery must not go with its change
    # unnoticed. An enabled subscription's hold the pruning back (changes.repository.prune); a
    # disabled one's are given up here, marked and counted.
    async with ctx["sessionmaker"].begin() as session:
        given_up = await outbox.give_up_unsent(
            session, through_seq=changes_repository.pruned_through(recorded_before), now=utcnow()
        )
    if given_up:
        ctx["metrics"].deliveries_given_up.labels("change_pruned").inc(given_up)
        log.warning(
            "gave up %d pending deliveries of disabled subscriptions: their changes leave the "
            "feed (CHANGE_RETENTION_DAYS)",
            given_up,
        )
    pruned, complete = await changes_service.prune(
        ctx["sessionmaker"], recorded_before=recorded_before, stop_at=started + budget
    )
    if pruned:
        log.info("pruned %d changes of the feed%s", pruned, "" if complete else " (more left)")
    keys = await idempotency.prune(ctx["sessionmaker"], now=utcnow(), stop_at=started + budget)
    if keys:
        log.info("pruned %d expired idempotency keys", keys)
    return total
