"""The arq context: what the worker builds once at start-up, plus what arq adds per job."""

from __future__ import annotations

from typing import TypedDict

import httpx
from arq import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.changes.sequencer import Sequencer
from app.changes.signal import ChangeSignal, Signal
from app.core.db import DriverConnections
from app.core.metrics import Metrics
from app.core.settings import Settings
from app.projects.clients import ProjectClients
from app.sinch.client import SinchClient
from app.subscriptions.dispatcher import Dispatcher
from app.subscriptions.sender import Sending
from app.worker.leases import Leases


class WorkerContext(TypedDict, total=False):
    # set by arq
    redis: ArqRedis
    job_id: str
    job_try: int
    # set by on_startup
    settings: Settings
    engine: AsyncEngine
    connections: DriverConnections
    """asyncpg connections for `process_event`'s first step (`processing.begin`)."""
    sessionmaker: async_sessionmaker[AsyncSession]
    http: httpx.AsyncClient
    """Sinch's client (deliveries have one per job: app/subscriptions/sender.py)."""
    sinch: SinchClient | None
    """The settings-defined project's client (`projects.settings_client`)."""
    projects: ProjectClients
    """Every project's Sinch client: each job calls Sinch with its project's (app/projects)."""
    metrics: Metrics
    sequencer: Sequencer
    """Numbers the changes the jobs record, after their commit (app/changes/sequencer.py)."""
    change_signal: ChangeSignal
    """Wakes the dispatcher and waiting delivery jobs when changes are numbered in any process."""
    sending: Sending
    """What the subscriptions' delivery jobs share (app/subscriptions/sender.py)."""
    dispatcher: Dispatcher
    leases: Leases
    """The running jobs' short in-progress marks (app/worker/leases.py)."""
    wake: Signal
    """Wakes arq's poll when jobs are queued on this worker's queue (app/worker/wake.py)."""
