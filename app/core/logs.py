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

from app.core.settings import Settings

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's message again, with terminal colour codes
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


THIRD_PARTY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "arq")
"""Loggers that uvicorn's and arq's command lines give handlers and formats of their own (each runs
`logging.config.dictConfig` at start): `configure_logging` takes them back to the root's handler."""


class _NoArqJobLines(logging.Filter):
    """Drops arq's two INFO lines per job (`  0.01s → job(...)`, `  0.02s ← job ● ...`) and its
    retry lines: the worker's own line per event says the same with the ids, and formatting and
    writing them costs the worker time it feels. arq's start-up, shutdown and health lines, and
    its warnings and errors, pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and str(record.msg).startswith("%6.2fs"))


_NO_ARQ_JOB_LINES = _NoArqJobLines()


def configure_logging(settings: Settings) -> None:
    """Send every log line of the process, uvicorn's and arq's included, to stderr through one
    handler in the configured format (auto: text on a terminal). Idempotent.

    uvicorn's access lines and arq's per-job lines repeat what the service's own lines say (with
    the ids): they are written only at `LOG_LEVEL=DEBUG`."""
    use_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = logging.getLevelName(settings.log_level.upper())
    root.setLevel(level)
    # Fields no formatter here prints, each costing time on every record (the logging HOWTO's
    # "Optimization" section): the caller's file and line, thread, process.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)  # LOG_LEVEL decides, not uvicorn's or arq's defaults
        logger.propagate = True
    verbose = level <= logging.DEBUG
    # Without a handler on its way, uvicorn does not even build its access line (it asks
    # `hasHandlers()` per connection): the callback endpoint's hot path stays as measured.
    logging.getLogger("uvicorn.access").propagate = verbose
    arq_worker = logging.getLogger("arq.worker")
    if verbose:
        arq_worker.removeFilter(_NO_ARQ_JOB_LINES)
    else:
        arq_worker.addFilter(_NO_ARQ_JOB_LINES)


def warn_about_missing_configuration(settings: Settings, log: logging.Logger) -> None:
    """Say loudly, at start-up, what will not work with this configuration."""
    if not settings.sinch_callback_secrets:
        log.error(
            "SINCH_CALLBACK_SECRETS is not set: every callback is refused with 503 until it is"
        )
    if not settings.internal_api_tokens:
        log.error("INTERNAL_API_TOKENS is not set: the internal API refuses every caller")
    if settings.delivery_timeout_seconds >= settings.job_budget_seconds:
        # A delivery job starts a POST only with its timeout left in its budget.
        log.error(
            "DELIVERY_TIMEOUT_SECONDS (%g) is not below three quarters of JOB_TIMEOUT_SECONDS "
            "(%g): no webhook delivery can be sent",
            settings.delivery_timeout_seconds,
            settings.job_timeout_seconds,
        )
    if not settings.sinch_credentials_configured:
        # The one line about it: the worker's crons then skip this project quietly.
        log.warning(
            "SINCH_PROJECT_ID, SINCH_KEY_ID or SINCH_KEY_SECRET is not set: the settings' "
            "project's registrations cannot be fetched from Sinch, so its doubtful events fail, "
            "and it is not reconciled nor its facts fetched (projects added with their own keys "
            "are)"
        )
