from __future__ import annotations

import logging
import math

import pytest
import trio
import trio.testing

from trio_aggregator import (
    Aggregator,
    AggregatorClosedError,
    AggregatorConfig,
    AggregatorSender,
    StillRunningError,
    connect_aggregator,
    open_aggregator,
)

from .conftest import Recorder, gated_aggregator


def test_config_type_is_checked() -> None:
    with pytest.raises(TypeError, match="AggregatorConfig"):
        Aggregator({"writer": print})  # type: ignore[arg-type]
    config = AggregatorConfig(writer=print)
    assert Aggregator(config).config is config


async def test_bytes_subclass_is_copied_to_bytes() -> None:
    class Tagged(bytes):
        pass

    out: list[bytes] = []
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, AggregatorConfig(writer=out.append)) as agg:
            await agg.write(Tagged(b"x"))
    assert out == [b"x"]
    assert type(out[0]) is bytes


async def test_write_reaches_writer_in_order() -> None:
    out: list[bytes] = []
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, AggregatorConfig(writer=out.append)) as agg:
            assert agg.is_running
            for i in range(20):
                assert await agg.write(b"%d\n" % i) == len(b"%d\n" % i)
    assert out == [b"%d\n" % i for i in range(20)]
    assert not agg.is_running


async def test_async_writer_is_awaited(recorder: Recorder) -> None:
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, AggregatorConfig(writer=recorder)) as agg:
            await agg.write(b"a")
            await agg.write(bytearray(b"b"))
            await agg.write(memoryview(b"xcx")[1:2])
    assert recorder.calls == [b"a", b"b", b"c"]


async def test_sync_writer_returning_awaitable_is_awaited(recorder: Recorder) -> None:
    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=lambda data: recorder(data))
        async with open_aggregator(nursery, config) as agg:
            await agg.write(b"x")
    assert recorder.calls == [b"x"]


async def test_data_is_copied() -> None:
    out: list[bytes] = []
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, AggregatorConfig(writer=out.append)) as agg:
            buf = bytearray(b"abc")
            await agg.write(buf)
            buf[:] = b"xyz"
            await agg.write(buf)
    assert out == [b"abc", b"xyz"]
    assert all(type(x) is bytes for x in out)


async def test_empty_write_queues_nothing() -> None:
    out: list[bytes] = []
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, AggregatorConfig(writer=out.append)) as agg:
            assert await agg.write(b"") == 0
            assert agg.write_nowait(b"") == 0
            assert agg.statistics().items_accepted == 0
    assert out == []


async def test_bad_type_is_rejected_and_aggregator_stays_healthy() -> None:
    out: list[bytes] = []
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, AggregatorConfig(writer=out.append)) as agg:
            with pytest.raises(TypeError, match="str"):
                await agg.write("text")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="int"):
                agg.write_nowait(5)  # type: ignore[arg-type]
            assert agg.is_running
            await agg.write(b"ok")
    assert out == [b"ok"]


async def test_write_when_not_running() -> None:
    agg = Aggregator(AggregatorConfig(writer=print))
    with pytest.raises(AggregatorClosedError):
        await agg.write(b"x")
    with pytest.raises(AggregatorClosedError):
        agg.write_nowait(b"x")
    with pytest.raises(AggregatorClosedError):
        agg.sender()
    with pytest.raises(AggregatorClosedError):
        await agg.flush()
    assert isinstance(AggregatorClosedError(), trio.ClosedResourceError)


async def test_lifecycle_start_stop_restart_close() -> None:
    out: list[bytes] = []
    agg = Aggregator(AggregatorConfig(writer=out.append))
    with pytest.raises(RuntimeError, match="never started"):
        await agg.restart()
    async with trio.open_nursery() as nursery:
        await agg.start(nursery)
        with pytest.raises(StillRunningError):
            await agg.start(nursery)
        await agg.write(b"1")
        await agg.stop()
        assert not agg.is_running
        await agg.stop()  # idempotent
        with pytest.raises(AggregatorClosedError):
            await agg.write(b"lost?")
        await agg.start(nursery)
        await agg.write(b"2")
        await agg.restart()
        assert agg.is_running
        await agg.write(b"3")
        await agg.aclose()
        await agg.aclose()  # idempotent
        with pytest.raises(AggregatorClosedError):
            await agg.start(nursery)
    assert out == [b"1", b"2", b"3"]


