"""`AggregatorConfig`: every setting of an aggregator, checked once at construction."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, Literal

import attrs

from ._errors import InvalidWriterError

WhenFull = Literal["block", "drop_newest", "drop_oldest", "raise"]
WHEN_FULL_CHOICES: tuple[str, ...] = ("block", "drop_newest", "drop_oldest", "raise")
OnWriterError = Literal["continue", "raise"] | Callable[[Any, Exception], object]
MIN_INTERVAL = 0.001
"""Seconds: the shortest ``sync_interval`` or ``async_interval`` (<= 0 disables the timer)."""


def is_async_callable(fn: object) -> bool:
    """Whether calling *fn* returns a coroutine (``async def``, partials and ``__call__`` too)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - we want the bound __call__
    return call is not None and not inspect.isroutine(fn) and inspect.iscoroutinefunction(call)


def _check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return float(value)


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


def _writer(_inst: Any, _attr: Any, value: Any) -> None:
    if value is None or not callable(value):
        raise InvalidWriterError(f"writer must be a callable taking bytes, not {value!r}")


def _callback(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{attr.name} must be a callable or None, not {type(value).__name__}")


def _buffer_size(_inst: Any, _attr: Any, value: Any) -> None:
    if value == math.inf and not isinstance(value, bool):
        return
    if _check_int("buffer_size", value) < 0:
        raise ValueError(f"buffer_size must be >= 0 or math.inf, not {value}")


def _interval(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    seconds = _check_number(attr.name, value)
    if math.isinf(seconds):
        raise ValueError(f"{attr.name} must be finite, not {value}")
    if 0 < seconds < MIN_INTERVAL:
        raise ValueError(
            f"{attr.name} must be <= 0 (off) or >= {MIN_INTERVAL} seconds, not {value!r}"
        )


def _finite_non_negative(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    seconds = _check_number(attr.name, value)
    if seconds < 0 or math.isinf(seconds):
        raise ValueError(f"{attr.name} must be >= 0 and finite, not {value}")


def _non_negative(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if _check_number(attr.name, value) < 0:
        raise ValueError(f"{attr.name} must be >= 0, not {value}")


def _positive_int(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if _check_int(attr.name, value) < 1:
        raise ValueError(f"{attr.name} must be >= 1, not {value}")


def _non_negative_int(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if _check_int(attr.name, value) < 0:
        raise ValueError(f"{attr.name} must be >= 0, not {value}")


def _optional_positive_int(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _positive_int(inst, attr, value)


def _async_max(_inst: Any, _attr: Any, value: Any) -> None:
    if _check_int("async_max", value) < -1:
        raise ValueError(f"async_max must be -1 (unlimited), 0 (default) or positive, not {value}")


def _when_full(_inst: Any, _attr: attrs.Attribute[WhenFull], value: WhenFull) -> None:
    if value not in WHEN_FULL_CHOICES:
        raise ValueError(f"when_full must be one of {WHEN_FULL_CHOICES}, not {value!r}")


def _on_writer_error(
    _inst: Any, _attr: attrs.Attribute[OnWriterError], value: OnWriterError
) -> None:
    if value not in ("continue", "raise") and not callable(value):
        raise ValueError(
            f"on_writer_error must be 'continue', 'raise' or a callable (data, exc), not {value!r}"
        )


def _batch_join(_inst: Any, _attr: Any, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"batch_join must be a bool, not {type(value).__name__}")


def _writer_thread(_inst: Any, _attr: Any, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"writer_thread must be a bool, not {type(value).__name__}")


@attrs.frozen(kw_only=True)
class AggregatorConfig:
    """Everything an `Aggregator` needs, validated at construction.

    Bad values raise `ValueError` or `TypeError` naming the field; a missing or
    non-callable ``writer`` raises `InvalidWriterError`.
    """

    writer: Callable[[Any], object] = attrs.field(validator=_writer)
    """Receives each write (or batch), one call at a time; ``async def`` is awaited."""

    buffer_size: int | float = attrs.field(default=1, validator=_buffer_size)
    """Capacity of the memory channel, in items: 0 is a rendezvous, `math.inf` is unbounded."""

    sync_interval: float = attrs.field(default=0.0, validator=_interval)
    """Seconds between runs of ``sync_fn``; <= 0 disables it, else at least 0.001."""

    sync_fn: Callable[[], object] | None = attrs.field(default=None, validator=_callback)
    """Periodic callback run between writer calls, never beside one (sync or async)."""

    async_interval: float = attrs.field(default=0.0, validator=_interval)
    """Seconds between runs of ``async_fn``; <= 0 disables it, else at least 0.001."""

    async_fn: Callable[[], object] | None = attrs.field(default=None, validator=_callback)
    """Periodic callback run as its own task, beside the writer, under a limiter."""

    async_max: int = attrs.field(default=1, validator=_async_max)
    """Concurrent ``async_fn`` runs allowed: -1 unlimited, 0 the default (1)."""

    drain_timeout: float = attrs.field(default=5.0, validator=_non_negative)
    """Seconds a stop may spend delivering what is still buffered.

    A ``writer_thread`` call still running then is no longer waited for: its batch is
    counted in ``dropped_drain_timeout``, though the thread may still finish writing it.
    A thread the writer or a callback starts itself (`FileSink.write`, ``sync_fn``) is
    waited for: a stop can overrun by that one call.
    """

    max_errors: int = attrs.field(default=100, validator=_positive_int)
    """How many recent errors `Aggregator.errors` keeps."""

    batch_max_items: int = attrs.field(default=1, validator=_positive_int)
    """Most items handed to the writer in one call (only what is already buffered)."""

    batch_max_bytes: int | None = attrs.field(default=None, validator=_optional_positive_int)
    """A batch stops growing before it would pass this many bytes (None: no limit)."""

    batch_linger: float = attrs.field(default=0.0, validator=_finite_non_negative)
    """Seconds to wait for a batch to fill; never delays `Aggregator.flush` or a stop."""

    batch_join: bool = attrs.field(default=True, validator=_batch_join)
    """True: the writer gets one `bytes`; False: it always gets a `list` of `bytes`."""

    writer_thread: bool = attrs.field(default=False, validator=_writer_thread)
    """Run a blocking sync writer in a worker thread, so it never blocks the event loop."""

    when_full: WhenFull = attrs.field(default="block", validator=_when_full)
    """What a write does when the buffer is full: block, drop_newest, drop_oldest or raise."""

    buffer_max_bytes: int | None = attrs.field(default=None, validator=_optional_positive_int)
    """A second bound, in payload bytes buffered, applied with ``buffer_size``."""

    max_item_bytes: int | None = attrs.field(default=None, validator=_optional_positive_int)
    """Writes larger than this raise `ValueError` (None: no limit)."""

    on_writer_error: OnWriterError = attrs.field(default="continue", validator=_on_writer_error)
    """After retries: 'continue' (record, go on), 'raise' (fail the nursery) or a hook."""

    writer_retries: int = attrs.field(default=0, validator=_non_negative_int)
    """How many times a failing writer call is retried, with the same batch, before the policy."""

    writer_retry_backoff: float = attrs.field(default=0.1, validator=_finite_non_negative)
    """Seconds before the first retry; doubled after each; every sleep, the first one
    included, is capped at 10 s."""

    writer_is_async: bool = attrs.field(init=False, repr=False, eq=False)
    """Whether ``writer`` is an ``async def`` (worked out once, here)."""

    sync_fn_is_async: bool = attrs.field(init=False, repr=False, eq=False)
    """Whether ``sync_fn`` is an ``async def``."""

    async_fn_is_async: bool = attrs.field(init=False, repr=False, eq=False)
    """Whether ``async_fn`` is an ``async def``."""

    def __attrs_post_init__(self) -> None:
        if self.when_full == "drop_oldest" and self.buffer_size < 1:
            raise ValueError("when_full='drop_oldest' needs buffer_size >= 1")
        writer_is_async = is_async_callable(self.writer)
        if self.writer_thread and writer_is_async:
            raise ValueError("writer_thread=True needs a sync writer, not an async one")
        object.__setattr__(self, "writer_is_async", writer_is_async)
        object.__setattr__(self, "sync_fn_is_async", is_async_callable(self.sync_fn))
        object.__setattr__(self, "async_fn_is_async", is_async_callable(self.async_fn))

    @property
    def async_limit(self) -> float:
        """The ``async_max`` as a `trio.CapacityLimiter` total: `math.inf` when unlimited."""
        if self.async_max == -1:
            return math.inf
        return self.async_max or 1

    @property
    def sync_enabled(self) -> bool:
        """Whether the inline periodic callback runs at all."""
        return self.sync_fn is not None and self.sync_interval > 0

    @property
    def async_enabled(self) -> bool:
        """Whether the concurrent periodic callback runs at all."""
        return self.async_fn is not None and self.async_interval > 0
