"""The arq worker: `arq app.worker.WorkerSettings`.

`WorkerSettings` is built from the environment when arq first asks for it (a module `__getattr__`),
so importing this package reads nothing and connects to nothing.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        import asyncio

        import uvloop

        from app.settings import Settings
        from app.worker.settings import build_worker_settings

        # arq asks for this before it makes its event loop: make that loop uvloop, as uvicorn does
        # for the API. Its I/O costs a fraction of asyncio's, and the worker is mostly I/O.
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return build_worker_settings(Settings())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