async def test_restart_in_other_nursery() -> None:
    out: list[bytes] = []
    agg = Aggregator(AggregatorConfig(writer=out.append))
    async with trio.open_nursery() as first:
        await agg.start(first)
        await agg.write(b"a")
        async with trio.open_nursery() as second:
            await agg.restart(second)
            await agg.write(b"b")
            await agg.aclose()
    assert out == [b"a", b"b"]


async def test_async_with_aggregator_closes_it() -> None:
    out: list[bytes] = []
    async with trio.open_nursery() as nursery:
        async with await connect_aggregator(nursery, AggregatorConfig(writer=out.append)) as agg:
            await agg.write(b"x")
        assert not agg.is_running
        with pytest.raises(AggregatorClosedError):
            await agg.start(nursery)
    assert out == [b"x"]


async def test_uptime_and_wait_stopped(autojump_clock: trio.testing.MockClock) -> None:
    agg = Aggregator(AggregatorConfig(writer=print))
    assert agg.uptime == 0.0
    await agg.wait_stopped()  # not running: returns at once
    async with trio.open_nursery() as nursery:
        await agg.start(nursery)
        await trio.sleep(2.5)
        assert agg.uptime == pytest.approx(2.5)
        assert agg.statistics().uptime == pytest.approx(2.5)

        async def stop_later() -> None:
            await trio.sleep(1)
            await agg.stop()

        nursery.start_soon(stop_later)
        await agg.wait_stopped()
        assert trio.current_time() == pytest.approx(3.5)
        assert agg.uptime == 0.0
        await agg.restart()
        assert agg.uptime == 0.0
        await trio.sleep(1)
        assert agg.uptime == pytest.approx(1.0)
        await agg.aclose()


async def test_writer_never_runs_concurrently(recorder: Recorder) -> None:
    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=recorder, buffer_size=8)
        async with open_aggregator(nursery, config) as agg:
            async with trio.open_nursery() as producers:
                for p in range(20):
                    producers.start_soon(_produce, agg, p, 30)
    assert recorder.max_running == 1
    assert len(recorder.calls) == 600


async def _produce(agg: Aggregator, producer: int, count: int) -> None:
    async with agg.sender() as sender:
        for i in range(count):
            await sender.send(b"%d:%d\n" % (producer, i))


async def test_senders_are_send_channels() -> None:
    out: list[bytes] = []
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, AggregatorConfig(writer=out.append)) as agg:
            sender = agg.sender()
            assert isinstance(sender, trio.abc.SendChannel)
            assert isinstance(sender, AggregatorSender)
            with pytest.warns(DeprecationWarning, match="statistics"):
                assert isinstance(sender.channel, trio.MemorySendChannel)
            assert isinstance(sender.statistics(), trio.MemoryChannelStatistics)
            other = sender.clone()
            assert agg.statistics().open_senders == 2
            await sender.send(b"a")
            await other.send(b"b")
            await agg.flush()
            other.send_nowait(b"c")
            await other.aclose()
            assert other.closed
            other.close()  # idempotent
            assert agg.statistics().open_senders == 1
            with pytest.raises(trio.ClosedResourceError):
                await other.send(b"x")
            with pytest.raises(trio.ClosedResourceError):
                other.clone()
            with pytest.raises(TypeError):
                await sender.send("str")  # type: ignore[arg-type]
            kept = agg.sender()
            async with sender:
                await sender.send(b"d")
            with pytest.raises(trio.ClosedResourceError):
                await sender.send(b"closed")
        with pytest.raises(AggregatorClosedError):
            await kept.send(b"late")
    assert out == [b"a", b"b", b"c", b"d"]


