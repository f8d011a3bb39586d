"""Busy subscriptions never take the callbacks' jobs' slots: by default deliveries are enqueued on
a queue of their own, which only delivery workers read; a worker that serves both
(`DELIVERY_WORKER=shared`) runs at most `jobs` delivery jobs at once, and its dispatcher enqueues
no more than it has room for.

Real database and Redis; the dispatcher is the worker's own, the queue arq's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from arq import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes.sequencer import number_and_publish
from app.changes.signal import ChangeSignal
from app.core.db import utcnow
from app.core.jobs import DELIVERIES_QUEUE, EVENTS_QUEUE, create_redis, delivery_job_id
from app.core.settings import Settings
from app.subscriptions import repository, service
from app.subscriptions.dispatcher import INTERVAL_SECONDS, Dispatcher, Woke, needs_look
from app.subscriptions.schemas import SubscriptionIn
from tests.api.conftest import put_registration


async def _subscriptions_with_a_delivery_due(
    sessions: async_sessionmaker[AsyncSession], count: int
) -> list[str]:
    async with sessions.begin() as session:
        ids = [
            (
                await service.create(
                    session,
                    SubscriptionIn(url=f"http://127.0.0.1:9/{n}"),
                    allowed_hosts=["127.0.0.1"],
                    now=utcnow(),
                )
            ).id
            for n in range(count)
        ]
    await put_registration(sessions, "reg-slots")  # a change, its delivery to each (outbox)
    await number_and_publish(sessions, None)
    return ids


async def test_a_shared_worker_leaves_half_its_slots_to_callbacks(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    first, *others = await _subscriptions_with_a_delivery_due(sessionmaker, 4)
    redis = create_redis(settings)
    try:
        dispatcher = Dispatcher(
            sessionmaker, redis, ChangeSignal(redis), jobs=2, queue=EVENTS_QUEUE
        )
        with dispatcher.sending(first) as admitted:
            assert admitted
            await dispatcher.run_once()
            # Room for one more job in this process: one subscription enqueued, not three, and
            # never the one being sent.
            queued = [job.job_id for job in await redis.queued_jobs()]
            assert len(queued) == 1
            assert queued[0] in {delivery_job_id(other) for other in others}
            second = next(other for other in others if delivery_job_id(other) == queued[0])

            await redis.flushdb()
            with dispatcher.sending(second) as admitted_too:
                assert admitted_too
                # Full: a third job of this process is turned away (it ends without sending)...
                third = next(other for other in others if other != second)
                with dispatcher.sending(third) as turned_away:
                    assert not turned_away
                # ... and nothing is enqueued while the process has no room.
                await dispatcher.run_once()
                assert await redis.queued_jobs() == []

        # Both jobs ended: room for two again, and two of the four are enqueued.
        await dispatcher.run_once()
        queued = [job.job_id for job in await redis.queued_jobs()]
        assert len(queued) == 2
        assert set(queued) <= {delivery_job_id(one) for one in [first, *others]}
    finally:
        await redis.aclose()


async def test_deliveries_apart_never_enter_the_callbacks_queue(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    subscriptions = await _subscriptions_with_a_delivery_due(sessionmaker, 3)
    redis = create_redis(settings)
    try:
        dispatcher = Dispatcher(
            sessionmaker, redis, ChangeSignal(redis), jobs=32, queue=DELIVERIES_QUEUE
        )
        await dispatcher.run_once()
        # The queue `arq app.worker.WorkerSettings` reads holds no delivery...
        assert await redis.queued_jobs(queue_name=EVENTS_QUEUE) == []
        # ... the delivery workers' queue holds one job per subscription with something due.
        queued = [job.job_id for job in await redis.queued_jobs(queue_name=DELIVERIES_QUEUE)]
        assert sorted(queued) == sorted(delivery_job_id(one) for one in subscriptions)
    finally:
        await redis.aclose()


@pytest.mark.parametrize(
    ("woke", "unattended", "since_look", "looks"),
    [
        # News of changes, and every enabled subscription sends here (or none is enabled): the
        # jobs take them.
        (Woke.CHANGES, 0, 0.2, False),
        (Woke.CHANGES, 1, 0.2, True),  # one has no job here
        (Woke.CHANGES, None, 0.0, True),  # before the first look
        (Woke.CHANGES, 0, INTERVAL_SECONDS, True),  # the look is a second old
        (Woke.POKED, 0, 0.2, True),  # a job ended
        (Woke.TIMEOUT, 0, 0.2, True),  # a retry came due
    ],
)
def test_news_of_changes_alone_does_not_make_it_look_when_nothing_lacks_a_job(
    woke: Woke, unattended: int | None, since_look: float, looks: bool
) -> None:
    assert needs_look(woke, unattended, since_look=since_look) is looks


async def test_it_counts_the_enabled_subscriptions_without_a_job_of_its_process(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """What a look reads, in one row: the subscriptions with a delivery due, and how many enabled
    ones no job of this process sends (a disabled one counts for neither)."""
    first, second, third = await _subscriptions_with_a_delivery_due(sessionmaker, 3)
    async with sessionmaker.begin() as session:
        await repository.disable(session, third, "test", utcnow())
    async with sessionmaker() as session:
        alone = await repository.to_dispatch(session, utcnow(), [])
        one_sending = await repository.to_dispatch(session, utcnow(), [first])
        both_sending = await repository.to_dispatch(session, utcnow(), [first, second])
    assert (sorted(alone.due), alone.unattended) == (sorted([first, second]), 2)
    assert (sorted(one_sending.due), one_sending.unattended) == (sorted([first, second]), 1)
    assert both_sending.unattended == 0


@contextlib.asynccontextmanager
async def flowing_news(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], interval: float
) -> AsyncIterator[tuple[Dispatcher, ArqRedis]]:
    """A running dispatcher (looks at most `interval` apart) after its first look, its change
    signal listening (so it never polls instead), and news of changes every 10 ms."""
    redis = create_redis(settings)
    signal = ChangeSignal(redis, poll_seconds=60.0)
    signal.start()
    dispatcher = Dispatcher(
        sessionmaker, redis, signal, jobs=32, queue=DELIVERIES_QUEUE, interval=interval
    )
    flowing = True

    async def flow() -> None:
        while flowing:
            signal.announce()
            await asyncio.sleep(0.01)

    news = asyncio.create_task(flow())
    try:
        async with asyncio.timeout(5):
            while not signal.connected:
                await asyncio.sleep(0.01)
            dispatcher.start()
            while dispatcher.looks < 1:
                await asyncio.sleep(0.01)
        yield dispatcher, redis
    finally:
        flowing = False
        await news
        await dispatcher.stop()
        await signal.stop()
        await redis.aclose()


async def test_news_of_changes_makes_no_look_while_no_subscription_lacks_a_job(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """With no subscription, the news (thirty of them, a wake every `MIN_PAUSE_SECONDS`) makes
    no look: the interval (a minute here) is the only one that would."""
    async with flowing_news(settings, sessionmaker, interval=60.0) as (dispatcher, _):
        for _ in range(30):
            await asyncio.sleep(0.01)
        assert dispatcher.looks == 1


async def test_each_news_makes_it_look_while_a_subscription_has_no_job_here(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """A subscription with no job of this process (none runs here) is looked at on news, not
    only at the interval (a minute here): its job is enqueued, and the looks go on."""
    [subscription] = await _subscriptions_with_a_delivery_due(sessionmaker, 1)
    async with flowing_news(settings, sessionmaker, interval=60.0) as (dispatcher, redis):
        async with asyncio.timeout(5):
            while dispatcher.looks < 4:
                await asyncio.sleep(0.01)
        queued = [job.job_id for job in await redis.queued_jobs(queue_name=DELIVERIES_QUEUE)]
        assert queued == [delivery_job_id(subscription)]


async def test_a_subscription_created_under_a_flow_of_news_is_found_at_the_interval(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Looks skipped under the news never outlast the interval: a subscription created meanwhile
    gets its job."""
    async with flowing_news(settings, sessionmaker, interval=0.3) as (_, redis):
        [created] = await _subscriptions_with_a_delivery_due(sessionmaker, 1)
        async with asyncio.timeout(5):
            while not await redis.queued_jobs(queue_name=DELIVERIES_QUEUE):
                await asyncio.sleep(0.01)
        queued = [job.job_id for job in await redis.queued_jobs(queue_name=DELIVERIES_QUEUE)]
        assert queued == [delivery_job_id(created)]


