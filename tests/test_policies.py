"""Policies (issue 5): when_full, buffer_max_bytes, max_item_bytes, on_writer_error,
writer retries, drop counters and their warning, peak_nb_processing, buffered time."""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_aggregator import Aggregator, AggregatorStatistics, open_aggregator

from .conftest import Payload, Recorder, config, gated_aggregator, settle

if TYPE_CHECKING:
    from collections.abc import Sequence


def flatten(calls: Sequence[Payload]) -> list[bytes]:
    """The items of *calls*: a list's items, and a `bytes` call as one item."""
    out: list[bytes] = []
    for call in calls:
        out.extend([call] if isinstance(call, bytes) else call)
    return out


def assert_drop_sum(stats: AggregatorStatistics) -> None:
    assert stats.dropped == (
        stats.dropped_full
        + stats.dropped_oldest
        + stats.dropped_drain_timeout
        + stats.dropped_writer_error
    )


# --------------------------------------------------------------------------- when_full


async def test_block_write_nowait_raises_wouldblock_when_full() -> None:
    async with gated_aggregator(buffer_size=1) as g:
        agg = g.agg
        await g.busy()
        g.fill(b"b")
        with pytest.raises(trio.WouldBlock):
            agg.write_nowait(b"c")
        async with agg.sender() as sender:
            with pytest.raises(trio.WouldBlock):
                sender.send_nowait(b"d")
        stats = agg.statistics()
        assert stats.items_accepted == 2
        assert stats.dropped == 0
        g.release()
        await agg.flush()
    assert g.writer.calls == [b"a", b"b"]