async def test_senders_of_an_old_run_stay_closed() -> None:
    agg = Aggregator(AggregatorConfig(writer=print))
    async with trio.open_nursery() as nursery:
        await agg.start(nursery)
        old = agg.sender()
        await agg.restart()
        with pytest.raises(AggregatorClosedError):
            old.send_nowait(b"x")
        with pytest.raises(AggregatorClosedError):
            old.clone()
        old.close()
        assert agg.statistics().open_senders == 0
        await agg.aclose()


async def test_write_nowait_raises_wouldblock_when_full() -> None:
    async with gated_aggregator(buffer_size=2) as g:
        agg = g.agg
        await g.busy(b"0")  # taken by the receiver, stuck in the writer
        g.fill(b"1", b"2")
        with pytest.raises(trio.WouldBlock):
            agg.write_nowait(b"3")
        sender = agg.sender()
        with pytest.raises(trio.WouldBlock):
            sender.send_nowait(b"3")
        assert agg.nb_processing == 2
        g.release()
    assert g.writer.calls == [b"0", b"1", b"2"]


async def test_metrics_exact_under_backpressure() -> None:
    async with gated_aggregator(buffer_size=3) as g:
        agg = g.agg
        for i in range(8):
            g.nursery.start_soon(agg.write, b"x" * (i + 1))
            await trio.testing.wait_all_tasks_blocked()
        # 1 in the writer, 3 buffered, 4 blocked.
        assert agg.nb_processing == 3
        assert agg.size_processing == 2 + 3 + 4
        assert agg.nb_waiting == 4
        assert agg.size_waiting == 5 + 6 + 7 + 8
        stats = agg.statistics()
        assert (stats.nb_processing, stats.nb_waiting) == (3, 4)
        assert stats.peak_nb_processing == 3
        assert stats.buffer_size == 3
        g.release()
        await agg.flush()
        assert (agg.nb_processing, agg.size_processing) == (0, 0)
        assert (agg.nb_waiting, agg.size_waiting) == (0, 0)
    assert g.writer.calls == [b"x" * (i + 1) for i in range(8)]


async def test_rendezvous_buffer(recorder: Recorder) -> None:
    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=recorder, buffer_size=0)
        async with open_aggregator(nursery, config) as agg:
            await trio.testing.wait_all_tasks_blocked()
            assert agg.write_nowait(b"a") == 1  # the receiver is waiting: handed over
            with pytest.raises(trio.WouldBlock):
                agg.write_nowait(b"b")
            async with trio.open_nursery() as producers:
                for i in range(5):
                    producers.start_soon(agg.write, b"%d" % i)
                    await trio.testing.wait_all_tasks_blocked()
                    assert agg.nb_processing == 0
            await agg.flush()
    assert recorder.calls == [b"a", b"0", b"1", b"2", b"3", b"4"]


async def test_unbounded_buffer_never_blocks() -> None:
    out: list[bytes] = []
    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=out.append, buffer_size=math.inf)
        async with open_aggregator(nursery, config) as agg:
            await trio.testing.wait_all_tasks_blocked()  # the receiver waits for data
            for i in range(1000):
                agg.write_nowait(b"%d" % i)
            # The first one went to the waiting receiver task, which has not run yet:
            # accepted and not handed to the writer, like the 999 buffered after it.
            assert agg.nb_processing == 1000
    assert len(out) == 1000


async def test_blocked_write_cancelled_is_not_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with gated_aggregator(buffer_size=1) as g:
        agg = g.agg
        await g.busy()
        await agg.write(b"b")
        with trio.move_on_after(1) as scope:
            await agg.write(b"never")
        assert scope.cancelled_caught
        assert agg.nb_waiting == 0
        assert agg.size_waiting == 0
        g.release()
        await agg.write(b"c")
    assert g.writer.calls == [b"a", b"b", b"c"]
    assert agg.statistics().items_accepted == 3


