from __future__ import annotations

import functools
import math
from typing import Any

import pytest

from trio_aggregator import AggregatorConfig, InvalidWriterError
from trio_aggregator._config import MIN_INTERVAL, is_async_callable


def writer(data: bytes) -> None:
    pass


async def async_writer(data: bytes) -> None:
    pass


def test_defaults() -> None:
    config = AggregatorConfig(writer=writer)
    assert config.buffer_size == 1
    assert config.drain_timeout == 5.0
    assert config.max_errors == 100
    assert config.async_limit == 1
    assert not config.sync_enabled
    assert not config.async_enabled


def test_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        AggregatorConfig(writer)  # type: ignore[misc]
    config = AggregatorConfig(writer=writer)
    with pytest.raises(AttributeError):
        config.buffer_size = 3  # type: ignore[misc]


@pytest.mark.parametrize("bad", [None, 3, "print"])
def test_invalid_writer(bad: Any) -> None:
    with pytest.raises(InvalidWriterError, match="writer"):
        AggregatorConfig(writer=bad)


def test_missing_writer() -> None:
    with pytest.raises(TypeError, match="writer"):
        AggregatorConfig()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("field", "value", "exc"),
    [
        ("buffer_size", -1, ValueError),
        ("buffer_size", 1.5, TypeError),
        ("buffer_size", True, TypeError),
        ("buffer_size", "3", TypeError),
        ("sync_interval", math.nan, ValueError),
        ("sync_interval", math.inf, ValueError),
        ("sync_interval", "1", TypeError),
        ("async_interval", None, TypeError),
        ("sync_fn", 3, TypeError),
        ("async_fn", "x", TypeError),
        ("async_max", -2, ValueError),
        ("async_max", 1.0, TypeError),
        ("drain_timeout", -0.1, ValueError),
        ("max_errors", 0, ValueError),
        ("batch_max_items", 0, ValueError),
        ("batch_max_bytes", 0, ValueError),
        ("batch_linger", -1, ValueError),
        ("batch_linger", math.inf, ValueError),
        ("writer_retry_backoff", math.inf, ValueError),
        ("batch_join", 1, TypeError),
        ("writer_thread", "yes", TypeError),
        ("when_full", "sometimes", ValueError),
        ("buffer_max_bytes", -5, ValueError),
        ("max_item_bytes", 0, ValueError),
        ("on_writer_error", "ignore", ValueError),
        ("writer_retries", -1, ValueError),
        ("writer_retry_backoff", -1.0, ValueError),
    ],
)
def test_bad_values_name_the_field(field: str, value: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc, match=field):
        AggregatorConfig(writer=writer, **{field: value})


@pytest.mark.parametrize("field", ["sync_interval", "async_interval"])
@pytest.mark.parametrize("value", [5e-324, 1e-9, 0.000999])
def test_intervals_below_the_minimum_are_refused(field: str, value: float) -> None:
    # Issue 11, item 9: 1e-9 spun the CPU, 5e-324 stopped the timer after one tick.
    with pytest.raises(ValueError, match=rf"^{field} must be <= 0 \(off\) or >= 0.001 seconds"):
        AggregatorConfig(writer=writer, **{field: value})


@pytest.mark.parametrize("field", ["sync_interval", "async_interval"])
@pytest.mark.parametrize("value", [-1.0, 0, 0.0, MIN_INTERVAL, 0.5])
def test_intervals_off_or_at_least_the_minimum_are_accepted(field: str, value: float) -> None:
    assert getattr(AggregatorConfig(writer=writer, **{field: value}), field) == value


@pytest.mark.parametrize("size", [0, 1, 1000, math.inf])
def test_buffer_sizes(size: float) -> None:
    assert AggregatorConfig(writer=writer, buffer_size=size).buffer_size == size


def test_async_max_meanings() -> None:
    assert AggregatorConfig(writer=writer, async_max=-1).async_limit == math.inf
    assert AggregatorConfig(writer=writer, async_max=0).async_limit == 1
    assert AggregatorConfig(writer=writer, async_max=7).async_limit == 7


def test_callbacks_enabled_only_with_interval_and_fn() -> None:
    assert not AggregatorConfig(writer=writer, sync_interval=1.0).sync_enabled
    assert not AggregatorConfig(writer=writer, sync_fn=writer, sync_interval=0).sync_enabled
    assert not AggregatorConfig(writer=writer, sync_fn=writer, sync_interval=-1).sync_enabled
    assert AggregatorConfig(writer=writer, sync_fn=writer, sync_interval=1).sync_enabled
    assert AggregatorConfig(writer=writer, async_fn=writer, async_interval=0.5).async_enabled


def test_drop_oldest_needs_a_buffer() -> None:
    with pytest.raises(ValueError, match="drop_oldest"):
        AggregatorConfig(writer=writer, when_full="drop_oldest", buffer_size=0)


def test_writer_thread_needs_sync_writer() -> None:
    with pytest.raises(ValueError, match="writer_thread"):
        AggregatorConfig(writer=async_writer, writer_thread=True)


def test_on_writer_error_accepts_callable() -> None:
    def hook(data: object, exc: Exception) -> None:
        pass

    assert AggregatorConfig(writer=writer, on_writer_error=hook).on_writer_error is hook


class AsyncCallable:
    async def __call__(self, data: bytes) -> None:
        pass


class SyncCallable:
    def __call__(self, data: bytes) -> None:
        pass


def test_is_async_callable() -> None:
    assert is_async_callable(async_writer)
    assert is_async_callable(functools.partial(async_writer))
    assert is_async_callable(AsyncCallable())
    assert not is_async_callable(writer)
    assert not is_async_callable(SyncCallable())
    assert not is_async_callable(print)
    assert not is_async_callable(None)
