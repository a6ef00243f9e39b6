"""`_timers` driven directly: `tick_every`, `call_maybe_async` and `run_timers`, on a
mock clock (``autojump_clock``: time only moves when every task waits)."""

from __future__ import annotations

import functools
from collections.abc import Generator
from typing import Any

import pytest
import trio
import trio.testing

from trio_aggregator import AggregatorConfig
from trio_aggregator._ledger import Ledger
from trio_aggregator._timers import call_maybe_async, run_timers, tick_every

from .conftest import settle

# --------------------------------------------------------------------------- tick_every


async def test_tick_every_ticks_on_a_fixed_schedule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticks: list[float] = []
    with trio.move_on_after(5.5):
        await tick_every(1.0, lambda: ticks.append(trio.current_time()))
    assert ticks == [1.0, 2.0, 3.0, 4.0, 5.0]


async def test_tick_every_does_not_drift_when_each_tick_takes_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticks: list[float] = []

    def slow_tick() -> None:
        ticks.append(trio.current_time())
        autojump_clock.jump(0.4)  # the event loop was busy for 0.4 s

    with trio.move_on_after(3.5):
        await tick_every(1.0, slow_tick)
    assert ticks == [1.0, 2.0, 3.0]  # not 1.0, 2.4, 3.8


async def test_tick_every_skips_the_ticks_missed_while_the_loop_was_busy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(trio.current_time())
        if len(ticks) == 1:
            autojump_clock.jump(3.5)  # busy until t=4.5: the ticks at 2, 3 and 4 are missed

    with trio.move_on_after(7.5):
        await tick_every(1.0, tick)
    assert ticks == [1.0, 5.0, 6.0, 7.0]  # not bunched up at 4.5, and back on the grid


async def test_tick_every_starts_one_interval_after_it_is_called(
    autojump_clock: trio.testing.MockClock,
) -> None:
    await trio.sleep(0.25)
    ticks: list[float] = []
    with trio.move_on_after(2.0):
        await tick_every(0.5, lambda: ticks.append(trio.current_time()))
    assert ticks == [0.75, 1.25, 1.75]


# --------------------------------------------------------------------------- call_maybe_async


