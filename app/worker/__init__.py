"""The arq worker: `arq app.worker.WorkerSettings`.

`WorkerSettings` is built from the environment when arq first asks for it (a module `__getattr__`),
so importing this package reads nothing and connects to nothing.
"""

from __future__ import annotations

from typing import Any


def use_uvloop() -> None:
    """Make the event loop arq creates next a uvloop one, as uvicorn does for the API: its I/O costs
    a fraction of asyncio's, and the worker is mostly I/O. Call before arq builds its `Worker`."""
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        from app.settings import Settings
        from app.worker.settings import build_worker_settings

        use_uvloop()  # arq asks for the settings before it makes its event loop
        return build_worker_settings(Settings())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