async def test_write_is_a_checkpoint() -> None:
    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=print, buffer_size=10)
        async with open_aggregator(nursery, config) as agg:
            with trio.CancelScope() as scope:
                scope.cancel()
                with pytest.raises(trio.Cancelled):
                    await agg.write(b"x")
            assert agg.statistics().items_accepted == 0
            with trio.testing.assert_checkpoints():
                await agg.write(b"y\n")
            with trio.testing.assert_checkpoints():
                await agg.flush()
            with trio.testing.assert_checkpoints():
                await agg.flush()


async def test_flush_waits_for_writer() -> None:
    async with gated_aggregator(buffer_size=4) as g:
        agg = g.agg
        for i in range(3):
            await agg.write(b"%d" % i)
        flushed = False

        async def flush() -> None:
            nonlocal flushed
            await agg.flush()
            flushed = True

        g.nursery.start_soon(flush)
        await trio.testing.wait_all_tasks_blocked()
        assert not flushed
        g.release()
        await trio.testing.wait_all_tasks_blocked()
        assert flushed
        assert g.writer.calls == [b"0", b"1", b"2"]


async def test_flush_includes_blocked_writes_and_survives_their_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with gated_aggregator(buffer_size=1) as g:
        agg, nursery = g.agg, g.nursery
        await g.busy(b"in writer")
        await agg.write(b"buffered")
        blocked = trio.CancelScope()

        async def blocked_write(data: bytes, scope: trio.CancelScope | None) -> None:
            if scope is None:
                await agg.write(data)
                return
            with scope:
                await agg.write(data)

        nursery.start_soon(blocked_write, b"blocked-1", None)
        nursery.start_soon(blocked_write, b"blocked-2", blocked)
        await trio.testing.wait_all_tasks_blocked()
        assert agg.nb_waiting == 2
        done = trio.Event()

        async def flush() -> None:
            await agg.flush()
            done.set()

        nursery.start_soon(flush)
        await trio.testing.wait_all_tasks_blocked()
        blocked.cancel()  # the last blocked write gives up: flush must not hang on it
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        g.release()
        with trio.fail_after(5):
            await done.wait()
        assert g.writer.calls == [b"in writer", b"buffered", b"blocked-1"]


async def test_flush_when_idle_returns_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, AggregatorConfig(writer=print)) as agg:
            with trio.fail_after(1):
                await agg.flush()


async def test_stop_delivers_everything_buffered(recorder: Recorder) -> None:
    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=recorder, buffer_size=100)
        agg = await connect_aggregator(nursery, config)
        for i in range(100):
            agg.write_nowait(b"%d," % i)
        await agg.stop()
        assert recorder.calls == [b"%d," % i for i in range(100)]
        assert agg.statistics().dropped == 0
        await agg.aclose()


async def test_stop_fails_blocked_writes_loudly() -> None:
    results: list[object] = []
    async with gated_aggregator(buffer_size=1) as g:
        agg, nursery = g.agg, g.nursery

        async def blocked_write() -> None:
            try:
                results.append(await agg.write(b"blocked"))
            except AggregatorClosedError as exc:
                results.append(exc)

        await g.busy()
        await agg.write(b"b")
        nursery.start_soon(blocked_write)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(agg.stop)
        await trio.testing.wait_all_tasks_blocked()
        g.release()
        await agg.wait_stopped()
    assert len(results) == 1
    assert isinstance(results[0], AggregatorClosedError)
    assert g.writer.calls == [b"a", b"b"]


async def test_nursery_cancellation_drains_buffer(recorder: Recorder) -> None:
    with trio.CancelScope() as outer:
        async with trio.open_nursery() as nursery:
            config = AggregatorConfig(writer=recorder, buffer_size=50)
            async with open_aggregator(nursery, config) as agg:
                for i in range(50):
                    agg.write_nowait(b"%d" % i)
                outer.cancel()
                await trio.sleep_forever()
    assert outer.cancelled_caught
    assert recorder.calls == [b"%d" % i for i in range(50)]
    assert agg.statistics().dropped == 0


