"""Helpers for the Sinch client tests (imported by the tests and their conftest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from pydantic import SecretStr

from app.sinch.client import SinchClient
from devtools.simulator import SimulatorServer

ClientFactory = Callable[..., SinchClient]


def client_for(server: SimulatorServer, http: httpx.AsyncClient, **overrides: Any) -> SinchClient:
    """A SinchClient aimed at `server`, with fast backoff unless overridden."""
    options: dict[str, Any] = {
        "project_id": server.project_id,
        "key_id": server.key_id,
        "key_secret": SecretStr(server.key_secret),
        "api_base_url": server.base_url,
        "auth_url": server.auth_url,
        "backoff_base_seconds": 0.01,
        "backoff_max_seconds": 0.05,
        "deadline_seconds": 10.0,
    }
    options.update(overrides)
    return SinchClient(http, **options)