@pytest.mark.parametrize("via", ["write", "sender"])
async def test_block_write_cancelled_while_blocked_is_not_delivered_nor_accepted(
    via: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with gated_aggregator(buffer_size=1, batch_max_items=4) as g:
        agg = g.agg
        await g.busy()
        await agg.write(b"b")
        sender = agg.sender()
        with trio.move_on_after(1.0) as scope:
            if via == "write":
                await agg.write(b"cancelled")
            else:
                await sender.send(b"cancelled")
        assert scope.cancelled_caught
        assert agg.nb_waiting == 0
        assert agg.size_waiting == 0
        assert agg.statistics().items_accepted == 2
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(1.0):
                await agg.write(b"too slow")
        g.release()
        await agg.flush()
        await agg.write(b"c")
        await sender.aclose()
    assert flatten(g.writer.calls) == [b"a", b"b", b"c"]
    stats = agg.statistics()
    assert stats.items_accepted == stats.items_written == 3
    assert stats.dropped == 0


async def test_flush_is_not_held_up_by_a_blocked_write_that_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with gated_aggregator(buffer_size=1) as g:
        agg, nursery = g.agg, g.nursery
        await g.busy()
        await agg.write(b"b")
        blocked = trio.CancelScope()

        async def blocked_write() -> None:
            with blocked:
                await agg.write(b"never")

        nursery.start_soon(blocked_write)
        await settle()
        assert agg.nb_waiting == 1
        flushed = trio.Event()

        async def flush() -> None:
            await agg.flush()  # includes the blocked write
            flushed.set()

        nursery.start_soon(flush)
        await settle()
        blocked.cancel()
        g.release()
        await flushed.wait()
        assert g.writer.calls == [b"a", b"b"]


async def test_drop_newest_discards_the_new_write_and_counts_it() -> None:
    async with gated_aggregator(buffer_size=2, when_full="drop_newest") as g:
        agg = g.agg
        await g.busy()
        assert await agg.write(b"b") == 1
        assert await agg.write(b"c") == 1
        assert await agg.write(b"dd") == 0
        assert agg.write_nowait(b"e") == 0
        async with agg.sender() as sender:
            await sender.send(b"f")
            sender.send_nowait(b"g")
        assert agg.nb_waiting == 0
        assert agg.nb_processing == 2
        stats = agg.statistics()
        assert stats.dropped_full == 4
        assert stats.dropped == 4
        assert stats.dropped_oldest == 0
        assert stats.items_accepted == 3
        g.release()
        await agg.flush()
        assert await agg.write(b"h") == 1  # room again
    assert g.writer.calls == [b"a", b"b", b"c", b"h"]
    assert agg.statistics().items_written == 4


async def test_drop_oldest_evicts_the_oldest_buffered_item_and_counts_it() -> None:
    async with gated_aggregator(buffer_size=2, when_full="drop_oldest") as g:
        agg = g.agg
        await g.busy()
        assert await agg.write(b"b") == 1
        assert await agg.write(b"c") == 1
        assert await agg.write(b"dd") == 2  # evicts b
        assert agg.write_nowait(b"e") == 1  # evicts c
        async with agg.sender() as sender:
            await sender.send(b"f")  # evicts dd
            sender.send_nowait(b"g")  # evicts e
        assert agg.nb_processing == 2
        assert agg.size_processing == 2
        stats = agg.statistics()
        assert stats.dropped_oldest == 4
        assert stats.dropped == 4
        assert stats.dropped_full == 0
        assert stats.items_accepted == 7
        g.release()
        await agg.flush()
    assert g.writer.calls == [b"a", b"f", b"g"]
    stats = agg.statistics()
    assert stats.items_written + stats.dropped == stats.items_accepted


async def test_drop_oldest_never_evicts_items_held_for_a_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writer = Recorder()
    cfg = config(
        writer,
        buffer_size=1,
        when_full="drop_oldest",
        batch_max_items=3,
        batch_linger=10.0,
        batch_join=False,
    )
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        await settle()
        await agg.write(b"1")
        await settle()
        await agg.write(b"2")
        await settle()
        assert agg.nb_processing == 2  # both held by the lingering receiver
        for item in (b"3", b"4", b"5"):
            agg.write_nowait(item)  # 3 completes the batch, 4 then 5 compete for one slot
        await agg.flush()
        stats = agg.statistics()
    assert flatten(writer.calls) == [b"1", b"2", b"3", b"5"]
    assert stats.dropped_oldest == 1
    assert stats.items_written == 4


def test_drop_oldest_needs_buffer_size_at_least_one() -> None:
    with pytest.raises(ValueError, match="buffer_size"):
        config(print, buffer_size=0, when_full="drop_oldest")
    assert config(print, buffer_size=1, when_full="drop_oldest").when_full == "drop_oldest"
    assert config(print, buffer_size=math.inf, when_full="drop_oldest").buffer_size == math.inf
    assert config(print, buffer_size=0, when_full="drop_newest").buffer_size == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("when_full", "drop"), ("when_full", None), ("on_writer_error", "ignore")],
)
def test_policy_values_are_validated(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        config(print, **{field: value})


@pytest.mark.parametrize(
    ("field", "value", "exc"),
    [
        ("buffer_max_bytes", 0, ValueError),
        ("buffer_max_bytes", 1.0, TypeError),
        ("max_item_bytes", -1, ValueError),
        ("writer_retries", -1, ValueError),
        ("writer_retries", True, TypeError),
        ("writer_retry_backoff", -0.1, ValueError),
    ],
)
def test_policy_numbers_are_validated(field: str, value: object, exc: type[Exception]) -> None:
    with pytest.raises(exc, match=field):
        config(print, **{field: value})


async def test_raise_policy_raises_wouldblock_everywhere_and_drops_nothing() -> None:
    async with gated_aggregator(buffer_size=1, when_full="raise") as g:
        agg = g.agg
        await g.busy()
        assert await agg.write(b"b") == 1
        with pytest.raises(trio.WouldBlock):
            await agg.write(b"c")
        with pytest.raises(trio.WouldBlock):
            agg.write_nowait(b"c")
        async with agg.sender() as sender:
            with pytest.raises(trio.WouldBlock):
                await sender.send(b"c")
            with pytest.raises(trio.WouldBlock):
                sender.send_nowait(b"c")
        assert await agg.write(b"") == 0  # empty writes never need room
        stats = agg.statistics()
        assert stats.dropped == 0
        assert stats.items_accepted == 2
        assert agg.nb_waiting == 0
        g.release()
        await agg.flush()
    assert g.writer.calls == [b"a", b"b"]


async def test_raise_policy_write_that_raises_still_checkpoints() -> None:
    async with gated_aggregator(buffer_size=0, when_full="raise") as g:
        await g.busy()
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await g.agg.write(b"x")


# --------------------------------------------------------------------------- bytes bounds


async def test_buffer_max_bytes_blocks_when_one_more_item_would_pass_it() -> None:
    async with gated_aggregator(buffer_size=10, buffer_max_bytes=10) as g:
        agg = g.agg
        await g.busy()
        assert await agg.write(b"b" * 6) == 6
        assert await agg.write(b"c" * 4) == 4  # exactly 10: fits
        assert agg.size_processing == 10
        with pytest.raises(trio.WouldBlock):
            agg.write_nowait(b"d")
        g.nursery.start_soon(agg.write, b"d")
        await settle()
        assert agg.nb_waiting == 1
        assert agg.size_waiting == 1
        g.release()
        await agg.flush()
    assert g.writer.calls == [b"a", b"b" * 6, b"c" * 4, b"d"]
    assert agg.statistics().dropped == 0


async def test_buffer_size_and_buffer_max_bytes_both_apply() -> None:
    async with gated_aggregator(buffer_size=2, buffer_max_bytes=1000, when_full="drop_newest") as g:
        await g.busy()
        g.fill(b"b", b"c")
        assert g.agg.write_nowait(b"d") == 0  # full in items long before bytes
        assert g.agg.statistics().dropped_full == 1


async def test_an_item_larger_than_buffer_max_bytes_is_accepted_alone() -> None:
    big = b"B" * 20
    async with gated_aggregator(buffer_size=10, buffer_max_bytes=5) as g:
        agg = g.agg
        await g.busy()
        g.fill(big)  # empty buffer: accepted alone
        assert agg.size_processing == 20
        with pytest.raises(trio.WouldBlock):
            agg.write_nowait(b"x")
        g.release()
        await agg.flush()
        # Not empty: the big item waits until the buffer is.
        await g.busy()
        g.fill(b"y")
        with pytest.raises(trio.WouldBlock):
            agg.write_nowait(big)
        g.nursery.start_soon(agg.write, big)
        await settle()
        assert agg.nb_waiting == 1
        g.release()
        await agg.flush()
    assert g.writer.calls == [b"a", big, b"a", b"y", big]


async def test_buffer_max_bytes_with_drop_newest_and_raise() -> None:
    bounds: dict[str, Any] = {"buffer_size": 10, "buffer_max_bytes": 4}
    async with (
        gated_aggregator(**bounds, when_full="drop_newest") as g_newest,
        gated_aggregator(**bounds, when_full="raise") as g_raise,
    ):
        newest, raising = g_newest.agg, g_raise.agg
        await g_newest.busy()
        await g_raise.busy()
        assert await newest.write(b"xyz") == 3
        assert await newest.write(b"zz") == 0
        assert newest.statistics().dropped_full == 1
        assert await raising.write(b"xyz") == 3
        with pytest.raises(trio.WouldBlock):
            await raising.write(b"zz")
        assert raising.statistics().dropped == 0


async def test_buffer_max_bytes_with_drop_oldest_evicts_until_it_fits() -> None:
    async with gated_aggregator(buffer_size=10, buffer_max_bytes=10, when_full="drop_oldest") as g:
        agg = g.agg
        await g.busy()
        g.fill(b"bbbb", b"cccc", b"dd")
        assert agg.write_nowait(b"eeeeeee") == 7  # evicts bbbb and cccc: 2 + 7 <= 10
        assert agg.statistics().dropped_oldest == 2
        assert agg.write_nowait(b"F" * 30) == 30  # evicts everything, then goes alone
        assert agg.statistics().dropped_oldest == 4
        assert agg.size_processing == 30
        g.release()
        await agg.flush()
    assert g.writer.calls == [b"a", b"F" * 30]


async def test_drop_oldest_when_eviction_cannot_make_room_the_write_is_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The bytes held for a lingering batch count in buffer_max_bytes and cannot be
    evicted: a write that still does not fit is dropped, and counted, never lost."""
    writer = Recorder()
    cfg = config(
        writer,
        buffer_size=4,
        buffer_max_bytes=10,
        when_full="drop_oldest",
        batch_max_items=10,
        batch_linger=5.0,
        batch_join=False,
    )
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        await settle()
        await agg.write(b"h" * 8)
        await settle()  # held by the lingering receiver
        await agg.write(b"b")  # handed over too: 9 bytes held
        await settle()
        assert agg.size_processing == 9
        returned = [agg.write_nowait(b"c" * 2), agg.write_nowait(b"d" * 3)]
        await agg.flush()
        stats = agg.statistics()
    accepted = [n for n in returned if n]
    assert stats.items_accepted == 2 + len(accepted)
    assert stats.dropped_full == returned.count(0)
    assert stats.items_written + stats.dropped_oldest == stats.items_accepted
    assert flatten(writer.calls)[:2] == [b"h" * 8, b"b"]
    assert_drop_sum(stats)


async def test_writes_blocked_at_stop_fail_and_are_not_accepted() -> None:
    outcomes: list[str] = []
    async with gated_aggregator(buffer_size=1) as g:
        agg, nursery = g.agg, g.nursery
        await g.busy()
        await agg.write(b"b")

        async def blocked(item: bytes) -> None:
            try:
                await agg.write(item)
            except trio.ClosedResourceError as exc:
                outcomes.append(type(exc).__name__)

        for item in (b"c", b"d"):
            nursery.start_soon(blocked, item)
        await settle()
        assert agg.nb_waiting == 2
        nursery.start_soon(agg.stop)
        await settle()
        assert outcomes == ["AggregatorClosedError"] * 2
        assert agg.nb_waiting == 0
        assert agg.size_waiting == 0
        g.release()
    assert g.writer.calls == [b"a", b"b"]
    stats = agg.statistics()
    assert stats.items_accepted == stats.items_written == 2
    assert stats.dropped == 0


@pytest.mark.parametrize("when_full", ["block", "drop_newest", "drop_oldest", "raise"])
async def test_max_item_bytes_raises_valueerror_naming_both_sizes(when_full: str) -> None:
    writer = Recorder()
    cfg = config(writer, buffer_size=4, max_item_bytes=10, when_full=when_full)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        with pytest.raises(ValueError, match=r"11.*10"):
            await agg.write(b"x" * 11)
        with pytest.raises(ValueError, match=r"12.*10"):
            agg.write_nowait(bytearray(12))
        async with agg.sender() as sender:
            with pytest.raises(ValueError, match=r"13.*10"):
                await sender.send(memoryview(b"y" * 13))
            with pytest.raises(ValueError, match=r"11.*10"):
                sender.send_nowait(b"z" * 11)
        stats = agg.statistics()
        assert stats.items_accepted == 0
        assert stats.dropped == 0
        assert await agg.write(b"k" * 10) == 10
    assert writer.calls == [b"k" * 10]


async def test_max_item_bytes_wins_over_the_alone_rule_of_buffer_max_bytes() -> None:
    writer = Recorder()
    cfg = config(writer, buffer_size=4, buffer_max_bytes=4, max_item_bytes=8)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        await settle()
        assert await agg.write(b"12345678") == 8  # larger than the buffer bound: alone
        with pytest.raises(ValueError, match="max_item_bytes"):
            await agg.write(b"123456789")
    assert writer.calls == [b"12345678"]


# --------------------------------------------------------------------------- writer errors


def failing_on(marker: bytes, exc_type: type[Exception] = OSError) -> tuple[Any, list[Payload]]:
    written: list[Payload] = []

    def writer(data: Payload) -> None:
        joined = data if isinstance(data, bytes) else b"".join(data)
        if marker in joined:
            raise exc_type(joined.decode())
        written.append(data)

    return writer, written


class FlakyWriter:
    """A writer that raises `OSError` on its first *failures* calls, then records the data.

    `times` holds the time of every call, failed or not.
    """

    def __init__(self, failures: float = math.inf) -> None:
        self.failures = failures
        self.times: list[float] = []
        self.written: list[Payload] = []

    def __call__(self, data: Payload) -> None:
        self.times.append(trio.current_time())
        if len(self.times) <= self.failures:
            raise OSError(f"attempt {len(self.times)} fails")
        self.written.append(data)


async def test_on_writer_error_continue_records_counts_and_goes_on() -> None:
    writer, written = failing_on(b"bad")
    cfg = config(writer, buffer_size=10)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        for item in (b"ok1", b"bad1", b"ok2", b"bad2", b"ok3"):
            await agg.write(item)
        await agg.flush()
        stats = agg.statistics()
        assert agg.is_running
    assert written == [b"ok1", b"ok2", b"ok3"]
    assert stats.writer_errors == 2
    assert stats.writer_calls == 5
    assert stats.dropped_writer_error == 2
    assert stats.items_written == 3
    assert_drop_sum(stats)
    assert [str(e) for e in agg.errors] == ["bad1", "bad2"]
    assert isinstance(agg.last_error, OSError)


async def test_on_writer_error_continue_counts_every_item_of_a_failed_batch() -> None:
    writer, written = failing_on(b"bad")
    cfg = config(writer, buffer_size=10, batch_max_items=3, batch_join=False)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        await settle()
        for item in (b"1", b"bad", b"3", b"4", b"5"):
            agg.write_nowait(item)
        await agg.flush()
        stats = agg.statistics()
    assert written == [[b"4", b"5"]]
    assert stats.dropped_writer_error == 3
    assert stats.items_written == 2
    assert stats.writer_errors == 1


@pytest.mark.parametrize("use_context_manager", [True, False])
async def test_on_writer_error_raise_propagates_into_the_nursery(
    use_context_manager: bool,
) -> None:
    writer, written = failing_on(b"bad", KeyError)
    cfg = config(writer, buffer_size=10, on_writer_error="raise")
    agg: Aggregator | None = None
    with pytest.RaisesGroup(KeyError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            if use_context_manager:
                async with open_aggregator(nursery, cfg) as agg:
                    await agg.write(b"ok")
                    await agg.write(b"bad")
                    await trio.sleep_forever()
            else:
                agg = Aggregator(cfg)
                await agg.start(nursery)
                await agg.write(b"ok")
                await agg.write(b"bad")
                await trio.sleep_forever()
    assert agg is not None
    assert written == [b"ok"]
    assert not agg.is_running
    stats = agg.statistics()
    assert stats.dropped_writer_error >= 1
    assert stats.items_written == 1
    assert stats.items_written + stats.dropped == stats.items_accepted


async def test_on_writer_error_raise_counts_what_was_still_buffered() -> None:
    with pytest.RaisesGroup(OSError, flatten_subgroups=True):
        async with gated_aggregator(buffer_size=10, on_writer_error="raise") as g:
            g.writer.fail_on = lambda data: True  # the sink is gone
            await g.busy()
            for item in (b"b", b"c", b"d"):
                g.agg.write_nowait(item)
            g.release()
            await trio.sleep_forever()
    agg = g.agg
    stats = agg.statistics()
    assert stats.items_accepted == 4
    assert stats.items_written == 0
    assert stats.dropped == 4
    assert stats.dropped_writer_error >= 1
    assert_drop_sum(stats)
    assert agg.nb_processing == 0


@pytest.mark.parametrize("join", [True, False])
async def test_dead_letter_hook_gets_the_data_and_the_exception(join: bool) -> None:
    writer, written = failing_on(b"bad")
    dead: list[tuple[object, Exception]] = []
    cfg = config(
        writer,
        buffer_size=10,
        batch_max_items=2,
        batch_join=join,
        on_writer_error=lambda data, exc: dead.append((data, exc)),
    )
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        await settle()
        for item in (b"ok1", b"bad", b"ok2"):
            agg.write_nowait(item)
        await agg.flush()
        stats = agg.statistics()
    assert len(dead) == 1
    data, exc = dead[0]
    assert data == (b"ok1bad" if join else [b"ok1", b"bad"])
    assert isinstance(exc, OSError)
    assert str(exc) == "ok1bad"
    assert flatten(written) == [b"ok2"]
    assert stats.dropped_writer_error == 2
    assert stats.callback_errors == 0


async def test_a_failing_dead_letter_hook_is_counted_and_recorded() -> None:
    writer, written = failing_on(b"bad")

    def hook(data: object, exc: Exception) -> None:
        raise RuntimeError("spill file full")

    cfg = config(writer, buffer_size=10, on_writer_error=hook)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        for item in (b"bad1", b"ok", b"bad2"):
            await agg.write(item)
        await agg.flush()
        stats = agg.statistics()
        assert agg.is_running
    assert written == [b"ok"]
    assert stats.callback_errors == 2
    assert stats.writer_errors == 2
    assert stats.dropped_writer_error == 2
    assert [type(e) for e in agg.errors] == [OSError, RuntimeError, OSError, RuntimeError]
    assert str(agg.last_error) == "spill file full"


async def test_an_async_dead_letter_hook_is_awaited() -> None:
    writer, _ = failing_on(b"bad")
    dead: list[object] = []

    async def hook(data: object, exc: Exception) -> None:
        await trio.sleep(0)
        dead.append(data)

    cfg = config(writer, buffer_size=4, on_writer_error=hook)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        await agg.write(b"bad")
        await agg.write(b"ok")
        await agg.flush()
        await settle()
        assert dead == [b"bad"]
        assert agg.statistics().dropped_writer_error == 1
        assert agg.statistics().items_written == 1


async def test_flush_waits_for_an_async_dead_letter_hook(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Regression: _consume settled a failed batch (releasing pending flushes) before
    awaiting the dead-letter hook, so flush() returned while an async hook still ran."""
    writer, _ = failing_on(b"bad")
    dead: list[object] = []

    async def hook(data: object, exc: Exception) -> None:
        await trio.sleep(1.0)  # e.g. pushing the data to another queue
        dead.append(data)

    cfg = config(writer, buffer_size=4, on_writer_error=hook)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        await agg.write(b"bad")
        await agg.flush()  # the item is settled only once the hook has it
        assert dead == [b"bad"]


async def test_a_sync_writer_returning_an_awaitable_is_awaited_on_retries_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    done: list[bytes] = []
    attempts = 0

    async def really_write(data: bytes) -> None:
        nonlocal attempts
        attempts += 1
        await trio.sleep(0)
        if attempts == 1:
            raise OSError("first attempt")
        done.append(data)

    def writer(data: bytes) -> Any:
        return really_write(data)

    cfg = config(writer, writer_retries=1, writer_retry_backoff=0.5)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        await agg.write(b"x")
        await agg.flush()
        stats = agg.statistics()
    assert done == [b"x"]
    assert stats.writer_calls == 2
    assert stats.writer_errors == 1
    assert stats.items_written == 1


async def test_retries_wait_a_doubling_backoff(autojump_clock: trio.testing.MockClock) -> None:
    writer = FlakyWriter(failures=4)
    cfg = config(writer, writer_retries=5, writer_retry_backoff=1.0)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        t0 = trio.current_time()
        await agg.write(b"x")
        await agg.flush()
        stats = agg.statistics()
    assert [t - t0 for t in writer.times] == pytest.approx([0, 1, 3, 7, 15])
    assert stats.writer_calls == 5
    assert stats.writer_errors == 4
    assert stats.items_written == 1
    assert stats.dropped == 0


async def test_retry_backoff_is_capped_at_ten_seconds_then_the_policy_applies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writer = FlakyWriter()
    dead: list[object] = []
    cfg = config(
        writer,
        writer_retries=5,
        writer_retry_backoff=3.0,
        drain_timeout=100.0,
        on_writer_error=lambda data, exc: dead.append(data),
    )
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        t0 = trio.current_time()
        await agg.write(b"x")
        await agg.flush()
        stats = agg.statistics()
    assert [t - t0 for t in writer.times] == pytest.approx([0, 3, 9, 19, 29, 39])
    assert dead == [b"x"]  # once, after the last retry
    assert stats.writer_calls == 6
    assert stats.writer_errors == 6
    assert stats.dropped_writer_error == 1


async def test_a_first_backoff_above_ten_seconds_is_capped_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Issue 11, item 9: writer_retry_backoff=3600 must not sleep an hour before the first retry.
    writer = FlakyWriter(failures=2)
    cfg = config(writer, writer_retries=3, writer_retry_backoff=3600.0, drain_timeout=100.0)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        t0 = trio.current_time()
        await agg.write(b"x")
        await agg.flush()
        stats = agg.statistics()
    assert [t - t0 for t in writer.times] == pytest.approx([0, 10, 20])
    assert writer.written == [b"x"]
    assert (stats.items_written, stats.dropped) == (1, 0)


async def test_zero_backoff_retries_at_once(autojump_clock: trio.testing.MockClock) -> None:
    writer = FlakyWriter(failures=2)
    cfg = config(writer, writer_retries=2, writer_retry_backoff=0)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        await agg.write(b"x")
        await agg.flush()
        assert agg.statistics().items_written == 1
    assert len(set(writer.times)) == 1


@pytest.mark.parametrize("batch", [1, 3])
async def test_a_retry_never_reorders(batch: int, autojump_clock: trio.testing.MockClock) -> None:
    written: list[bytes] = []
    failures = 0

    async def writer(data: Payload) -> None:
        nonlocal failures
        items = [data] if isinstance(data, bytes) else data
        if b"0" in items and failures < 3:
            failures += 1
            raise OSError("flaky")
        await trio.sleep(0.01)
        written.extend(items)

    cfg = config(
        writer,
        buffer_size=4,
        batch_max_items=batch,
        batch_join=False,
        writer_retries=3,
        writer_retry_backoff=0.5,
    )
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:

        async def produce(p: int) -> None:
            for i in range(6):
                if p or i:
                    await agg.write(b"%d" % (p * 10 + i))
                await trio.sleep(0.1)

        await agg.write(b"0")  # accepted first: fails three times, then goes through
        async with trio.open_nursery() as inner:
            for p in range(3):
                inner.start_soon(produce, p)
        await agg.flush()
        stats = agg.statistics()
    assert written[0] == b"0"
    assert sorted(written) == sorted(b"%d" % (p * 10 + i) for p in range(3) for i in range(6))
    for p in range(3):
        assert [w for w in written if int(w) // 10 == p] == [b"%d" % (p * 10 + i) for i in range(6)]
    assert stats.writer_errors == 3
    assert stats.dropped == 0


async def test_writes_are_accepted_while_a_retry_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writer = FlakyWriter(failures=1)
    cfg = config(
        writer, buffer_size=2, when_full="drop_newest", writer_retries=1, writer_retry_backoff=5.0
    )
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        await agg.write(b"first")
        await trio.sleep(1)  # the retry is waiting
        assert writer.written == []
        assert agg.write_nowait(b"b") == 1
        assert agg.write_nowait(b"c") == 1
        assert agg.write_nowait(b"d") == 0  # when_full applies once the buffer fills
        await agg.flush()
    assert writer.written == [b"first", b"b", b"c"]
    assert agg.statistics().dropped_full == 1


async def test_flush_waits_for_retries(autojump_clock: trio.testing.MockClock) -> None:
    writer = FlakyWriter(failures=2)
    cfg = config(writer, writer_retries=2, writer_retry_backoff=2.0)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        t0 = trio.current_time()
        await agg.write(b"x")
        await agg.flush()
        assert trio.current_time() - t0 == pytest.approx(6.0)
        assert len(writer.times) == 3


async def test_stop_during_a_retry_backoff_is_bounded_by_drain_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cfg = config(FlakyWriter(), writer_retries=10, writer_retry_backoff=5.0, drain_timeout=2.0)
    agg = Aggregator(cfg)
    async with trio.open_nursery() as nursery:
        await agg.start(nursery)
        await agg.write(b"x")
        await settle()
        t0 = trio.current_time()
        await agg.stop()
        assert trio.current_time() - t0 == pytest.approx(2.0)
    stats = agg.statistics()
    assert stats.dropped_drain_timeout == 1
    assert stats.dropped_writer_error == 0
    assert stats.writer_calls == 1


# --------------------------------------------------------------------------- drop accounting


async def test_every_drop_reason_is_counted_and_summed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hang = trio.Event()

    async def writer(data: bytes) -> None:
        if data == b"bad":
            raise OSError("bad")
        if data == b"hang":
            await hang.wait()

    cfg = config(writer, buffer_size=1, when_full="drop_newest", drain_timeout=1.0)
    agg = Aggregator(cfg)
    async with trio.open_nursery() as nursery:
        await agg.start(nursery)
        await settle()
        await agg.write(b"bad")
        await settle()
        await agg.write(b"hang")
        await settle()
        assert await agg.write(b"x") == 1
        assert await agg.write(b"y") == 0
        await agg.stop()
    stats = agg.statistics()
    assert stats.dropped_writer_error == 1
    assert stats.dropped_full == 1
    assert stats.dropped_drain_timeout == 2  # hang (in flight) and x (buffered)
    assert stats.dropped_oldest == 0
    assert stats.dropped == 4
    assert_drop_sum(stats)
    assert stats.items_accepted == 3  # y was never accepted
    assert stats.items_written + stats.dropped - stats.dropped_full == stats.items_accepted


async def test_drop_counters_survive_a_restart() -> None:
    async with gated_aggregator(buffer_size=1, when_full="drop_oldest") as g:
        agg = g.agg
        await g.busy()
        agg.write_nowait(b"b")
        agg.write_nowait(b"c")
        g.release()
        await agg.restart()
        await g.busy()
        agg.write_nowait(b"d")
        agg.write_nowait(b"e")
        g.release()
        await agg.aclose()
    stats = agg.statistics()
    assert stats.dropped_oldest == 2
    assert stats.dropped == 2
    assert g.writer.calls == [b"a", b"c", b"a", b"e"]


class Clocks:
    """Both clocks the drop warning could be timed on: `time.monotonic` (faked) and Trio's
    (the mock clock), moved together, so the test holds whichever one it reads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, clock: trio.testing.MockClock) -> None:
        self.wall = 1000.0
        self.clock = clock
        self.start = trio.current_time()
        monkeypatch.setattr(time, "monotonic", lambda: self.wall)

    def at(self, seconds: float) -> None:
        """Set both clocks to *seconds* after the start of the test."""
        self.wall = 1000.0 + seconds
        self.clock.jump(self.start + seconds - trio.current_time())


def drop_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "trio_aggregator" and r.levelno == logging.WARNING
    ]


async def test_drop_warning_is_rate_limited_to_one_per_ten_seconds(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    clocks = Clocks(monkeypatch, autojump_clock)
    caplog.set_level(logging.WARNING, logger="trio_aggregator")
    async with gated_aggregator(buffer_size=1, when_full="drop_newest") as g:
        agg = g.agg
        await g.busy()
        agg.write_nowait(b"b")
        for _ in range(5):
            assert agg.write_nowait(b"x") == 0
        assert drop_warnings(caplog) == [
            "dropped 1 item(s) since the last report "
            "(totals: full=1, oldest=0, drain_timeout=0, writer_error=0)"
        ]
        clocks.at(5)
        for _ in range(3):
            agg.write_nowait(b"x")
        clocks.at(9.999)
        agg.write_nowait(b"x")
        assert len(drop_warnings(caplog)) == 1
        clocks.at(10)
        agg.write_nowait(b"x")
        warnings = drop_warnings(caplog)
        assert len(warnings) == 2
        assert warnings[1].startswith("dropped 9 item(s) since the last report")
        assert "full=10" in warnings[1]
        clocks.at(11)
        agg.write_nowait(b"x")
        agg.write_nowait(b"x")
        assert len(drop_warnings(caplog)) == 2
        g.release()
        await agg.stop()
    warnings = drop_warnings(caplog)
    assert len(warnings) == 3  # what was not reported yet is reported at stop
    assert warnings[2].startswith("dropped 2 item(s)")
    assert agg.statistics().dropped_full == 12


def error_reports(caplog: pytest.LogCaptureFixture) -> list[tuple[str, bool]]:
    """The ERROR messages of the package's logger, each with whether it has a traceback."""
    return [
        (r.getMessage(), r.exc_info is not None)
        for r in caplog.records
        if r.name == "trio_aggregator" and r.levelno == logging.ERROR
    ]


async def test_writer_errors_are_logged_at_most_once_per_ten_seconds(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    clocks = Clocks(monkeypatch, autojump_clock)
    caplog.set_level(logging.ERROR, logger="trio_aggregator")
    writer = Recorder()
    writer.fail_on = lambda data: data.startswith(b"bad")
    async with trio.open_nursery() as nursery:
        agg = await connect_aggregator_for(nursery, writer)
        for i in range(5):  # a writer failing in a hot loop: one ERROR, with its traceback
            await agg.write(b"bad %d" % i)
        await agg.flush()
        assert error_reports(caplog) == [("writer raised OSError(\"cannot write b'bad 0'\")", True)]
        clocks.at(9.999)
        await agg.write(b"bad 5")
        await agg.flush()
        assert len(error_reports(caplog)) == 1
        clocks.at(10)
        await agg.write(b"bad 6")
        await agg.flush()
        assert error_reports(caplog)[1:] == [
            (
                "writer raised OSError(\"cannot write b'bad 6'\") (5 more error(s) of writer"
                " not logged since the last report)",
                True,
            )
        ]
        clocks.at(11)
        await agg.write(b"bad 7")
        await agg.write(b"bad 8")
        await agg.write(b"good")
        await agg.flush()
        assert len(error_reports(caplog)) == 2
        await agg.aclose()
    assert error_reports(caplog)[2:] == [  # what was not logged yet is logged at stop
        (
            "writer raised 2 more error(s) since the last report, the last:"
            " OSError(\"cannot write b'bad 8'\")",
            False,
        )
    ]
    stats = agg.statistics()
    assert stats.writer_errors == 9  # every error is counted and kept
    assert [str(e) for e in agg.errors] == [f"cannot write b'bad {i}'" for i in range(9)]
    assert writer.calls == [b"good"]


async def test_each_source_of_errors_has_its_own_window(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.ERROR, logger="trio_aggregator")
    writer = Recorder()
    writer.fail_on = lambda data: True

    def sync_fn() -> None:
        raise ValueError("no sync")

    async with trio.open_nursery() as nursery:
        agg = await connect_aggregator_for(nursery, writer, sync_fn=sync_fn, sync_interval=1.0)
        await agg.write(b"x")
        await agg.write(b"y")
        await agg.flush()
        assert [m for m, _ in error_reports(caplog)] == [
            "writer raised OSError(\"cannot write b'x'\")"
        ]
        await trio.sleep(2.5)  # sync_fn fails at t=1 and t=2
        assert agg.statistics().callback_errors == 2
        await agg.aclose()
    messages = [m for m, _ in error_reports(caplog)]
    assert messages[1] == "sync_fn raised ValueError('no sync')"
    assert "writer raised 1 more error(s) since the last report" in messages[2]
    assert messages[3] == (
        "sync_fn raised 1 more error(s) since the last report, the last: ValueError('no sync')"
    )
    assert len(messages) == 4


async def connect_aggregator_for(
    nursery: trio.Nursery, writer: Recorder, **kwargs: Any
) -> Aggregator:
    agg = Aggregator(config(writer, buffer_size=4, max_errors=20, **kwargs))
    await agg.start(nursery)
    return agg


async def test_no_drop_warning_without_drops(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trio_aggregator")
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config(Recorder(), buffer_size=1, when_full="drop_newest")) as agg,
    ):
        for _ in range(10):
            await agg.write(b"x")
    assert drop_warnings(caplog) == []
    assert agg.statistics().dropped == 0


# --------------------------------------------------------------------------- statistics


async def test_peak_nb_processing_is_the_high_water_mark_of_the_run() -> None:
    async with gated_aggregator(buffer_size=5) as g:
        agg = g.agg
        assert agg.statistics().peak_nb_processing == 0
        await g.busy()
        g.fill(b"0", b"1", b"2")
        assert agg.statistics().peak_nb_processing == 3
        g.fill(b"0", b"1")
        for i in range(3):
            g.nursery.start_soon(agg.write, b"w%d" % i)
        await settle()
        assert agg.nb_waiting == 3
        g.release()
        await agg.flush()
        stats = agg.statistics()
        assert stats.nb_processing == 0
        assert stats.peak_nb_processing == 5  # waiters are not counted, only the buffer
        await agg.restart()
        assert agg.statistics().peak_nb_processing == 0
        await agg.write(b"z")
        await agg.aclose()
    assert agg.statistics().peak_nb_processing <= 1


async def test_buffered_time_needs_a_sample() -> None:
    cfg = config(Recorder(), buffer_size=100)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        for i in range(15):
            agg.write_nowait(b"%d" % i)
        await agg.flush()
        stats = agg.statistics()
        assert stats.buffered_time_p50 is None
        assert stats.buffered_time_p99 is None
        agg.write_nowait(b"16th")
        await agg.flush()
        stats = agg.statistics()
        assert stats.buffered_time_p50 is not None
        assert stats.buffered_time_p99 is not None


async def test_buffered_time_measures_the_wait(autojump_clock: trio.testing.MockClock) -> None:
    async with gated_aggregator(buffer_size=100, batch_max_items=8) as g:
        agg = g.agg
        await g.busy()
        g.fill(*(b"%d" % i for i in range(2, 33)))  # items 16 and 32 are sampled, at t0
        await trio.sleep(5.0)
        g.release()
        await agg.flush()
        stats = agg.statistics()
    assert stats.buffered_time_p50 == pytest.approx(5.0)
    assert stats.buffered_time_p99 == pytest.approx(5.0)


async def test_buffered_time_percentiles_follow_the_distribution(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cfg = config(Recorder(delay=1.0), buffer_size=200)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        await settle()
        for i in range(160):  # item k is written during [k-1, k]; 10 samples: k = 16..160
            agg.write_nowait(b"%d" % i)
        await agg.flush()
        stats = agg.statistics()
    assert stats.buffered_time_p50 is not None
    assert stats.buffered_time_p99 is not None
    assert 79.0 <= stats.buffered_time_p50 <= 97.0
    assert 143.0 <= stats.buffered_time_p99 <= 160.0
    assert stats.buffered_time_p50 < stats.buffered_time_p99


async def test_buffered_time_ignores_evicted_items(autojump_clock: trio.testing.MockClock) -> None:
    """Regression: _evict_oldest left the evicted item's sample queued, and the next
    _settle measured it as if the item had been written then."""
    async with gated_aggregator(buffer_size=16, when_full="drop_oldest") as g:
        agg = g.agg
        await g.busy()  # item 1
        g.fill(*[b"x"] * 15)  # items 2..16; item 16 is sampled at t0
        await trio.sleep(100.0)
        g.fill(*[b"y"] * 16)  # items 17..32 evict 2..16; item 32 is sampled at t0+100
        assert agg.statistics().dropped_oldest == 15
        await trio.sleep(100.0)
        g.release()
        await agg.flush()
        stats = agg.statistics()
    # Every item written spent at most 100 s buffered (items 17..32); item 16 was evicted
    # after 100 s. Nothing was buffered for 200 s.
    assert stats.buffered_time_p99 is not None
    assert stats.buffered_time_p99 <= 100.0


# --------------------------------------------------------------------------- regressions


async def test_flush_waits_for_the_carried_item_when_drop_oldest_evicts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Regression (found against 93e8e62): _settle took _taken_total as the number of the
    item carried over by batch_max_bytes, but drop_oldest evictions during the writer
    call had raised _taken_total, so the carried item counted as settled and flush()
    returned before it was written."""
    gate = trio.Event()
    written: list[bytes] = []

    async def writer(data: bytes) -> None:
        if data == b"aaaaaa":
            await gate.wait()
        else:
            await trio.sleep(1)
        written.append(data)

    cfg = config(
        writer, buffer_size=1, batch_max_items=10, batch_max_bytes=10, when_full="drop_oldest"
    )
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        await settle()
        agg.write_nowait(b"aaaaaa")  # handed to the receiver
        agg.write_nowait(b"bbbbbb")  # buffered; becomes the carried item of the next batch
        flushed: list[list[bytes]] = []
        first_flush_done = trio.Event()

        async def flush() -> None:
            await agg.flush()  # covers aaaaaa and bbbbbb
            flushed.append(list(written))
            first_flush_done.set()

        nursery.start_soon(flush)
        await settle()  # the writer holds [aaaaaa], bbbbbb is carried
        agg.write_nowait(b"cc")
        agg.write_nowait(b"dd")  # evicts cc
        assert agg.statistics().dropped_oldest == 1
        gate.set()
        await first_flush_done.wait()
        assert flushed == [[b"aaaaaa", b"bbbbbbdd"]]


# --------------------------------------------------------------------------- properties

DROP_POLICIES = st.sampled_from(["drop_newest", "drop_oldest"])


@st.composite
def scenarios(draw: st.DrawFn, *, policy: st.SearchStrategy[str]) -> dict[str, Any]:
    when_full = draw(policy)
    low = 1 if when_full == "drop_oldest" else 0
    return {
        "when_full": when_full,
        "buffer_size": draw(st.integers(low, 5)),
        "batch_max_items": draw(st.integers(1, 4)),
        "batch_max_bytes": draw(st.none() | st.integers(3, 20)),
        "batch_linger": draw(st.sampled_from([0.0, 0.0, 0.05])),
        "batch_join": draw(st.booleans()),
        "buffer_max_bytes": draw(st.none() | st.integers(4, 30)),
        "fail_every": draw(st.sampled_from([0, 0, 3])),
        "writer_delay": draw(st.sampled_from([None, 0.0, 0.01])),
        "producers": draw(
            st.lists(
                st.lists(
                    st.tuples(
                        st.integers(0, 6), st.sampled_from(["write", "nowait", "send", "pause"])
                    ),
                    max_size=12,
                ),
                min_size=1,
                max_size=4,
            )
        ),
    }


async def run_scenario(
    scenario: dict[str, Any],
) -> tuple[list[bytes], dict[int, list[bytes]], int, AggregatorStatistics]:
    """Run the producers; return the delivered items, what each producer wrote, how many
    writes returned 0, and the final statistics."""
    delivered: list[bytes] = []
    calls = 0

    async def writer(data: Payload) -> None:
        nonlocal calls
        calls += 1
        if scenario["writer_delay"] is not None:
            await trio.sleep(scenario["writer_delay"])
        if scenario["fail_every"] and calls % scenario["fail_every"] == 0:
            raise OSError("failing call")
        if isinstance(data, bytes):
            delivered.extend(item + b";" for item in data.split(b";")[:-1])
        else:
            delivered.extend(data)

    cfg = config(
        writer,
        when_full=scenario["when_full"],
        buffer_size=scenario["buffer_size"],
        batch_max_items=scenario["batch_max_items"],
        batch_max_bytes=scenario["batch_max_bytes"],
        batch_linger=scenario["batch_linger"],
        batch_join=scenario["batch_join"],
        buffer_max_bytes=scenario["buffer_max_bytes"],
        drain_timeout=1000.0,
    )
    sent: dict[int, list[bytes]] = {}
    zero_returns = 0
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:

        async def produce(p: int, ops: list[tuple[int, str]]) -> None:
            nonlocal zero_returns
            mine = sent.setdefault(p, [])
            async with agg.sender() as sender:
                for i, (pad, how) in enumerate(ops):
                    item = b"%d:%d%s;" % (p, i, b"." * pad)
                    mine.append(item)
                    if how == "pause":
                        await trio.sleep(0.01)
                        n = await agg.write(item)
                    elif how == "write":
                        n = await agg.write(item)
                    elif how == "nowait":
                        n = agg.write_nowait(item)
                    else:
                        await sender.send(item)  # returns None: a drop is only counted
                        n = len(item)
                    assert n in (0, len(item))
                    zero_returns += n == 0

        async with trio.open_nursery() as inner:
            for p, ops in enumerate(scenario["producers"]):
                inner.start_soon(produce, p, ops)
    return delivered, sent, zero_returns, agg.statistics()


def check_per_producer_order(delivered: list[bytes], sent: dict[int, list[bytes]]) -> None:
    assert len(set(delivered)) == len(delivered)  # exactly once
    for p, items in sent.items():
        mine = [d for d in delivered if d.startswith(b"%d:" % p)]
        positions = [items.index(d) for d in mine]  # every delivered item was written
        assert positions == sorted(positions)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(scenario=scenarios(policy=DROP_POLICIES))
async def test_property_drop_policies_account_for_every_item(
    scenario: dict[str, Any], autojump_clock: trio.testing.MockClock
) -> None:
    delivered, sent, zero_returns, stats = await run_scenario(scenario)
    total = sum(len(items) for items in sent.values())
    assert stats.items_accepted + stats.dropped_full == total
    sends = sum(how == "send" for ops in scenario["producers"] for _, how in ops)
    assert zero_returns <= stats.dropped_full <= zero_returns + sends
    assert stats.items_written == len(delivered)
    assert len(delivered) + stats.dropped - stats.dropped_full == stats.items_accepted
    assert_drop_sum(stats)
    assert stats.dropped_drain_timeout == 0
    if scenario["when_full"] == "drop_newest":
        assert stats.dropped_oldest == 0
    if not scenario["fail_every"]:
        assert stats.dropped_writer_error == 0
    assert stats.nb_processing == stats.nb_waiting == 0
    check_per_producer_order(delivered, sent)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(scenario=scenarios(policy=st.just("block")))
async def test_property_block_drops_nothing(
    scenario: dict[str, Any], autojump_clock: trio.testing.MockClock
) -> None:
    producers = [
        [(pad, "write" if how == "nowait" else how) for pad, how in ops]
        for ops in scenario["producers"]
    ]
    scenario = {**scenario, "fail_every": 0, "producers": producers}
    delivered, sent, zero_returns, stats = await run_scenario(scenario)
    assert stats.dropped == 0
    assert zero_returns == 0
    assert sorted(delivered) == sorted(item for items in sent.values() for item in items)
    assert stats.items_written == stats.items_accepted == len(delivered)
    check_per_producer_order(delivered, sent)
