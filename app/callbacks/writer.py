"""Group commit for the callback endpoint.

Opening a transaction per request caps the endpoint near a tenth of what the web stack can serve;
instead, concurrent requests hand their callback to an `InboxWriter`, which keeps everything queued
at that moment in ONE transaction. Each request still waits until the commit that holds its own row
has succeeded before it answers, so "200 means durably kept" holds exactly as with one transaction
per request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence

import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import DriverConnections
from app.core.lifecycle import stop_task
from app.events.parsing import body_digest
from app.events.repository import NewCallback, Stored, store_callbacks_asyncpg

log = logging.getLogger(__name__)

OnCommitted = Callable[[Sequence[int]], Awaitable[None]]

_Pending = tuple[NewCallback, "asyncio.Future[Stored]"]

# A batch that takes longer has hit a database that hangs: its callers (who give up at the same
# time) answer 503, and the writer starts over on a new connection instead of waiting forever.
BATCH_TIMEOUT_SECONDS = 15.0


class InboxWriter:
    """Keeps callbacks in batches, one transaction per batch, with `writers` transactions in flight.

    `store()` raises whatever the database raised when the batch holding the callback could not be
    committed; the caller answers 503 then. A row whose values the database refuses (a data or
    integrity error, `refuses_rows`) never fails the others of its batch: the batch is then kept in
    parts, and that row is kept without its parsed ids (`without_parsed_ids`); only a row refused
    even so raises. `on_committed` gets the ids of new rows after each commit and must not raise
    (it runs after the answers are released).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        on_committed: OnCommitted | None = None,
        max_batch: int = 256,
        writers: int = 3,
    ) -> None:
        self._on_committed = on_committed
        self._max_batch = max_batch
        self._writers = writers
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._connections = DriverConnections(engine, keep=writers)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"inbox-writer-{n}") for n in range(self._writers)
        ]

    async def stop(self) -> None:
        """Finish what is queued (requests are waiting on it), then stop the writers; each for
        a bounded time (a batch's own bound, then `app/core/lifecycle.py`)."""
        if any(not task.done() for task in self._tasks):
            try:
                async with asyncio.timeout(2 * BATCH_TIMEOUT_SECONDS):
                    await self._queue.join()
            except TimeoutError:
                log.error("inbox: %d callbacks still queued at shutdown", self._queue.qsize())
        await asyncio.gather(*(stop_task(task) for task in self._tasks))
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
        # Straight through asyncpg (see inbox.py for why).
        async with self._connections.connection() as driver:
            return await store_callbacks_asyncpg(driver, callbacks)

    async def _write(self, batch: list[_Pending]) -> None:
        callbacks = [callback for callback, _ in batch]
        results: list[Stored | Exception]
        try:
            async with asyncio.timeout(BATCH_TIMEOUT_SECONDS):
                results = list(await self._commit(callbacks))
        except Exception as exc:
            if not refuses_rows(exc):
                # The database cannot commit at all: every waiting request answers 503. The batch's
                # new rows may be kept all the same (when only the duplicate-count UPDATE failed):
                # Sinch's retries of them count as duplicates.
                log.warning(
                    "inbox commit failed for %d callbacks: %s", len(batch), type(exc).__name__
                )
                results = [exc] * len(batch)
            else:
                # Some row's values were refused (a data or integrity error): that must not cost
                # the other callbacks of the batch their 200. Only here, off the usual path.
                log.warning(
                    "inbox refused a row of a batch of %d callbacks (%s); keeping them apart",
                    len(batch),
                    describe(exc),
                )
                results = await self._commit_apart(callbacks)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Stored):
                future.set_result(result)
            else:
                future.set_exception(result)
        new_ids = [
            result.row_id
            for result in results
            if isinstance(result, Stored) and result.row_id is not None
        ]
        if new_ids and self._on_committed is not None:
            try:
                await self._on_committed(new_ids)
            except Exception:  # the sweep re-enqueues whatever was not enqueued
                log.exception("after-commit hook failed")

    async def _commit_apart(self, callbacks: list[NewCallback]) -> list[Stored | Exception]:
        """Keep `callbacks`, a group whose commit the database refused for some row's values.

        The group is halved and each half committed on its own, recursively, so one bad row costs
        about 2 log2(n) commits rather than n; a row refused alone is kept without its parsed ids
        (`without_parsed_ids`). Answers one `Stored`, or the exception for that callback's caller,
        per callback, in order.
        """
        if len(callbacks) == 1:
            return [await self._commit_stripped(callbacks[0])]
        middle = len(callbacks) // 2
        results: list[Stored | Exception] = []
        for part in (callbacks[:middle], callbacks[middle:]):
            try:
                async with asyncio.timeout(BATCH_TIMEOUT_SECONDS):
                    results.extend(await self._commit(part))
            except Exception as exc:
                if refuses_rows(exc):
                    results.extend(await self._commit_apart(part))
                else:
                    results.extend([exc] * len(part))
        return results

    async def _commit_stripped(self, callback: NewCallback) -> Stored | Exception:
        stripped = without_parsed_ids(callback)
        try:
            if stripped == callback:  # nothing to drop: the row is refused as it is
                raise RowRefused("the database refuses this callback's row")
            async with asyncio.timeout(BATCH_TIMEOUT_SECONDS):
                [stored] = await self._commit([stripped])
        except Exception as exc:
            log.error("inbox refused a callback even without its parsed ids: %s", describe(exc))
            return exc
        log.warning(
            "inbox refused a callback's parsed ids (%s); kept it by its body's digest",
            "new row" if stored.row_id is not None else "duplicate",
            extra={"row_id": stored.row_id},
        )
        return stored


class RowRefused(Exception):
    """A row the database refuses whatever is dropped from it; its caller answers 503."""


def without_parsed_ids(callback: NewCallback) -> NewCallback:
    """`callback` as it is kept when the database refuses its row: without the ids parsed from its
    body, identified by the body's digest. The raw bytes, headers and arrival time are the record;
    the worker parses the body again and decides from that."""
    return dataclasses.replace(
        callback, dedup_key=body_digest(callback.body), event_id=None, registration_id=None
    )


# SQLSTATE classes of errors caused by the values of a row, not by the database's state: data
# exceptions (22: a NUL in text, an unencodable character, a value out of range), integrity
# constraint violations (23), and errors raised by PL/pgSQL (P0: a trigger refusing a row).
_ROW_SQLSTATE_CLASSES = ("22", "23", "P0")


def refuses_rows(exc: BaseException) -> bool:
    """Whether `exc` says the database refused some row's values, rather than that it cannot
    commit (a connection lost, a timeout, a disk full, a read-only server): only then can keeping
    the rows apart succeed for the others.

    Drivers and SQLAlchemy wrap one another's errors, so the whole chain is looked at.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, UnicodeError):
            return True  # the driver cannot encode the value
        if isinstance(error, sqlalchemy.exc.DataError | sqlalchemy.exc.IntegrityError):
            return True
        sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if isinstance(sqlstate, str):
            return sqlstate.startswith(_ROW_SQLSTATE_CLASSES)
        pending += [getattr(error, "orig", None), error.__cause__]
    return False


def describe(exc: BaseException) -> str:
    """An error's type and SQLSTATE, for the log; never its message (it may quote the values)."""
    sqlstate = getattr(exc, "sqlstate", None)
    return type(exc).__name__ + (f" {sqlstate}" if isinstance(sqlstate, str) else "")
