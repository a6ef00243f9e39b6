"""Issue 9: the foreign-thread guard and the thread bridge (write_from_thread[_nowait]).

Every test that involves a real thread is bounded: waits for a thread run under
`trio.fail_after` (with ``abandon_on_cancel=True``) or use ``join(timeout)``, so a
deadlock fails the test within seconds instead of hanging.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
import trio
import trio.testing

from trio_aggregator import (
    Aggregator,
    AggregatorClosedError,
    AggregatorConfig,
    open_aggregator,
)
from trio_aggregator._lowlevel import current_trio_token
from trio_aggregator._threads import run_in_trio

from .conftest import Recorder, config, gated_aggregator, settle

T = TypeVar("T")
BOUND = 10.0
"""Seconds: any wait for a thread longer than this is a deadlock."""


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread; a hang fails the test after `BOUND` seconds."""
    with trio.fail_after(BOUND):
        return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)


def start_thread(fn: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def join(thread: threading.Thread) -> None:
    thread.join(BOUND)
    assert not thread.is_alive(), "the thread is stuck"


async def join_all(threads: list[threading.Thread]) -> None:
    """Join *threads* from Trio without blocking the event loop they may need."""

    def join_them() -> None:
        for thread in threads:
            join(thread)

    await in_thread(join_them)


def first_step(coro: Coroutine[Any, Any, object]) -> None:
    """Run *coro* up to its first suspension, here, in this thread (then drop it)."""
    try:
        coro.send(None)
    finally:
        coro.close()


FOREIGN = "is not the aggregator's Trio thread.*write_from_thread"


# ---------------------------------------------------------------------------- the guard


async def test_trio_methods_refuse_other_threads_and_the_aggregator_goes_on() -> None:
    recorder = Recorder()
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config(recorder, buffer_size=8)) as agg,
    ):
        await agg.write(b"before\n")
        sender = agg.sender()
        snapshot = agg.statistics()

        def from_a_thread() -> list[str]:
            calls: list[tuple[str, Callable[[], object]]] = [
                ("Aggregator.write_nowait", lambda: agg.write_nowait(b"x")),
                ("Aggregator.write", lambda: first_step(agg.write(b"x"))),
                ("Aggregator.flush", lambda: first_step(agg.flush())),
                ("Aggregator.stop", lambda: first_step(agg.stop())),
                ("Aggregator.aclose", lambda: first_step(agg.aclose())),
                ("Aggregator.restart", lambda: first_step(agg.restart())),
                ("Aggregator.wait_stopped", lambda: first_step(agg.wait_stopped())),
                ("Aggregator.sender", agg.sender),
                ("AggregatorSender.send_nowait", lambda: sender.send_nowait(b"x")),
                ("AggregatorSender.send", lambda: first_step(sender.send(b"x"))),
                ("AggregatorSender.close", sender.close),
                ("AggregatorSender.close", lambda: first_step(sender.aclose())),
                ("AggregatorSender.clone", sender.clone),
            ]
            messages = []
            for name, call in calls:
                with pytest.raises(RuntimeError, match=FOREIGN) as info:
                    call()
                messages.append(str(info.value).split("(")[0])
                assert str(info.value).startswith(f"{name}() was called from a thread")
            # Reading stays safe from any thread.
            assert agg.statistics().items_accepted == snapshot.items_accepted
            assert agg.is_running
            assert agg.uptime >= 0
            assert agg.nb_processing >= 0
            assert agg.last_error is None
            return messages

        messages = await in_thread(from_a_thread)
        assert messages[0] == "Aggregator.write_nowait"
        assert not sender.closed
        assert agg.is_running
        stats = agg.statistics()
        assert stats.items_accepted == snapshot.items_accepted  # nothing touched
        assert stats.nb_waiting == 0
        assert stats.open_senders == 1
        # The aggregator keeps working, and delivers everything.
        agg.write_nowait(b"a\n")
        await agg.write(b"b\n")
        await sender.send(b"c\n")
        await sender.aclose()
        await agg.flush()
    assert recorder.items() == [b"before\n", b"a\n", b"b\n", b"c\n"]
    assert agg.statistics().dropped == 0


async def test_the_guard_allows_a_never_started_aggregator_to_say_closed() -> None:
    agg = Aggregator(AggregatorConfig(writer=Recorder()))

    def from_a_thread() -> None:
        with pytest.raises(AggregatorClosedError):
            agg.write_nowait(b"x")
        with pytest.raises(AggregatorClosedError):
            agg.sender()

    await in_thread(from_a_thread)


