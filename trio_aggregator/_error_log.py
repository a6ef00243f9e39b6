"""`ErrorLog`: the bounded record of what went wrong, and the logger it reports to."""

from __future__ import annotations

import logging
from collections import deque

logger = logging.getLogger("trio_aggregator")


class ErrorLog:
    """Keeps the most recent errors (oldest first) and logs each one as it is recorded."""

    __slots__ = ("_errors",)

    def __init__(self, max_errors: int) -> None:
        self._errors: deque[Exception] = deque(maxlen=max_errors)

    def record(self, exc: Exception, what: str) -> None:
        """Log *exc*, raised by *what*, and keep it."""
        logger.error("%s raised %r", what, exc, exc_info=exc)
        self._errors.append(exc)

    @property
    def last(self) -> Exception | None:
        """The most recent error, or None."""
        return self._errors[-1] if self._errors else None

    @property
    def all(self) -> tuple[Exception, ...]:
        """Every kept error, oldest first."""
        return tuple(self._errors)