async def test_nursery_cancellation_from_outside_while_body_runs(recorder: Recorder) -> None:
    async with trio.open_nursery() as outer:
        agg = await connect_aggregator(outer, AggregatorConfig(writer=recorder, buffer_size=10))
        for i in range(10):
            agg.write_nowait(b"%d" % i)
        outer.cancel_scope.cancel()
    assert recorder.calls == [b"%d" % i for i in range(10)]
    assert not agg.is_running


async def test_drain_timeout_counts_what_is_lost(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    written: list[bytes] = []

    async def slow(data: bytes) -> None:
        await trio.sleep(1)
        written.append(data)

    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=slow, buffer_size=10, drain_timeout=2.5)
        agg = await connect_aggregator(nursery, config)
        for i in range(6):
            agg.write_nowait(b"%d" % i)
        start = trio.current_time()
        await agg.stop()
        assert trio.current_time() - start == pytest.approx(2.5)
    # 0 was taken at once; 0, 1 written by t=2; 2 cut off at t=2.5; 3, 4, 5 buffered.
    assert written == [b"0", b"1"]
    stats = agg.statistics()
    assert stats.dropped_drain_timeout == 4
    assert stats.dropped == 4
    assert "4 item(s) were not delivered" in str(agg.last_error)
    assert any("dropped 4 item(s)" in r.getMessage() for r in caplog.records)


async def test_writer_errors_are_recorded_and_processing_goes_on(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    recorder.fail_on = lambda data: data == b"bad"
    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=recorder, buffer_size=4, max_errors=2)
        async with open_aggregator(nursery, config) as agg:
            assert agg.last_error is None
            assert agg.errors == ()
            for data in (b"a", b"bad", b"b", b"bad", b"c", b"bad"):
                await agg.write(data)
            await agg.flush()
            stats = agg.statistics()
            assert stats.writer_errors == 3
            assert stats.writer_calls == 6
            assert stats.items_written == 3
            assert stats.dropped_writer_error == 3
            assert len(agg.errors) == 2
            assert isinstance(agg.last_error, OSError)
            assert agg.errors[-1] is agg.last_error
    assert recorder.calls == [b"a", b"b", b"c"]
    errors = [
        r for r in caplog.records if r.name == "trio_aggregator" and r.levelno >= logging.ERROR
    ]
    # Rate-limited: the first error at once, with its traceback; the other two at stop.
    assert [r.getMessage() for r in errors] == [
        "writer raised OSError(\"cannot write b'bad'\")",
        "writer raised 2 more error(s) since the last report, the last:"
        " OSError(\"cannot write b'bad'\")",
    ]
    assert errors[0].exc_info is not None
    assert errors[1].exc_info is None


async def test_base_exceptions_from_writer_propagate() -> None:
    def writer(data: bytes) -> None:
        raise KeyboardInterrupt

    with pytest.RaisesGroup(KeyboardInterrupt, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            async with open_aggregator(nursery, AggregatorConfig(writer=writer)) as agg:
                await agg.write(b"x")
                await trio.sleep_forever()


async def test_sync_callback_runs_between_writer_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[str] = []
    in_writer = False

    async def writer(data: bytes) -> None:
        nonlocal in_writer
        in_writer = True
        await trio.sleep(0.3)
        events.append("w")
        in_writer = False

    def sync_fn() -> None:
        assert not in_writer
        events.append("sync")

    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(
            writer=writer, buffer_size=100, sync_interval=1.0, sync_fn=sync_fn
        )
        async with open_aggregator(nursery, config) as agg:
            for _ in range(20):
                agg.write_nowait(b"x")
            await trio.sleep(9.5)
            stats = agg.statistics()
    assert events.count("w") == 20
    # Ticks at 1..9 all ran, between writer calls (the writes finished at 6.0).
    assert events.count("sync") == 9
    assert stats.sync_runs == 9


async def test_sync_callback_when_idle_and_async_sync_fn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticks: list[float] = []

    async def sync_fn() -> None:
        await trio.sleep(0)
        ticks.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=print, sync_interval=1.0, sync_fn=sync_fn)
        async with open_aggregator(nursery, config):
            await trio.sleep(3.5)
    assert ticks == [1.0, 2.0, 3.0]


