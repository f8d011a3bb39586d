"""The Sinch client's exception tree.

Retryable errors are worth trying again later (the client has already retried them a few times);
rejected ones are Sinch saying no, and trying again will not change the answer. No message here ever
holds a credential, a token or a secret: messages name the operation and the HTTP status only.
"""

from __future__ import annotations

from typing import Any


class SinchError(Exception):
    """Base of every error the Sinch client raises."""


class SinchRetryableError(SinchError):
    """A timeout, a connection error, a 5xx or a 429: Sinch may answer later.

    `retry_after` is the wait Sinch asked for (seconds, from `Retry-After`), when it asked for one.
    `status_code` is the HTTP status, or None when no answer came at all.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status_code = status_code


class SinchTimeoutError(SinchRetryableError):
    """No answer in time (the read timeout, or the call's deadline): Sinch may or may not have
    acted on the request."""


class SinchRejectedError(SinchError):
    """Sinch answered a 4xx other than 429: the same request will be refused again.

    `error` is Sinch's own error object (`{"code", "message", "status", "details"}`, the body's
    `error` member) when it sent one: what a caller needs to fix the request. It is Sinch's words
    about the request, never a credential, so it may be shown to whoever sent the request.
    """

    def __init__(
        self, message: str, *, status_code: int, error: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error


class SinchNotFoundError(SinchRejectedError):
    """Sinch answered 404: the registration (or the project) does not exist."""


class SinchNotConfiguredError(SinchError):
    """The Sinch credentials (project id, key id, key secret) are not all set."""
