"""Telling readers of the change feed, in every process, that new changes are numbered.

Redis pub/sub (the stack's own): the process that
numbers changes (`app/changes/sequencer.py`) publishes on `CHANNEL`, and each API process holds one
subscription (`ChangeSignal`) that wakes every waiting reader at once. A message says only "there
is news": readers read the database, which is the record. When the subscription is down, waiters
wake every `poll_seconds` instead and read anyway: slower, never wrong.

`Signal` serves any channel: the workers wait on their queue's (app/worker/wake.py) the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.core.lifecycle import stop_task

log = logging.getLogger(__name__)

CHANNEL: Final = "sinch-registrations:changes"
POLL_SECONDS: Final = 1.0
"""How often a waiting reader looks at the database while the subscription is down."""
RECONNECT_SECONDS: Final = 1.0
IDLE_SECONDS: Final = 15.0
"""How long the subscription may be quiet before it is checked with a PING."""


async def publish(redis: Redis) -> None:
    """Say that changes were numbered. Best effort: readers fall back to polling without it."""
    with contextlib.suppress(RedisError, OSError):
        await redis.publish(CHANNEL, b"1")


class Signal:
    """One Redis subscription per process to `channel`, waking every waiter at once.

    Use: take `token = signal.token()` BEFORE looking (at the database, at a queue); when the
    look found nothing, `await signal.wait(token, seconds)`. A publication that came between the
    look and the wait has moved the token on, so the wait returns at once and no news is slept
    through. `announce()` is news from this process itself.
    """

    def __init__(
        self, redis: Redis, *, channel: str = CHANNEL, poll_seconds: float = POLL_SECONDS
    ) -> None:
        self._redis = redis
        self._channel = channel
        self._poll_seconds = poll_seconds
        self._generation = 0
        self._news = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.connected = False

    def token(self) -> int:
        return self._generation

    async def wait(self, token: int, seconds: float) -> None:
        """Return at the first news after `token`, or after `seconds` (at most
        `poll_seconds` while the subscription is down)."""
        if self._generation != token or seconds <= 0:
            return
        if not self.connected:
            seconds = min(seconds, self._poll_seconds)
        # `asyncio.timeout`, not `asyncio.wait_for`: on Python 3.11 the latter loses a
        # cancellation that comes as the news does (CPython gh-86296).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._news.wait()

    def announce(self) -> None:
        """Wake every waiter, as a publication would."""
        self._announce()

    def _announce(self) -> None:
        self._generation += 1
        news, self._news = self._news, asyncio.Event()
        news.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name=f"signal {self._channel}")

    async def stop(self) -> None:
        """Stop listening (for a bounded time: `app/core/lifecycle.py`)."""
        self._stopping = True
        await stop_task(self._task)

    async def _listen(self) -> None:
        while not self._stopping:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    if not self.connected:
                        self.connected = True
                        self._announce()  # what was published while away: read it now
                    while not self._stopping:
                        message = await pubsub.get_message(timeout=IDLE_SECONDS)
                        if message is not None:
                            self._announce()
                        else:
                            # Quiet for a while: prove the connection is alive (a half-open
                            # one would keep waiters from polling); a dead one raises here.
                            await pubsub.ping()
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.warning(
                        "%s: Redis subscription lost (%s); waiters poll", self._channel, exc
                    )
                self.connected = False
                self._announce()  # waiters switch to polling now, not at their timeout
                await asyncio.sleep(RECONNECT_SECONDS)


ChangeSignal = Signal
"""The change feed's signal (`CHANNEL`): readers of the feed and the deliveries' senders wait on
it."""