# ---------------------------------------------------------------------------- the bridge


async def test_write_from_thread_keeps_each_threads_order_and_loses_nothing() -> None:
    recorder = Recorder(checkpoint=True)
    threads_n, per_thread = 4, 200
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config(recorder, buffer_size=4)) as agg,
    ):
        results: dict[int, list[int]] = {}

        def producer(n: int) -> None:
            results[n] = [agg.write_from_thread(b"%d %d\n" % (n, i)) for i in range(per_thread)]

        threads = [start_thread(lambda n=n: producer(n)) for n in range(threads_n)]
        await join_all(threads)
        await agg.flush()
    items = recorder.items()
    assert len(items) == threads_n * per_thread
    for n in range(threads_n):
        assert results[n] == [len(b"%d %d\n" % (n, i)) for i in range(per_thread)]
        mine = [item for item in items if item.startswith(b"%d " % n)]
        assert mine == [b"%d %d\n" % (n, i) for i in range(per_thread)]
    assert agg.statistics().dropped == 0


async def test_write_from_thread_follows_the_rules_of_write() -> None:
    recorder = Recorder()
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config(recorder, max_item_bytes=4)) as agg,
    ):

        def from_a_thread() -> None:
            data = bytearray(b"abc")
            assert agg.write_from_thread(data) == 3
            data[:] = b"zzz"  # the write was copied
            assert agg.write_from_thread(memoryview(b"de")) == 2
            assert agg.write_from_thread(b"") == 0
            assert agg.write_from_thread_nowait(b"") == 0
            with pytest.raises(TypeError, match="not str"):
                agg.write_from_thread("text")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="not int"):
                agg.write_from_thread_nowait(5)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="max_item_bytes=4"):
                agg.write_from_thread(b"12345")
            with pytest.raises(ValueError, match="max_item_bytes=4"):
                agg.write_from_thread_nowait(b"12345")

        await in_thread(from_a_thread)
        await agg.flush()
    assert recorder.calls == [b"abc", b"de"]


async def test_write_from_thread_nowait_raises_wouldblock_or_drops_when_full() -> None:
    async with gated_aggregator(buffer_size=1) as g:
        await g.busy()
        g.fill(b"b")

        def full() -> None:
            with pytest.raises(trio.WouldBlock):
                g.agg.write_from_thread_nowait(b"c")

        await in_thread(full)
        assert g.agg.statistics().items_accepted == 2
    async with gated_aggregator(buffer_size=1, when_full="drop_newest") as g:
        await g.busy()
        g.fill(b"b")
        assert await in_thread(g.agg.write_from_thread_nowait, b"c") == 0
        assert await in_thread(g.agg.write_from_thread, b"d") == 0
        assert g.agg.statistics().dropped_full == 2
        g.release()
    assert g.writer.calls == [b"a", b"b"]


async def test_a_blocked_write_from_thread_waits_for_room_then_goes_in() -> None:
    async with gated_aggregator(buffer_size=1) as g:
        await g.busy()
        g.fill(b"b")
        done: list[int] = []
        thread = start_thread(lambda: done.append(g.agg.write_from_thread(b"c")))
        with trio.fail_after(BOUND):
            while g.agg.nb_waiting != 1:
                await trio.sleep(0.001)
        assert not done
        g.release()
        await join_all([thread])
        assert done == [1]
        await g.agg.flush()
    assert g.writer.calls == [b"a", b"b", b"c"]


async def test_a_blocked_write_from_thread_fails_when_the_aggregator_stops() -> None:
    async with gated_aggregator(buffer_size=1) as g:
        await g.busy()
        g.fill(b"b")
        errors: list[BaseException] = []

        def write() -> None:
            try:
                g.agg.write_from_thread(b"c")
            except BaseException as exc:
                errors.append(exc)

        thread = start_thread(write)
        with trio.fail_after(BOUND):
            while g.agg.nb_waiting != 1:
                await trio.sleep(0.001)
        g.nursery.start_soon(g.agg.stop)  # closes intake at once, then drains (gated)
        await join_all([thread])
        assert g.agg.nb_waiting == 0
        g.release()
    assert [type(e) for e in errors] == [AggregatorClosedError]
    assert g.writer.calls == [b"a", b"b"]


