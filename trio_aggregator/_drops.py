"""`DropCounter`: counts every discarded item by reason and warns about it, rate-limited."""

from __future__ import annotations

import time

from ._error_log import logger

WARN_EVERY = 10.0
"""Seconds between two drop warnings on the ``trio_aggregator`` logger."""

REASONS = ("full", "oldest", "drain_timeout", "writer_error")


class DropCounter:
    """Per-reason drop counts, with at most one warning per `WARN_EVERY` seconds."""

    __slots__ = ("_last_warn", "_unreported", "counts")

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(REASONS, 0)
        self._unreported = 0
        self._last_warn = -WARN_EVERY

    def add(self, reason: str, n: int = 1) -> None:
        """Count *n* items dropped for *reason*; warn if the last warning is old enough."""
        self.counts[reason] += n
        self._unreported += n
        now = time.monotonic()
        if now - self._last_warn >= WARN_EVERY:
            self.report(now)

    def report(self, now: float | None = None) -> None:
        """Warn about the drops not reported yet, if any (also called at stop)."""
        if self._unreported:
            logger.warning(
                "dropped %d item(s) since the last report (totals: %s)",
                self._unreported,
                ", ".join(f"{k}={v}" for k, v in self.counts.items()),
            )
            self._unreported = 0
            self._last_warn = time.monotonic() if now is None else now

    @property
    def total(self) -> int:
        """All drops, whatever the reason."""
        return sum(self.counts.values())
