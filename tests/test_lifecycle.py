"""Stopping background tasks cannot hang a shutdown (app/core/lifecycle.py), even when a task does
not honour its cancellation the first time, or at all."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.core.lifecycle import stop_task, within


async def test_a_task_that_swallows_its_first_cancellation_is_cancelled_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    swallowed = asyncio.Event()

    async def loop() -> None:
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if swallowed.is_set():
                    raise
                swallowed.set()  # as Python 3.11's `asyncio.wait_for` may do

    task = asyncio.create_task(loop(), name="swallower")
    await asyncio.sleep(0)  # it waits now
    with caplog.at_level(logging.WARNING, logger="app.core.lifecycle"):
        assert await stop_task(task, seconds=30)
    assert swallowed.is_set()
    assert task.cancelled()
    assert "swallower did not end at its cancellation" in caplog.text


async def test_a_task_that_never_ends_is_left_behind_after_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="app.core.lifecycle"):
        assert not await stop_task(task, seconds=1.0)
    assert not task.done()
    assert "stubborn did not stop within 1.0 s" in caplog.text
    release.set()
    await task


async def test_a_task_that_honours_its_cancellation_is_stopped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = asyncio.create_task(asyncio.Event().wait(), name="polite")
    await asyncio.sleep(0)
    with caplog.at_level(logging.DEBUG, logger="app.core.lifecycle"):
        assert await stop_task(task)
        assert await stop_task(task)  # twice: nothing more to do
        assert await stop_task(None)
    assert task.cancelled()
    assert caplog.records == []


async def test_a_shutdown_step_that_does_not_finish_is_cancelled_after_its_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancelled = asyncio.Event()

    async def step() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with caplog.at_level(logging.ERROR, logger="app.core.lifecycle"):
        await within(0.5, step(), "the step")
    assert cancelled.is_set()
    assert "the step did not finish within 0.5 s" in caplog.text


async def test_a_shutdown_step_that_fails_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def step() -> None:
        raise OSError("gone")

    with caplog.at_level(logging.ERROR, logger="app.core.lifecycle"):
        await within(5, step(), "the step")
    assert "the step failed: OSError('gone')" in caplog.text
