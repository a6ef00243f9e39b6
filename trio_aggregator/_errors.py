"""The exceptions the aggregator raises."""

from __future__ import annotations

import trio


class AggregatorError(Exception):
    """Base class of every exception raised by trio_aggregator itself."""


class InvalidWriterError(AggregatorError, TypeError):
    """The configured ``writer`` is missing or is not callable."""


class StillRunningError(AggregatorError, RuntimeError):
    """`Aggregator.start` was called on an aggregator that is already running."""


class AggregatorClosedError(AggregatorError, trio.ClosedResourceError):
    """The aggregator is not running (never started, stopped, or closed for good)."""
