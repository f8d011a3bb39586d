"""The arq workers: `arq app.worker.WorkerSettings` (the callbacks' jobs and the crons but the
forecasts') and `arq app.worker.DeliveryWorkerSettings` (the subscriptions' deliveries, on a queue
of their own, and the forecasts cron; not needed with `DELIVERY_WORKER=shared`).

`WorkerSettings` is built from the environment when arq first asks for it (a module `__getattr__`),
so importing this package reads nothing and connects to nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def use_uvloop(before_first_loop: Callable[[], None] | None = None) -> None:
    """Make the event loop arq creates next a uvloop one, as uvicorn does for the API: its I/O costs
    a fraction of asyncio's, and the worker is mostly I/O. Call before arq builds its `Worker`.

    `before_first_loop` runs once, just before the first loop is made. arq's command line imports
    `WorkerSettings`, then configures its own logging (`logging.config.dictConfig`: a handler and
    format of its own on the `arq` logger), then builds its `Worker`, which makes the loop, then
    logs its first lines: making the loop is the first moment after arq's logging set-up, so the
    service's logging (`configure_logging`) is put back there."""
    import asyncio

    import uvloop

    class Policy(uvloop.EventLoopPolicy):  # type: ignore[misc]  # uvloop types its base Any
        def __init__(self) -> None:
            super().__init__()
            self.pending = before_first_loop

        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            if self.pending is not None:
                pending, self.pending = self.pending, None
                pending()
            loop: asyncio.AbstractEventLoop = super().new_event_loop()
            return loop

    asyncio.set_event_loop_policy(Policy())


def __getattr__(name: str) -> Any:
    if name in ("WorkerSettings", "DeliveryWorkerSettings"):
        from app.core.logs import configure_logging
        from app.core.settings import Settings
        from app.worker.settings import build_delivery_worker_settings, build_worker_settings

        settings = Settings()
        # arq asks for the settings before it makes its event loop.
        use_uvloop(lambda: configure_logging(settings))
        if name == "WorkerSettings":
            return build_worker_settings(settings)
        return build_delivery_worker_settings(settings)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