async def test_sync_style_callback_returning_awaitable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ran: list[float] = []

    async def tick() -> None:
        ran.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=print, sync_interval=1.0, sync_fn=lambda: tick())
        async with open_aggregator(nursery, config):
            await trio.sleep(2.5)
    assert ran == [1.0, 2.0]


async def test_callback_errors_recorded(autojump_clock: trio.testing.MockClock) -> None:
    def boom() -> None:
        raise ValueError("boom")

    async def aboom() -> None:
        await trio.sleep(0)
        raise ValueError("aboom")

    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(
            writer=print, sync_interval=1.0, sync_fn=boom, async_interval=1.0, async_fn=aboom
        )
        async with open_aggregator(nursery, config) as agg:
            await trio.sleep(2.5)
            assert agg.statistics().callback_errors == 4
            assert agg.is_running
    assert {str(e) for e in agg.errors} == {"boom", "aboom"}


async def test_async_callback_skips_when_limiter_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    running = 0
    peak = 0

    async def heartbeat() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await trio.sleep(2.5)
        finally:
            running -= 1

    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=print, async_interval=1.0, async_fn=heartbeat, async_max=2)
        async with open_aggregator(nursery, config) as agg:
            await trio.sleep(10.5)
            stats = agg.statistics()
        # ticks 1..10: runs start at 1, 2, then 4, 5 (3 skipped), 7, 8 (6 skipped), 10 (9 skipped)
    assert peak == 2
    assert stats.async_runs == 7
    assert stats.async_skipped == 3
    assert running == 0  # stop cancelled the run in flight and waited for it


async def test_async_callback_unlimited(autojump_clock: trio.testing.MockClock) -> None:
    running = 0
    peak = 0

    def sync_style() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)

    async def slow() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(100)

    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=print, async_interval=1.0, async_fn=slow, async_max=-1)
        async with open_aggregator(nursery, config) as agg:
            await trio.sleep(5.5)
            assert agg.statistics().async_skipped == 0
    assert peak == 5
    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=print, async_interval=1.0, async_fn=sync_style)
        async with open_aggregator(nursery, config):
            await trio.sleep(3.5)
    assert running == 5 + 3


async def test_timer_skips_missed_ticks(autojump_clock: trio.testing.MockClock) -> None:
    ticks: list[float] = []

    def sync_fn() -> None:
        ticks.append(trio.current_time())

    def blocking_writer(data: bytes) -> None:
        autojump_clock.jump(3.5)  # the event loop is "busy" for 3.5 s

    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=blocking_writer, sync_interval=1.0, sync_fn=sync_fn)
        async with open_aggregator(nursery, config) as agg:
            await trio.sleep(0.5)
            await agg.write(b"x")
            await agg.flush()
            await trio.sleep(1.9)
    # busy from 0.5 to 4.0: the ticks of 1, 2, 3 collapse into one, then 5.
    assert ticks[0] == pytest.approx(4.0)
    assert ticks[1:] == [pytest.approx(5.0)]


async def test_many_producers_keep_their_order() -> None:
    out: list[bytes] = []
    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=out.append, buffer_size=3)
        async with open_aggregator(nursery, config) as agg:
            async with trio.open_nursery() as producers:
                for p in range(10):
                    producers.start_soon(_produce, agg, p, 50)
    by_producer: dict[bytes, list[int]] = {}
    for item in out:
        producer, _, index = item.rstrip(b"\n").partition(b":")
        by_producer.setdefault(producer, []).append(int(index))
    assert len(by_producer) == 10
    assert all(seq == list(range(50)) for seq in by_producer.values())


