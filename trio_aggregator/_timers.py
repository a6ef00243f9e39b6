"""The two periodic callbacks: ``sync_fn`` between writer calls, ``async_fn`` beside them."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import trio

from ._lowlevel import checkpoint

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._config import AggregatorConfig
    from ._ledger import Ledger


async def tick_every(interval: float, tick: Callable[[], None]) -> None:
    """Call *tick* every *interval* seconds, on a fixed schedule, until cancelled.

    Ticks missed while the event loop was busy are skipped, not bunched up.
    """
    deadline = trio.current_time() + interval
    while True:
        await trio.sleep_until(deadline)
        tick()
        deadline += interval
        now = trio.current_time()
        if deadline <= now:
            deadline += interval * ((now - deadline) // interval + 1)


async def call_maybe_async(fn: Callable[[], object], is_async: bool) -> None:
    """Call a zero-argument callback, awaiting it if it is (or returns) an awaitable."""
    if is_async:
        await fn()  # type: ignore[misc]  # is_async: fn returns an awaitable
        return
    result = fn()
    if result is not None and inspect.isawaitable(result):
        await result
    else:
        await checkpoint()


async def run_timers(
    config: AggregatorConfig, ledger: Ledger, request_sync: Callable[[], None]
) -> None:
    """Tick both callbacks until cancelled: ``sync_fn`` by *request_sync* (the receiver
    runs it between two writer calls), ``async_fn`` as tasks under a `trio.CapacityLimiter`.
    """
    async with trio.open_nursery() as nursery:
        if config.sync_enabled:
            nursery.start_soon(tick_every, config.sync_interval, request_sync)
        if config.async_enabled:
            nursery.start_soon(_tick_async_fn, config, ledger, nursery)


async def _tick_async_fn(config: AggregatorConfig, ledger: Ledger, nursery: trio.Nursery) -> None:
    limiter = trio.CapacityLimiter(config.async_limit)

    def tick() -> None:
        token = object()
        try:
            limiter.acquire_on_behalf_of_nowait(token)
        except trio.WouldBlock:
            ledger.async_skipped += 1
            return
        ledger.async_runs += 1
        nursery.start_soon(_run_async_fn, config, ledger, limiter, token)

    await tick_every(config.async_interval, tick)


async def _run_async_fn(
    config: AggregatorConfig, ledger: Ledger, limiter: trio.CapacityLimiter, token: object
) -> None:
    fn = config.async_fn
    assert fn is not None
    try:
        await call_maybe_async(fn, config.async_fn_is_async)
    except Exception as exc:
        ledger.callback_errors += 1
        ledger.errors.record(exc, "async_fn")
    finally:
        limiter.release_on_behalf_of(token)
