"""uvicorn's HTTP protocol with deadlines for reading a request: a client cannot hold a
connection by trickling (or stalling) its headers or its body.

uvicorn bounds neither: a client that sends a request line and then one header byte a minute, or
a `Content-Length` larger than the body it sends, holds its connection (and a file descriptor)
for as long as it likes, and enough of them starve everyone else, Sinch's callbacks included.
`GuardedHttpToolsProtocol` closes a connection:
- whose request headers are not complete `HEADER_READ_TIMEOUT_SECONDS` after the connection
  opened, or after the first byte of a next request on a kept-alive connection (answered 408,
  then closed);
- whose request body is not complete `BODY_READ_TIMEOUT_SECONDS` after its headers (closed: the
  application sees the client leave). The callback endpoint's own, shorter deadline
  (`CALLBACK_READ_TIMEOUT_SECONDS`) answers a slow callback 408 before this one fires.
Idle kept-alive connections are closed by uvicorn's own `--timeout-keep-alive` (5 s).

Use: `uvicorn app.main:app --http app.web.edge:GuardedHttpToolsProtocol` (the Dockerfile, Compose,
`make run` and `python -m app serve` do). The deadlines come from the settings of the app the
server runs (its lifespan state); one timer per connection, armed and disarmed twice a request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.core.problems import PROBLEM_MEDIA_TYPE, problem_body
from app.core.settings import Settings

PROTOCOL = "app.web.edge:GuardedHttpToolsProtocol"
"""What to give uvicorn's `--http` (or `uvicorn.Config(http=...)`)."""


def _too_slow() -> bytes:
    body = problem_body(408, "The request's headers did not arrive in time.")
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        f"content-type: {PROBLEM_MEDIA_TYPE}\r\n"
        "connection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._header_timeout, self._body_timeout = self._timeouts()

    def _timeouts(self) -> tuple[float, float]:
        resources = self.app_state.get("resources")
        settings: Settings | None = getattr(resources, "settings", None)
        if settings is None:  # a server without the lifespan's resources: the defaults
            defaults = Settings.model_fields
            header = defaults["header_read_timeout_seconds"].default
            body = defaults["body_read_timeout_seconds"].default
            return float(header), float(body)
        return settings.header_read_timeout_seconds, settings.body_read_timeout_seconds

    def _count(self, phase: str) -> None:
        resources = self.app_state.get("resources")
        metrics = getattr(resources, "metrics", None)
        if metrics is not None:
            metrics.connections_cut.labels(phase).inc()

    def _arm(self, seconds: float, expired: Any) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(seconds, expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self._count("headers")
            self.transport.write(_too_slow())
            self.transport.close()

    def _body_expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self._count("body")
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._header_timeout, self._headers_expired)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            # The first bytes of a next request on a kept-alive connection.
            self._arm(self._header_timeout, self._headers_expired)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self._body_timeout, self._body_expired)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