async def test_statistics_fields() -> None:
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, AggregatorConfig(writer=print)) as agg:
            stats = agg.statistics()
    assert stats.is_running
    for name in (
        "items_written",
        "bytes_written",
        "writer_calls",
        "writer_errors",
        "callback_errors",
        "async_skipped",
        "dropped",
        "open_senders",
        "nb_waiting",
        "nb_processing",
        "nb_held",
        "size_waiting",
        "size_processing",
    ):
        assert getattr(stats, name) == 0, name
    assert stats.buffered_time_p50 is None
    with pytest.raises(AttributeError):
        stats.dropped = 3  # type: ignore[misc]


async def test_waiting_from_inside_the_writer_fails_loudly() -> None:
    seen: list[BaseException] = []
    agg: Aggregator | None = None

    async def writer(data: bytes) -> None:
        assert agg is not None
        if data != b"first":
            return
        for call in (agg.flush, agg.stop):
            try:
                await call()
            except RuntimeError as exc:
                seen.append(exc)
        agg.write_nowait(b"room")  # a write that does not wait is fine
        try:
            await agg.write(b"no room")  # the buffer (1) is full: it would wait forever
        except RuntimeError as exc:
            seen.append(exc)

    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, AggregatorConfig(writer=writer)) as agg:
            await agg.write(b"first")
            await agg.flush()
            assert agg.is_running
    assert len(seen) == 3
    assert all("receiver task would wait for itself" in str(e) for e in seen)


async def test_statistics_from_another_thread() -> None:
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, AggregatorConfig(writer=print)) as agg:
            await agg.write(b"x\n")
            await agg.flush()
            stats = await trio.to_thread.run_sync(agg.statistics)
    assert stats.is_running
    assert stats.items_written == 1
    assert stats.uptime >= 0.0


async def test_run_as_a_service() -> None:
    out: list[bytes] = []
    agg = Aggregator(AggregatorConfig(writer=out.append, buffer_size=10))
    async with trio.open_nursery() as nursery:
        await nursery.start(agg.run)
        assert agg.is_running
        for i in range(10):
            agg.write_nowait(b"%d" % i)
        await agg.stop()  # run() returns, and the nursery can close
    assert out == [b"%d" % i for i in range(10)]
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(agg.run)
            agg.write_nowait(b"last")
            scope.cancel()  # a cancelled service still drains
    assert out[-1] == b"last"
    assert not agg.is_running


async def test_a_sender_waits_in_its_own_clone_of_the_channel(recorder: Recorder) -> None:
    """Backpressure is Trio's: a blocked send waits in the memory channel, on the clone."""
    recorder.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=recorder, buffer_size=1)
        async with open_aggregator(nursery, config) as agg:
            await agg.write(b"in the writer\n")
            await agg.write(b"buffered\n")
            sender = agg.sender()
            assert sender.statistics().tasks_waiting_send == 0
            nursery.start_soon(sender.send, b"blocked\n")
            await trio.testing.wait_all_tasks_blocked()
            stats = sender.statistics()
            assert (stats.tasks_waiting_send, stats.current_buffer_used) == (1, 1)
            assert stats.open_send_channels == 2  # the aggregator's own end and this clone
            assert agg.nb_waiting == 1
            with trio.CancelScope() as cancelled:
                cancelled.cancel()
                with pytest.raises(trio.Cancelled):
                    await sender.send(b"never\n")
            recorder.gate.set()
            await agg.flush()
            assert sender.statistics().tasks_waiting_send == 0
            await sender.aclose()
            assert agg.statistics().open_senders == 0
    assert recorder.calls == [b"in the writer\n", b"buffered\n", b"blocked\n"]


