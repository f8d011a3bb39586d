"""The change feed's background loops end at their first cancellation, even when it comes in the
same moment as a poke or a piece of news: on Python 3.11 `asyncio.wait_for` lost such a
cancellation, and a worker's shutdown (or an API process's lifespan) then waited forever."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.changes.sequencer import Sequencer
from app.changes.signal import ChangeSignal
from app.core.db import create_engine, create_sessionmaker
from app.core.jobs import create_redis
from app.core.settings import Settings


async def test_the_sequencer_poked_as_it_is_stopped_stops(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(settings)
    redis = create_redis(settings)
    try:
        sequencer = Sequencer(create_sessionmaker(engine), redis)
        sequencer.start()
        await asyncio.sleep(0)  # a turn of the loop: it waits for a poke now
        with caplog.at_level(logging.WARNING, logger="app.core.lifecycle"):
            sequencer.poke()
            stopping = asyncio.ensure_future(sequencer.stop())
            done, _ = await asyncio.wait({stopping}, timeout=30)
        assert done
        assert "did not end at its cancellation" not in caplog.text
    finally:
        await redis.aclose()
        await engine.dispose()


async def test_a_wait_cancelled_as_news_comes_is_cancelled(settings: Settings) -> None:
    redis = create_redis(settings)
    try:
        signal = ChangeSignal(redis)
        waiting = asyncio.ensure_future(signal.wait(signal.token(), 30))
        await asyncio.sleep(0)  # a turn of the loop: it waits for news now
        signal._announce()
        waiting.cancel()
        await asyncio.wait({waiting}, timeout=30)
        assert waiting.cancelled()
    finally:
        await redis.aclose()
