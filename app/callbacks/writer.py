"""Group commit for the callback endpoint.

Opening a transaction per request caps the endpoint near a tenth of what the web stack can serve;
instead, concurrent requests hand their callback to an `InboxWriter`, which keeps everything queued
at that moment in ONE transaction. Each request still waits until the commit that holds its own row
has succeeded before it answers, so "200 means durably kept" holds exactly as with one transaction
per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from app.callbacks.inbox import NewCallback, Stored, store_callbacks, store_callbacks_asyncpg
from app.db import DriverConnections

log = logging.getLogger(__name__)

OnCommitted = Callable[[Sequence[int]], Awaitable[None]]

_Pending = tuple[NewCallback, "asyncio.Future[Stored]"]

# A batch that takes longer has hit a database that hangs: its callers (who give up at the same
# time) answer 503, and the writer starts over on a new connection instead of waiting forever.
BATCH_TIMEOUT_SECONDS = 15.0


class InboxWriter:
    """Keeps callbacks in batches, one transaction per batch, with `writers` transactions in flight.

    `store()` raises whatever the database raised when the batch holding the callback could not be
    committed; the caller answers 503 then. `on_committed` gets the ids of new rows after each
    commit and must not raise (it runs after the answers are released).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        on_committed: OnCommitted | None = None,
        max_batch: int = 256,
        writers: int = 3,
    ) -> None:
        self._engine = engine
        self._on_committed = on_committed
        self._max_batch = max_batch
        self._writers = writers
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._connections = DriverConnections(engine, keep=writers)

    def start(self) -> None:
        # SQLite has a single writer: parallel transactions would only queue on its lock.
        count = 1 if self._engine.dialect.name == "sqlite" else self._writers
        self._tasks = [
            asyncio.create_task(self._run(), name=f"inbox-writer-{n}") for n in range(count)
        ]

    async def stop(self) -> None:
        """Finish what is queued (requests are waiting on it), then stop the writers."""
        if any(not task.done() for task in self._tasks):
            await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._connections.close()

    async def store(self, callback: NewCallback) -> Stored:
        if not self._tasks:
            raise RuntimeError("InboxWriter.store() called before start()")
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((callback, future))
        # A caller that goes away cancels its own future only; the writer skips answered futures.
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, callbacks: list[NewCallback]) -> list[Stored]:
        if self._engine.dialect.name != "postgresql":
            async with self._engine.begin() as connection:
                return await store_callbacks(connection, callbacks)
        # PostgreSQL: straight through asyncpg (see inbox.py for why).
        async with self._connections.connection() as driver:
            return await store_callbacks_asyncpg(driver, callbacks)

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            async with asyncio.timeout(BATCH_TIMEOUT_SECONDS):
                results = await self._commit([callback for callback, _ in batch])
        except Exception as exc:
            # Every waiting request answers 503. The batch's new rows may be kept all the same (when
            # only the duplicate-count UPDATE failed): Sinch's retries of them count as duplicates.
            log.warning("inbox commit failed for %d callbacks: %s", len(batch), type(exc).__name__)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        new_ids = [result.row_id for result in results if result.row_id is not None]
        if new_ids and self._on_committed is not None:
            try:
                await self._on_committed(new_ids)
            except Exception:  # the sweep re-enqueues whatever was not enqueued
                log.exception("after-commit hook failed")
