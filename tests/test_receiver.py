"""`Receiver` driven directly, on a core built by hand (`make_core`).

The test puts items in through the `Intake` (so the ledger stays right), runs
`Receiver.run` in a nursery of its own, and ends it the way a run does: by closing the
send side (`Intake.close`), or by cancelling it and calling `Receiver.abandon`.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio
import trio.testing

from trio_aggregator._receiver import YIELD_EVERY
from trio_aggregator._writer_call import MAX_BACKOFF

from ._core_helpers import Core, make_core, start_put
from .conftest import Payload, Recorder, settle


class Probe:
    """An async writer that records each call with the ledger's counts at that moment.

    Each call waits for `gate` when one is set (set it again to let the next call wait).
    """

    def __init__(self) -> None:
        self.core: Core | None = None
        self.calls: list[Payload] = []
        self.seen: list[dict[str, int]] = []
        self.gate: trio.Event | None = None

    async def __call__(self, data: Payload) -> None:
        assert self.core is not None
        ledger = self.core.ledger
        self.calls.append(data)
        self.seen.append({"settled": ledger.settled, **self.core.levels()})
        if self.gate is not None:
            await self.gate.wait()


def probed(**settings: Any) -> tuple[Core, Probe]:
    probe = Probe()
    core = make_core(probe, **settings)
    probe.core = core
    return core, probe


def put_all(core: Core, *items: bytes) -> None:
    for item in items:
        assert core.intake.put_nowait(core.send, item) == len(item)


# --------------------------------------------------------------------------- batches


@pytest.mark.parametrize("join", [True, False])
async def test_batches_take_what_is_buffered_up_to_batch_max_items(join: bool) -> None:
    writer = Recorder(checkpoint=True)
    core = make_core(writer, buffer_size=10, batch_max_items=3, batch_join=join)
    items = [b"%d\n" % i for i in range(7)]
    put_all(core, *items)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.receiver().run)
        await settle()
        if join:
            assert writer.calls == [b"0\n1\n2\n", b"3\n4\n5\n", b"6\n"]
        else:
            assert writer.calls == [items[0:3], items[3:6], items[6:]]
        ledger = core.ledger
        assert (ledger.writer_calls, ledger.items_written, ledger.bytes_written) == (3, 7, 14)
        assert (ledger.taken, ledger.nb_buffered, ledger.nb_held, ledger.size_held) == (7, 0, 0, 0)
        assert ledger.settled == 7
        core.intake.close()


async def test_a_batch_is_only_what_is_there_no_waiting_without_linger() -> None:
    writer = Recorder(checkpoint=True)
    core = make_core(writer, buffer_size=10, batch_max_items=5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.receiver().run)
        await settle()
        put_all(core, b"a")
        await settle()
        put_all(core, b"b", b"c")
        await settle()
        core.intake.close()
    assert writer.calls == [b"a", b"bc"]


async def test_a_one_item_batch_is_handed_over_as_the_very_bytes_object() -> None:
    received: list[bytes] = []
    core = make_core(received.append, buffer_size=2, batch_max_items=4)
    item = b"just me"
    put_all(core, item)
    core.intake.close()
    await core.receiver().run()
    assert received == [item]
    assert received[0] is item


async def test_waiting_writes_taken_into_a_batch_are_adopted_in_order() -> None:
    core, probe = probed(buffer_size=1, batch_max_items=4)
    put_all(core, b"a")
    async with trio.open_nursery() as nursery:
        puts = []
        for item in (b"b", b"c", b"d"):  # one after the other: an order to keep
            puts.append(start_put(nursery, core, item))
            await settle()
        assert core.ledger.nb_waiting == 3
        nursery.start_soon(core.receiver().run)
        await settle()
        assert probe.calls == [b"abcd"]  # one batch, the waiting writes taken one by one
        assert [put.returned for put in puts] == [1, 1, 1]
        assert probe.seen[0]["nb_waiting"] == 0  # at hand-over, all three were counted
        core.assert_never_negative()
        ledger = core.ledger
        assert (ledger.accepted, ledger.taken, ledger.items_written) == (4, 4, 4)
        assert (ledger.nb_buffered, ledger.nb_waiting, ledger.blocked) == (0, 0, {})
        core.intake.close()


async def test_a_write_of_the_same_object_waiting_in_the_byte_line_does_not_crash_it() -> None:
    """A producer writing the same bytes object (a constant, or any one-byte write, which
    CPython shares) while an equal one is buffered and the byte bound is full: the
    receiver takes the buffered one, the waiting one goes in after, both are written."""
    received: list[bytes] = []
    core = make_core(received.append, buffer_size=10, buffer_max_bytes=1, batch_max_items=4)
    same = b"a"
    put_all(core, same)
    async with trio.open_nursery() as nursery:
        put = start_put(nursery, core, same)
        await settle()
        assert core.ledger.nb_waiting == 1  # in the byte line
        nursery.start_soon(core.receiver().run)
        await settle()
        assert put.returned == 1
        assert received == [same, same]
        core.intake.close()
    ledger = core.ledger
    assert (ledger.accepted, ledger.taken, ledger.items_written) == (2, 2, 2)


async def test_a_cancelled_write_of_a_shared_object_does_not_make_it_take_a_phantom() -> None:
    """The same bytes object, buffered and also waiting behind another write; the
    buffered one is taken, then the waiting one is cancelled. A batching receiver must
    still take exactly what the channel holds."""
    received: list[bytes] = []
    core = make_core(received.append, buffer_size=1, batch_max_items=4)
    same = b"same"
    put_all(core, same)
    async with trio.open_nursery() as nursery:
        start_put(nursery, core, b"zz")
        await settle()
        late = start_put(nursery, core, same)
        await settle()
        core.take()  # as an eviction or an abandoning receiver would
        late.scope.cancel()
        await settle()
        nursery.start_soon(core.receiver().run)
        await settle()
        assert received == [b"zz"]
        core.intake.close()
    assert (core.ledger.nb_buffered, core.ledger.accepted, core.ledger.taken) == (0, 2, 2)


# --------------------------------------------------------------------------- batch_max_bytes


async def test_batch_max_bytes_carries_the_item_that_does_not_fit_to_the_next_batch() -> None:
    received: list[bytes] = []
    core = make_core(received.append, buffer_size=10, batch_max_items=10, batch_max_bytes=10)
    put_all(core, b"aaaa", b"bbbb", b"cccc", b"dddd", b"eeee")
    core.intake.close()
    await core.receiver().run()
    assert received == [b"aaaabbbb", b"ccccdddd", b"eeee"]


async def test_an_item_larger_than_batch_max_bytes_goes_alone() -> None:
    received: list[bytes] = []
    core = make_core(received.append, buffer_size=10, batch_max_items=10, batch_max_bytes=10)
    put_all(core, b"aaaa", b"B" * 12, b"cccc", b"dddd")
    core.intake.close()
    await core.receiver().run()
    assert received == [b"aaaa", b"B" * 12, b"ccccdddd"]
    assert core.ledger.items_written == 4


async def test_a_carried_item_is_held_and_unsettled_until_its_own_batch_is_written() -> None:
    core, probe = probed(buffer_size=10, batch_max_items=10, batch_max_bytes=8)
    put_all(core, b"aaaa", b"bbbb", b"cccc")
    probe.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.receiver().run)
        await settle()
        assert probe.calls == [b"aaaabbbb"]
        seen = probe.seen[0]
        assert (seen["nb_held"], seen["size_held"], seen["taken"]) == (1, 4, 3)  # c, carried
        assert seen["settled"] == 0
        done = core.flushes.add()
        probe.gate.set()
        await settle()
        assert probe.calls == [b"aaaabbbb", b"cccc"]
        assert probe.seen[1]["settled"] == 2  # a and b written, c in this call
        assert (probe.seen[1]["nb_held"], probe.seen[1]["size_held"]) == (0, 0)
        assert done.is_set()
        assert core.ledger.settled == 3
        core.intake.close()


# --------------------------------------------------------------------------- linger


async def test_linger_waits_up_to_batch_linger_for_more_items(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writer = Recorder()
    core = make_core(writer, buffer_size=10, batch_max_items=10, batch_linger=1.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.receiver().run)
        put_all(core, b"a")
        await trio.sleep(0.5)
        put_all(core, b"b")
        await trio.sleep(2)
        assert writer.calls == [b"ab"]
        assert writer.times == [1.0]
        core.intake.close()


async def test_linger_ends_as_soon_as_the_batch_is_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writer = Recorder()
    core = make_core(writer, buffer_size=10, batch_max_items=3, batch_linger=10.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.receiver().run)
        for item in (b"a", b"b", b"c"):
            put_all(core, item)
            await trio.sleep(1)
        await settle()
        assert writer.calls == [b"abc"]
        assert writer.times == [2.0]
        core.intake.close()


@pytest.mark.parametrize("cut", ["flush", "request_sync", "close"])
async def test_linger_is_cut_short_by_a_flush_a_sync_tick_or_the_end_of_intake(
    cut: str, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[str] = []

    def writer(data: bytes) -> None:
        events.append(f"write {data.decode()} at {trio.current_time()}")

    def sync_fn() -> None:
        events.append(f"sync at {trio.current_time()}")

    core = make_core(
        writer,
        buffer_size=10,
        batch_max_items=10,
        batch_linger=5.0,
        sync_fn=sync_fn,
        sync_interval=100.0,
    )
    receiver = core.receiver()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver.run)
        await trio.sleep(1)
        put_all(core, b"a", b"b")
        await trio.sleep(1)
        assert events == []  # lingering since t=1
        if cut == "flush":
            done = core.flushes.add()
            receiver.wake()
            await settle()
            assert done.is_set()
        elif cut == "request_sync":
            receiver.request_sync()
        else:
            core.intake.close()
        await settle()
        expected = ["write ab at 2.0"] + (["sync at 2.0"] if cut == "request_sync" else [])
        assert events == expected
        core.intake.close()


# --------------------------------------------------------------------------- wake, sync_fn


async def test_wake_makes_a_receiver_waiting_for_data_check_the_flushes() -> None:
    writer = Recorder()
    core = make_core(writer, buffer_size=2)
    receiver = core.receiver()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver.run)
        await settle()
        done = core.flushes.add()  # nothing to wait for, but nobody checked yet
        await settle()
        assert not done.is_set()
        assert core.recv.statistics().tasks_waiting_receive == 1
        receiver.wake()
        await settle()
        assert done.is_set()
        assert writer.calls == []  # the wake-up is never data
        assert (core.ledger.taken, core.ledger.writer_calls) == (0, 0)
        core.intake.close()


async def test_wake_sends_nothing_when_the_receiver_is_not_waiting() -> None:
    core, probe = probed(buffer_size=2)
    core.intake.open_clone()  # a sender's clone keeps the channel open below
    receiver = core.receiver()
    receiver.wake()  # not running
    assert core.buffered == 0
    put_all(core, b"a")
    probe.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver.run)
        await settle()
        receiver.wake()  # busy in the writer
        assert core.buffered == 0
        probe.gate.set()
        await settle()
        core.send.close()  # the run's own send end; the clone keeps the channel open
        assert core.recv.statistics().tasks_waiting_receive == 1
        receiver.wake()  # waiting, but the send end it wakes with is closed: no error
        core.intake.close()
    assert probe.calls == [b"a"]


async def test_request_sync_runs_sync_fn_between_two_writer_calls() -> None:
    events: list[str] = []
    gate = trio.Event()

    async def writer(data: bytes) -> None:
        events.append(f"start {data.decode()}")
        if data == b"a":
            await gate.wait()
        events.append(f"end {data.decode()}")

    core = make_core(writer, buffer_size=10, sync_fn=lambda: events.append("sync"))
    receiver = core.receiver()
    put_all(core, b"a", b"b")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver.run)
        await settle()
        receiver.request_sync()
        assert receiver.sync_due
        await settle()
        assert events == ["start a"]
        gate.set()
        await settle()
        assert events == ["start a", "end a", "sync", "start b", "end b"]
        assert not receiver.sync_due
        assert core.ledger.sync_runs == 1
        core.intake.close()


async def test_request_sync_wakes_a_receiver_waiting_for_data() -> None:
    calls: list[str] = []

    async def sync_fn() -> None:
        await trio.lowlevel.checkpoint()
        calls.append("async sync_fn")

    core = make_core(Recorder(), buffer_size=2, sync_fn=sync_fn)
    receiver = core.receiver()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver.run)
        await settle()
        receiver.request_sync()
        await settle()
        assert calls == ["async sync_fn"]
        receiver.request_sync()
        await settle()
        assert calls == ["async sync_fn"] * 2
        assert core.ledger.sync_runs == 2
        core.intake.close()


async def test_a_sync_fn_that_raises_is_counted_and_the_receiver_goes_on() -> None:
    writer = Recorder()

    def sync_fn() -> None:
        raise ValueError("sync_fn failed")

    core = make_core(writer, buffer_size=2, sync_fn=sync_fn)
    receiver = core.receiver()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver.run)
        await settle()
        receiver.request_sync()
        await settle()
        put_all(core, b"a")
        await settle()
        core.intake.close()
    assert writer.calls == [b"a"]
    assert (core.ledger.sync_runs, core.ledger.callback_errors) == (1, 1)
    assert isinstance(core.ledger.errors.last, ValueError)


# --------------------------------------------------------------------------- the end


async def test_the_run_ends_on_end_of_channel_after_draining_everything() -> None:
    received: list[bytes] = []
    core = make_core(received.append, buffer_size=10, batch_max_items=2)
    clone = core.intake.open_clone()
    ended = trio.Event()

    async def run() -> None:
        await core.receiver().run()
        ended.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        put_all(core, b"a", b"b", b"c")
        core.intake.put_nowait(clone, b"d")
        core.send.close()  # a clone is still open: the channel has not ended
        await settle()
        assert received == [b"ab", b"cd"]
        assert not ended.is_set()
        core.intake.put_nowait(clone, b"e")
        core.intake.close_clone(clone)  # the last send end: drain, then end
        await settle()
        assert ended.is_set()
    assert received == [b"ab", b"cd", b"e"]
    assert core.ledger.items_written == core.ledger.accepted == 5


async def test_abandon_counts_in_flight_held_and_left_items() -> None:
    core, probe = probed(buffer_size=10, batch_max_items=3, batch_max_bytes=8)
    put_all(core, b"aaaa", b"bbbb", b"cccc", b"dddd", b"eeee")
    probe.gate = trio.Event()  # never set
    receiver = core.receiver()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver.run)
            await settle()
            assert probe.calls == [b"aaaabbbb"]  # in flight; cccc carried; 2 left
            done = core.flushes.add()
            scope.cancel()
    receiver.abandon("drain_timeout")
    ledger = core.ledger
    assert ledger.drops.counts["drain_timeout"] == 2 + 1 + 2
    assert ledger.drops.total == 5
    assert (ledger.nb_held, ledger.size_held, ledger.nb_buffered, ledger.size_buffered) == (
        0,
        0,
        0,
        0,
    )
    assert (ledger.taken, ledger.settled, ledger.unsettled_from) == (5, 5, 0)
    assert ledger.items_written == 0
    assert str(ledger.errors.last) == "5 item(s) were not delivered (drain_timeout)"
    assert done.is_set()


async def test_abandon_after_a_clean_end_loses_nothing_and_records_nothing() -> None:
    core = make_core(Recorder(), buffer_size=10)
    put_all(core, b"a")
    receiver = core.receiver()
    core.intake.close()
    await receiver.run()
    receiver.abandon("drain_timeout")
    assert core.ledger.drops.total == 0
    assert core.ledger.errors.last is None
    assert core.ledger.items_written == 1


async def test_bytes_go_back_to_the_budget_when_handed_to_the_writer() -> None:
    core, probe = probed(buffer_size=10, buffer_max_bytes=100, batch_max_items=2)
    assert core.budget is not None
    put_all(core, b"aaaa", b"bb", b"c")
    assert core.budget.used == 7
    probe.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.receiver().run)
        await settle()
        assert probe.calls == [b"aaaabb"]
        assert core.budget.used == 1  # the batch in the writer no longer counts
        probe.gate.set()
        await settle()
        assert core.budget.used == 0
        core.intake.close()


@pytest.mark.parametrize("carried", [False, True])
async def test_buffered_time_is_measured_when_the_sampled_item_is_handed_over(
    carried: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """One accepted item in 16 is sampled; its time runs until its own batch is handed
    to the writer, even when it was taken earlier and carried to the next batch."""
    writer = Recorder(delay=1.0)
    core = make_core(writer, buffer_size=100, batch_max_items=100, batch_max_bytes=16)
    put_all(core, *[b"x"] * 15, b"sixteenth" if carried else b"y")
    assert [number for number, _ in core.ledger.samples] == [16]
    before = core.ledger.snapshot(is_running=True, uptime=0.0, buffer_size=100, open_senders=0)
    assert before.buffered_time_p50 is None  # nothing measured yet
    await trio.sleep(2.5)
    core.intake.close()
    await core.receiver().run()
    assert len(writer.calls) == (2 if carried else 1)
    stats = core.ledger.snapshot(is_running=False, uptime=0.0, buffer_size=100, open_senders=0)
    assert stats.buffered_time_p50 == (3.5 if carried else 2.5)
    assert not core.ledger.samples


# --------------------------------------------------------------------------- writer kinds


def _writer_of_kind(kind: str, received: list[Payload], threads: set[int]) -> Any:
    def sync_writer(data: Payload) -> None:
        threads.add(threading.get_ident())
        received.append(data)

    async def async_writer(data: Payload) -> None:
        await trio.lowlevel.checkpoint()
        sync_writer(data)

    if kind == "sync returning an awaitable":
        return lambda data: async_writer(data)
    return async_writer if kind == "async" else sync_writer


@pytest.mark.parametrize("kind", ["sync", "sync returning an awaitable", "async", "thread"])
@pytest.mark.parametrize("join", [True, False])
async def test_every_kind_of_writer_gets_the_batches_in_order(kind: str, join: bool) -> None:
    received: list[Payload] = []
    threads: set[int] = set()
    core = make_core(
        _writer_of_kind(kind, received, threads),
        buffer_size=10,
        batch_max_items=2,
        batch_join=join,
        writer_thread=kind == "thread",
    )
    put_all(core, b"a", b"b", b"c")
    core.intake.close()
    await core.receiver().run()
    assert received == ([b"ab", b"c"] if join else [[b"a", b"b"], [b"c"]])
    assert (core.ledger.writer_calls, core.ledger.items_written) == (2, 3)
    in_this_thread = threads == {threading.get_ident()}
    assert in_this_thread == (kind != "thread")


async def test_a_sync_writer_still_lets_other_tasks_run_every_yield_every_calls() -> None:
    received: list[bytes] = []
    core = make_core(received.append, buffer_size=1000)
    total = 3 * YIELD_EVERY + 10
    put_all(core, *(b"%d" % i for i in range(total)))
    seen: list[int] = []

    async def other_task() -> None:
        while len(received) < total:
            seen.append(len(received))
            await trio.lowlevel.checkpoint()

    core.intake.close()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.receiver().run)
        nursery.start_soon(other_task)
    assert len(received) == total
    # The other task runs once per scheduling batch, before or after the receiver, so
    # which multiples it sees varies; it sees some, and the receiver never yields between.
    between = {n for n in seen if 0 < n < total}
    assert between
    assert between <= {YIELD_EVERY, 2 * YIELD_EVERY, 3 * YIELD_EVERY}


# --------------------------------------------------------------------------- failures


async def test_a_failed_call_is_retried_with_a_doubling_backoff_capped_at_max_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: list[float] = []
    written: list[bytes] = []

    def writer(data: bytes) -> None:
        attempts.append(trio.current_time())
        if len(attempts) <= 4:
            raise OSError(f"attempt {len(attempts)} failed")
        written.append(data)

    core = make_core(writer, buffer_size=10, writer_retries=5, writer_retry_backoff=3.0)
    put_all(core, b"a")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.receiver().run)
        await trio.sleep(1)
        put_all(core, b"b")  # accepted while a's retries wait; never written before a
        await trio.sleep(100)
        core.intake.close()
    assert attempts[:5] == [0.0, 3.0, 9.0, 9.0 + MAX_BACKOFF, 9.0 + 2 * MAX_BACKOFF]
    assert written == [b"a", b"b"]
    ledger = core.ledger
    assert (ledger.writer_calls, ledger.writer_errors, ledger.items_written) == (6, 4, 2)
    assert ledger.drops.total == 0
    assert [str(exc) for exc in ledger.errors.all] == [f"attempt {n} failed" for n in (1, 2, 3, 4)]


async def test_a_batch_whose_retries_all_fail_is_dead_lettered_and_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    dead: list[tuple[Payload, str]] = []

    def writer(data: list[bytes]) -> None:
        if data[0] == b"a":
            raise OSError("disk full")

    async def hook(data: Payload, exc: Exception) -> None:
        await trio.lowlevel.checkpoint()
        dead.append((data, str(exc)))

    core = make_core(
        writer,
        buffer_size=10,
        batch_max_items=2,
        batch_join=False,
        writer_retries=2,
        writer_retry_backoff=0.5,
        on_writer_error=hook,
    )
    put_all(core, b"a", b"b", b"c")
    core.intake.close()
    await core.receiver().run()
    assert dead == [([b"a", b"b"], "disk full")]
    ledger = core.ledger
    assert ledger.drops.counts["writer_error"] == 2
    assert (ledger.writer_calls, ledger.writer_errors, ledger.items_written) == (4, 3, 1)
    assert trio.current_time() == 1.5  # 0.5 + 1.0 of backoff
    assert ledger.settled == 3


async def test_after_its_retries_a_failed_batch_is_counted_and_the_next_goes_on() -> None:
    received: list[bytes] = []

    def writer(data: bytes) -> None:
        if data == b"bad":
            raise OSError("no")
        received.append(data)

    core = make_core(writer, buffer_size=10, writer_retries=0)  # on_writer_error="continue"
    put_all(core, b"bad", b"good")
    core.intake.close()
    await core.receiver().run()
    assert received == [b"good"]
    ledger = core.ledger
    assert ledger.drops.counts["writer_error"] == 1
    assert (ledger.writer_calls, ledger.writer_errors, ledger.items_written) == (2, 1, 1)
    assert ledger.settled == 2


@pytest.mark.parametrize("hook_kind", ["sync", "async"])
async def test_a_dead_letter_hook_that_raises_counts_a_callback_error(hook_kind: str) -> None:
    def sync_hook(data: Payload, exc: Exception) -> None:
        raise RuntimeError("hook failed")

    async def async_hook(data: Payload, exc: Exception) -> None:
        raise RuntimeError("hook failed")

    def writer(data: bytes) -> None:
        raise OSError("no")

    core = make_core(
        writer, buffer_size=10, on_writer_error=sync_hook if hook_kind == "sync" else async_hook
    )
    put_all(core, b"a", b"b")
    core.intake.close()
    await core.receiver().run()
    ledger = core.ledger
    assert (ledger.callback_errors, ledger.writer_errors) == (2, 2)
    assert ledger.drops.counts["writer_error"] == 2
    assert [type(exc) for exc in ledger.errors.all] == [OSError, RuntimeError] * 2


async def test_on_writer_error_raise_ends_the_run_and_abandon_counts_the_rest() -> None:
    def writer(data: bytes) -> None:
        raise OSError("gone")

    core = make_core(writer, buffer_size=10, on_writer_error="raise")
    put_all(core, b"a", b"b", b"c")
    receiver = core.receiver()
    with pytest.raises(OSError, match="gone"):
        await receiver.run()
    ledger = core.ledger
    assert ledger.drops.counts["writer_error"] == 1  # the failed call's item
    receiver.abandon("writer_error")
    assert ledger.drops.counts["writer_error"] == 3  # and the two left behind
    assert (ledger.taken, ledger.nb_buffered, ledger.nb_held) == (3, 0, 0)


async def test_cancelling_a_retry_backoff_leaves_the_batch_in_flight_for_abandon(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def writer(data: bytes) -> None:
        raise OSError("down")

    core = make_core(
        writer, buffer_size=10, batch_max_items=2, writer_retries=3, writer_retry_backoff=5.0
    )
    put_all(core, b"a", b"b", b"c")
    receiver = core.receiver()
    with trio.move_on_after(6.0):  # during the second backoff
        await receiver.run()
    receiver.abandon("drain_timeout")
    ledger = core.ledger
    assert (ledger.writer_calls, ledger.writer_errors) == (2, 2)
    assert ledger.drops.counts == {
        "full": 0,
        "oldest": 0,
        "drain_timeout": 3,
        "writer_error": 0,
    }
