"""What the service's own loggers log, for tests that assert on it: the app's logging set-up
(app/core/logs.py) replaces the root's handlers, so pytest's caplog would see nothing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class Records(logging.Handler):
    """Keeps every record it is given."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int) -> list[str]:
        """The messages logged at exactly `level`."""
        return [r.getMessage() for r in self.records if r.levelno == level]


@contextmanager
def recorded(logger_name: str) -> Iterator[Records]:
    """The records of `logger_name` and the loggers below it, while inside."""
    handler = Records()
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
