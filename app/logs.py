"""Logging: JSON lines in production, readable lines in a terminal.

Log calls pass identifiers as `extra={...}` (event_id, registration_id, row_id, ...); the formatters
print them as fields. Nothing that logs may pass a secret or a body: that is a rule of every caller,
and the tests grep the logs for the configured secrets.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from app.settings import Settings

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and value is not None
    }


_ENCODER = json.JSONEncoder(default=str)  # made once: json.dumps(default=...) makes one per call


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ms), level, logger, message, then the extras."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def _time(self, created: float) -> str:
        # Every callback logs a line: format the date once per second, not once per line.
        second = int(created)
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(line)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = _extras(record)
        if extras:
            text += " " + " ".join(f"{key}={value}" for key, value in extras.items())
        return text


def configure_logging(settings: Settings) -> None:
    """Send the root logger to stderr in the configured format (auto: text on a terminal)."""
    use_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Fields no formatter here prints, each costing time on every record (the logging HOWTO's
    # "Optimization" section): the caller's file and line, thread, process.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # uvicorn's access log repeats what our own lines say, without ids.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # arq's command line gives its logger a handler of its own: let the root one speak for it.
    # Its two lines per job repeat the worker's own line per event (which carries the ids), at a
    # cost the worker feels: keep only its warnings.
    logging.getLogger("arq").handlers.clear()
    logging.getLogger("arq.worker").setLevel(logging.WARNING)


def warn_about_missing_configuration(settings: Settings, log: logging.Logger) -> None:
    """Say loudly, at start-up, what will not work with this configuration."""
    if not settings.sinch_callback_secrets:
        log.error(
            "SINCH_CALLBACK_SECRETS is not set: every callback is refused with 503 until it is"
        )
    if not settings.internal_api_tokens:
        log.error("INTERNAL_API_TOKENS is not set: the internal API refuses every caller")
    if not settings.sinch_credentials_configured:
        log.error(
            "SINCH_PROJECT_ID, SINCH_KEY_ID or SINCH_KEY_SECRET is not set: registrations "
            "cannot be fetched from Sinch, so doubtful events fail and reconciliation is off"
        )
