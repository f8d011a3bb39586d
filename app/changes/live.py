"""The change feed's objects that live as long as an API process: the signal that wakes waiting
readers, the shared reader and the sequencer. The lifespan (app/main.py) builds them and keeps
them in its state as `changes`, `feed` and `sequencer`; routes take them as these `Annotated`
dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.changes.sequencer import Sequencer
from app.changes.service import FeedReader
from app.changes.signal import ChangeSignal

# async: a plain function would be run in a worker thread on every request.


async def get_signal(request: Request) -> ChangeSignal:
    signal: ChangeSignal = request.state.changes
    return signal


async def get_feed(request: Request) -> FeedReader:
    feed: FeedReader = request.state.feed
    return feed


async def get_sequencer(request: Request) -> Sequencer:
    sequencer: Sequencer = request.state.sequencer
    return sequencer


SignalDep = Annotated[ChangeSignal, Depends(get_signal)]
"""Wakes the change feed's waiting readers when changes are numbered (any process)."""
FeedDep = Annotated[FeedReader, Depends(get_feed)]
"""Reads the change feed once for all of this process's readers at one position."""
SequencerDep = Annotated[Sequencer, Depends(get_sequencer)]
"""Numbers the changes this process records (a refresh), after their commit."""
