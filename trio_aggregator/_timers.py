"""Periodic ticking without drift, for the aggregator's two callbacks."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable


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
        await trio.lowlevel.checkpoint()