async def test_from_the_trio_thread_the_bridge_says_what_to_use() -> None:
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config(Recorder())) as agg,
    ):
        with pytest.raises(RuntimeError, match=r"Trio thread.*use await write\(\)"):
            agg.write_from_thread(b"x")
        with pytest.raises(RuntimeError, match=r"Trio thread.*use write_nowait\(\)"):
            agg.write_from_thread_nowait(b"x")
        assert agg.statistics().items_accepted == 0


async def test_the_bridge_raises_closed_after_stop() -> None:
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config(Recorder())) as agg,
    ):
        await agg.stop()

        def after_stop() -> None:
            with pytest.raises(AggregatorClosedError):
                agg.write_from_thread(b"x")
            with pytest.raises(AggregatorClosedError):
                agg.write_from_thread_nowait(b"x")

        await in_thread(after_stop)
        await agg.start(nursery)  # started again: the bridge reaches the new run
        assert await in_thread(agg.write_from_thread, b"y") == 1


def test_the_bridge_raises_closed_once_the_trio_run_has_ended() -> None:
    never_started = Aggregator(AggregatorConfig(writer=Recorder()))
    with pytest.raises(AggregatorClosedError):
        never_started.write_from_thread(b"x")
    with pytest.raises(AggregatorClosedError):
        never_started.write_from_thread_nowait(b"x")

    async def main() -> Aggregator:
        with trio.fail_after(BOUND):
            async with (
                trio.open_nursery() as nursery,
                open_aggregator(nursery, AggregatorConfig(writer=Recorder())) as agg,
            ):
                await agg.write(b"x")
        return agg

    agg = trio.run(main)
    errors: list[BaseException] = []

    def from_other_thread() -> None:
        for call in (agg.write_from_thread, agg.write_from_thread_nowait):
            try:
                call(b"y")
            except BaseException as exc:
                errors.append(exc)

    # From the thread that ran Trio (no run now) and from another one.
    from_other_thread()
    join(start_thread(from_other_thread))
    assert [type(e) for e in errors] == [AggregatorClosedError] * 4
    assert all("run has ended" in str(e) for e in errors)


def test_a_call_cut_short_by_the_end_of_the_run_raises_closed() -> None:
    """The bridge's call runs in the system nursery: the end of the run cancels it."""
    errors: list[BaseException] = []
    entered = threading.Event()

    async def forever(item: bytes) -> int:
        entered.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def main() -> None:
        token = current_trio_token()

        def call() -> None:
            try:
                run_in_trio(token, forever, b"x")
            except BaseException as exc:
                errors.append(exc)

        thread_holder.append(start_thread(call))
        with trio.fail_after(BOUND):
            await trio.to_thread.run_sync(entered.wait, abandon_on_cancel=True)

    thread_holder: list[threading.Thread] = []
    trio.run(main)  # returns: its system nursery is cancelled
    join(thread_holder[0])
    assert len(errors) == 1
    assert isinstance(errors[0], AggregatorClosedError)
    assert isinstance(errors[0].__cause__, trio.Cancelled)


async def test_a_writer_in_a_worker_thread_cannot_wait_for_itself() -> None:
    outcomes: list[object] = []
    holder: list[Aggregator] = []

    def writer(data: bytes) -> None:
        if data == b"first":
            for item in (b"x", b"y"):  # x fills the buffer, y would wait for this writer
                try:
                    outcomes.append(holder[0].write_from_thread(item))
                except RuntimeError as exc:
                    outcomes.append(str(exc))

    cfg = AggregatorConfig(writer=writer, writer_thread=True, buffer_size=1)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, cfg) as agg:
        holder.append(agg)
        await agg.write(b"first")
        with trio.fail_after(BOUND):
            await agg.flush()
    assert outcomes[0] == 1
    assert isinstance(outcomes[1], str)
    assert "cannot wait from inside the writer" in outcomes[1]


async def test_write_from_thread_from_a_trio_worker_thread() -> None:
    recorder = Recorder()
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config(recorder, buffer_size=2)) as agg,
    ):

        def work() -> None:
            for i in range(20):
                agg.write_from_thread(b"%d\n" % i)

        await in_thread(work)
        await settle()
        await agg.flush()
    assert recorder.items() == [b"%d\n" % i for i in range(20)]