class Awaitable:
    """An awaitable that is not a coroutine; it records that it was awaited."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def __await__(self) -> Generator[Any, None, None]:
        self.calls.append("awaited")
        return (yield from trio.lowlevel.checkpoint().__await__())


async def test_call_maybe_async_awaits_an_async_callback() -> None:
    calls: list[str] = []

    async def fn() -> None:
        await trio.lowlevel.checkpoint()
        calls.append("async")

    await call_maybe_async(fn, True)
    assert calls == ["async"]


@pytest.mark.parametrize("returns", ["coroutine", "awaitable object"])
async def test_call_maybe_async_awaits_what_a_sync_callback_returns(returns: str) -> None:
    calls: list[str] = []

    async def later() -> None:
        calls.append("awaited")

    def fn() -> object:
        calls.append("called")
        return later() if returns == "coroutine" else Awaitable(calls)

    await call_maybe_async(fn, False)
    assert calls == ["called", "awaited"]


async def test_call_maybe_async_awaits_an_async_partial_given_as_sync() -> None:
    calls: list[str] = []

    async def fn(tag: str) -> None:
        calls.append(tag)

    await call_maybe_async(functools.partial(fn, "partial"), False)
    assert calls == ["partial"]


@pytest.mark.parametrize("result", [None, 42, "not awaitable"])
async def test_call_maybe_async_with_a_plain_sync_callback_is_a_checkpoint(
    result: object,
) -> None:
    calls: list[str] = []

    def fn() -> object:
        calls.append("called")
        return result

    with trio.testing.assert_checkpoints():
        await call_maybe_async(fn, False)
    with trio.CancelScope() as scope:
        scope.cancel()
        await call_maybe_async(fn, False)  # called, then the checkpoint raises Cancelled
    assert scope.cancelled_caught
    assert calls == ["called", "called"]


async def test_call_maybe_async_lets_exceptions_through() -> None:
    def fn() -> None:
        raise KeyError("sync")

    async def afn() -> None:
        raise KeyError("async")

    with pytest.raises(KeyError, match="sync"):
        await call_maybe_async(fn, False)
    with pytest.raises(KeyError, match="async"):
        await call_maybe_async(afn, True)


# --------------------------------------------------------------------------- run_timers


def make_config(**settings: Any) -> AggregatorConfig:
    return AggregatorConfig(writer=lambda data: None, **settings)


async def test_run_timers_with_no_callback_enabled_returns_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(sync_fn=lambda: None, async_fn=lambda: None)  # intervals 0: disabled
    await run_timers(config, Ledger(config), lambda: None)
    assert trio.current_time() == 0.0


async def test_sync_ticks_only_request_sync_never_call_sync_fn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def sync_fn() -> None:
        raise AssertionError("the receiver runs sync_fn, not the timer")

    config = make_config(sync_fn=sync_fn, sync_interval=1.0)
    ledger = Ledger(config)
    requests: list[float] = []
    with trio.move_on_after(10.0):
        await run_timers(config, ledger, lambda: requests.append(trio.current_time()))
    assert requests == [float(t) for t in range(1, 10)]  # the tick at 10 loses to the deadline
    assert (ledger.sync_runs, ledger.async_runs, ledger.async_skipped) == (0, 0, 0)


@pytest.mark.parametrize(
    ("async_max", "runs", "skipped", "most_at_once"),
    [(0, 3, 6, 1), (1, 3, 6, 1), (2, 6, 3, 2), (-1, 9, 0, 3)],
)
async def test_async_fn_runs_are_limited_by_async_max_and_skipped_ticks_counted(
    async_max: int,
    runs: int,
    skipped: int,
    most_at_once: int,
    autojump_clock: trio.testing.MockClock,
) -> None:
    running = 0
    most = 0
    started: list[float] = []

    async def async_fn() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        started.append(trio.current_time())
        try:
            await trio.sleep(2.5)
        finally:
            running -= 1

    config = make_config(async_fn=async_fn, async_interval=1.0, async_max=async_max)
    ledger = Ledger(config)
    with trio.move_on_after(10.0):  # ticks at 1..9; each run takes 2.5 s
        await run_timers(config, ledger, lambda: pytest.fail("no sync_fn"))
    assert (ledger.async_runs, ledger.async_skipped) == (runs, skipped)
    assert len(started) == runs
    assert most == most_at_once
    assert running == 0  # the runs still going were cancelled with the timers


async def test_async_fn_errors_are_counted_and_the_ticks_go_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = 0

    def async_fn() -> None:  # a sync callable works too
        nonlocal calls
        calls += 1
        if calls % 2:
            raise OSError(f"tick {calls} failed")

    config = make_config(async_fn=async_fn, async_interval=1.0)
    ledger = Ledger(config)
    with trio.move_on_after(4.5):
        await run_timers(config, ledger, lambda: None)
    assert calls == ledger.async_runs == 4
    assert ledger.callback_errors == 2
    assert [str(exc) for exc in ledger.errors.all] == ["tick 1 failed", "tick 3 failed"]


async def test_a_failed_async_fn_run_frees_its_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def async_fn() -> None:
        await trio.sleep(0.5)
        raise ValueError("boom")

    config = make_config(async_fn=async_fn, async_interval=1.0, async_max=1)
    ledger = Ledger(config)
    with trio.move_on_after(3.9):
        await run_timers(config, ledger, lambda: None)
    assert (ledger.async_runs, ledger.async_skipped, ledger.callback_errors) == (3, 0, 3)


async def test_sync_and_async_timers_tick_side_by_side(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async_runs: list[float] = []

    async def async_fn() -> None:
        async_runs.append(trio.current_time())

    config = make_config(
        sync_fn=lambda: None, sync_interval=0.5, async_fn=async_fn, async_interval=2.0
    )
    ledger = Ledger(config)
    requests: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_timers, config, ledger, lambda: requests.append(trio.current_time()))
        await trio.sleep(4.25)
        await settle()
        nursery.cancel_scope.cancel()
    assert requests == [0.5 * n for n in range(1, 9)]
    assert async_runs == [2.0, 4.0]
    assert ledger.async_runs == 2