async def test_closing_a_sender_fails_only_its_own_blocked_sends(recorder: Recorder) -> None:
    recorder.gate = trio.Event()
    outcomes: dict[str, object] = {}

    async def send(name: str, sender: AggregatorSender) -> None:
        try:
            await sender.send(name.encode())
            outcomes[name] = "sent"
        except trio.ClosedResourceError as exc:
            outcomes[name] = exc

    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=recorder, buffer_size=1)
        async with open_aggregator(nursery, config) as agg:
            await agg.write(b"w")
            await agg.write(b"b")
            first, second = agg.sender(), agg.sender()
            nursery.start_soon(send, "first", first)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(send, "second", second)
            await trio.testing.wait_all_tasks_blocked()
            assert agg.nb_waiting == 2
            first.close()
            await trio.testing.wait_all_tasks_blocked()
            assert agg.nb_waiting == 1
            assert agg.is_running
            recorder.gate.set()
            await agg.flush()
            second.close()
    assert outcomes["second"] == "sent"
    assert type(outcomes["first"]) is trio.ClosedResourceError
    assert recorder.calls == [b"w", b"b", b"second"]


@pytest.mark.parametrize("heartbeat", [b"\n", b"HEARTBEAT\n"], ids=["one byte", "constant"])
async def test_the_same_bytes_object_from_many_writers_under_a_byte_budget(
    heartbeat: bytes,
) -> None:
    """Regression: waiting writes were known by the id of their bytes, and a shared
    object (a constant, any one-byte write) made the receiver take a phantom and die."""
    out: list[bytes] = []
    config = AggregatorConfig(
        writer=out.append, buffer_size=100, buffer_max_bytes=len(heartbeat), batch_max_items=8
    )
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, config) as agg:

            async def beat() -> None:
                for _ in range(3):
                    await agg.write(heartbeat)

            async with trio.open_nursery() as producers:
                producers.start_soon(beat)
                producers.start_soon(beat)
            await agg.flush()
            stats = agg.statistics()
            assert (stats.nb_processing, stats.nb_waiting) == (0, 0)
    assert b"".join(out) == heartbeat * 6
    assert (stats.items_accepted, stats.items_written, stats.dropped) == (6, 6, 0)


@pytest.mark.parametrize("heartbeat", [b"\n", b"HEARTBEAT\n"], ids=["one byte", "constant"])
async def test_a_bounded_wait_on_a_shared_object_that_gives_up_leaves_no_phantom(
    heartbeat: bytes, autojump_clock: trio.testing.MockClock
) -> None:
    """A write that gives up is never counted, even when others wait with the same bytes."""
    async with gated_aggregator(buffer_size=0) as g:
        agg = g.agg
        await g.busy(heartbeat)  # in the writer
        g.nursery.start_soon(agg.write, heartbeat)  # waits: rendezvous buffer
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(1.0) as bounded:
            await agg.write(heartbeat)
        assert bounded.cancelled_caught
        g.release()
        with trio.fail_after(60):
            await agg.flush()
        stats = agg.statistics()
        assert (stats.items_accepted, stats.items_written) == (2, 2)
        assert (stats.nb_processing, stats.nb_waiting) == (0, 0)


async def test_a_start_that_fails_leaves_the_aggregator_stopped() -> None:
    """start() in a closed nursery raises and changes nothing: no "running" aggregator
    without a receiver, whose writes would go nowhere."""
    out: list[bytes] = []
    agg = Aggregator(AggregatorConfig(writer=out.append, buffer_size=10))
    async with trio.open_nursery() as closed:
        pass
    with pytest.raises(RuntimeError):
        await agg.start(closed)
    assert not agg.is_running
    with pytest.raises(AggregatorClosedError):
        await agg.write(b"lost?\n")
    with trio.fail_after(1):
        await agg.aclose()
    async with trio.open_nursery() as nursery:
        agg = Aggregator(AggregatorConfig(writer=out.append, buffer_size=10))
        await nursery.start(agg.run)
        await agg.write(b"kept\n")
        await agg.stop()
        with pytest.raises(RuntimeError):
            await agg.restart()  # the nursery of agg.run is closed by now
        assert not agg.is_running
        with pytest.raises(AggregatorClosedError):
            agg.write_nowait(b"lost?\n")
    assert out == [b"kept\n"]
    assert agg.statistics().dropped == 0
