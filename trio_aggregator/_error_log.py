"""`ErrorLog`: the bounded record of what went wrong, and the logger it reports to.

Every error is kept (up to ``max_errors``) and counted, but the logging is rate-limited
like the drop warnings: per source (``"writer"``, ``"sync_fn"``, ...), at most one
ERROR every `REPORT_EVERY` seconds, with the error that opened the window and its
traceback, and how many errors of that source were not logged since the last report.
What is left unreported is logged at stop, in one ERROR per source, without traceback.
"""

from __future__ import annotations

import logging
import time
from collections import deque

logger = logging.getLogger("trio_aggregator")

REPORT_EVERY = 10.0
"""Seconds between two ERROR reports of the same source on the ``trio_aggregator`` logger."""


class _Source:
    """The reporting state of one source of errors."""

    __slots__ = ("last", "last_report", "unreported")

    def __init__(self) -> None:
        self.last_report = -REPORT_EVERY
        self.unreported = 0
        self.last: Exception | None = None


class ErrorLog:
    """Keeps the most recent errors (oldest first) and logs them, rate-limited per source."""

    __slots__ = ("_errors", "_sources")

    def __init__(self, max_errors: int) -> None:
        self._errors: deque[Exception] = deque(maxlen=max_errors)
        self._sources: dict[str, _Source] = {}

    def record(self, exc: Exception, what: str) -> None:
        """Keep *exc*, raised by *what*; log it if *what* was not reported recently."""
        self._errors.append(exc)
        source = self._sources.get(what)
        if source is None:
            source = self._sources[what] = _Source()
        now = time.monotonic()
        if now - source.last_report < REPORT_EVERY:
            source.unreported += 1
            source.last = exc
            return
        if source.unreported:
            logger.error(
                "%s raised %r (%d more error(s) of %s not logged since the last report)",
                what,
                exc,
                source.unreported,
                what,
                exc_info=exc,
            )
        else:
            logger.error("%s raised %r", what, exc, exc_info=exc)
        source.unreported = 0
        source.last = None
        source.last_report = now

    def report(self) -> None:
        """Log the errors not reported yet, one ERROR per source (called at stop)."""
        now = time.monotonic()
        for what, source in self._sources.items():
            if source.unreported:
                logger.error(
                    "%s raised %d more error(s) since the last report, the last: %r",
                    what,
                    source.unreported,
                    source.last,
                )
                source.unreported = 0
                source.last = None
                source.last_report = now

    @property
    def last(self) -> Exception | None:
        """The most recent error, or None."""
        return self._errors[-1] if self._errors else None

    @property
    def all(self) -> tuple[Exception, ...]:
        """Every kept error, oldest first."""
        return tuple(self._errors)
