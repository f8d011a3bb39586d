"""The Sinch Registrations API client (docs/sinch.md: what the API does and does not document)."""

from app.sinch.client import SinchClient, create_http_client
from app.sinch.errors import (
    SinchError,
    SinchNotConfiguredError,
    SinchNotFoundError,
    SinchRejectedError,
    SinchRetryableError,
    SinchTimeoutError,
)
from app.sinch.schemas import CallbackConfiguration, SinchRegistration

__all__ = [
    "CallbackConfiguration",
    "SinchClient",
    "SinchError",
    "SinchNotConfiguredError",
    "SinchNotFoundError",
    "SinchRegistration",
    "SinchRejectedError",
    "SinchRetryableError",
    "SinchTimeoutError",
    "create_http_client",
]