async def test_a_job_that_fails_makes_it_look_again(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """While its one subscription's job sends, news of changes makes it skip its looks; when
    that job fails (an exception: it pokes nothing itself), the subscription is enqueued again at
    once, not at the interval's next look (stretched here to a minute, so that only the job's
    end can have made it look; the signal listens, so it does not poll instead)."""
    [subscription] = await _subscriptions_with_a_delivery_due(sessionmaker, 1)
    redis = create_redis(settings)
    signal = ChangeSignal(redis, poll_seconds=60.0)
    signal.start()
    dispatcher = Dispatcher(
        sessionmaker, redis, signal, jobs=32, queue=DELIVERIES_QUEUE, interval=60.0
    )

    async def failing_job() -> None:
        with dispatcher.sending(subscription):
            async with asyncio.timeout(5):
                while not signal.connected:
                    await asyncio.sleep(0.01)
            dispatcher.start()
            async with asyncio.timeout(5):
                while dispatcher.looks < 1:
                    await asyncio.sleep(0.01)
            for _ in range(10):  # news: skipped, the job takes the changes
                signal.announce()
                await asyncio.sleep(0.01)
            assert dispatcher.looks == 1
            assert await redis.queued_jobs(queue_name=DELIVERIES_QUEUE) == []
            raise RuntimeError("the job failed")

    try:
        with pytest.raises(RuntimeError, match="the job failed"):
            await failing_job()
        async with asyncio.timeout(10):
            while not await redis.queued_jobs(queue_name=DELIVERIES_QUEUE):
                await asyncio.sleep(0.01)
        assert dispatcher.looks == 2
    finally:
        await dispatcher.stop()
        await signal.stop()
        await redis.aclose()
