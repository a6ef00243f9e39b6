"""`Intake` driven directly: the admission rules, with no receiver running.

Each test builds a run's core by hand (`make_core`): nothing takes from the memory
channel unless the test does, so the channel fills, and every count can be checked at
each step.
"""

from __future__ import annotations

import contextlib
from collections import deque

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_aggregator import AggregatorClosedError

from ._core_helpers import PendingPut, make_core, start_put
from .conftest import settle

# --------------------------------------------------------------------------- accepting


async def test_put_nowait_accepts_and_counts_items_and_bytes() -> None:
    core = make_core(buffer_size=3)
    assert core.intake.put_nowait(core.send, b"a") == 1
    assert core.intake.put_nowait(core.send, b"bb") == 2
    assert await core.intake.put(core.send, b"ccc") == 3
    assert core.levels() == {
        "accepted": 3,
        "taken": 0,
        "nb_buffered": 3,
        "size_buffered": 6,
        "nb_held": 0,
        "size_held": 0,
        "nb_waiting": 0,
        "size_waiting": 0,
    }
    assert core.buffered == 3
    assert [core.take(), core.take(), core.take()] == [b"a", b"bb", b"ccc"]
    core.assert_balanced()
    assert core.ledger.taken == 3
    assert core.ledger.size_buffered == 0


@pytest.mark.parametrize("settings", [{}, {"max_item_bytes": 100}], ids=["plain", "checked"])
async def test_put_copies_a_bytearray_or_memoryview_before_it_can_change(
    settings: dict[str, int],
) -> None:
    core = make_core(buffer_size=3, **settings)
    data = bytearray(b"abc")
    assert core.intake.put_nowait(core.send, data) == 3
    assert await core.intake.put(core.send, memoryview(data)[1:]) == 2
    data[:] = b"xyz"
    assert core.take() == b"abc"
    assert core.take() == b"bc"


async def test_empty_write_returns_zero_counts_nothing_and_never_waits() -> None:
    core = make_core(buffer_size=1)
    core.intake.put_nowait(core.send, b"a")  # full
    before = core.levels()
    assert core.intake.put_nowait(core.send, b"") == 0
    assert await core.intake.put(core.send, bytearray()) == 0
    assert core.levels() == before
    assert core.buffered == 1


async def test_put_with_room_is_a_schedule_point() -> None:
    core = make_core(buffer_size=2)
    ran: list[str] = []

    async def other_task() -> None:
        ran.append("other task")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        # Trio may run the other task before or after this one in the batch after the
        # first put's checkpoint; after the second put's checkpoint it has run for sure.
        await core.intake.put(core.send, b"a")
        await core.intake.put(core.send, b"b")
        assert ran == ["other task"]


async def test_put_in_a_cancelled_scope_raises_cancelled_and_counts_nothing() -> None:
    core = make_core(buffer_size=2)
    with trio.CancelScope() as scope:
        scope.cancel()
        await core.intake.put(core.send, b"a")
    assert scope.cancelled_caught
    assert core.ledger.accepted == 0
    assert core.buffered == 0


# --------------------------------------------------------------------------- when_full


@pytest.mark.parametrize("when_full", ["block", "raise"])
async def test_put_nowait_raises_wouldblock_when_full_and_counts_nothing(when_full: str) -> None:
    core = make_core(buffer_size=2, when_full=when_full)
    core.intake.put_nowait(core.send, b"a")
    core.intake.put_nowait(core.send, b"b")
    before = core.levels()
    with pytest.raises(trio.WouldBlock):
        core.intake.put_nowait(core.send, b"c")
    assert core.levels() == before
    assert core.ledger.drops.total == 0
    assert core.buffered == 2


async def test_put_under_raise_raises_wouldblock_instead_of_waiting() -> None:
    core = make_core(buffer_size=1, when_full="raise")
    core.intake.put_nowait(core.send, b"a")
    with pytest.raises(trio.WouldBlock):
        await core.intake.put(core.send, b"b")
    assert core.ledger.nb_waiting == 0
    assert core.waiting_senders == 0
    assert core.ledger.accepted == 1


async def test_drop_newest_discards_the_new_item_and_counts_it_full() -> None:
    core = make_core(buffer_size=2, when_full="drop_newest")
    core.intake.put_nowait(core.send, b"a")
    core.intake.put_nowait(core.send, b"b")
    assert core.intake.put_nowait(core.send, b"c") == 0
    assert await core.intake.put(core.send, b"dd") == 0
    assert core.ledger.drops.counts["full"] == 2
    assert core.ledger.drops.total == 2
    assert core.ledger.accepted == 2
    assert core.ledger.size_buffered == 2
    assert [core.take(), core.take()] == [b"a", b"b"]
    with pytest.raises(trio.WouldBlock):
        core.take()


async def test_drop_oldest_evicts_the_oldest_and_counts_it_oldest() -> None:
    core = make_core(buffer_size=2, when_full="drop_oldest")
    core.intake.put_nowait(core.send, b"a")
    core.intake.put_nowait(core.send, b"bb")
    assert core.intake.put_nowait(core.send, b"ccc") == 3  # evicts a
    assert await core.intake.put(core.send, b"dddd") == 4  # evicts bb
    ledger = core.ledger
    assert ledger.drops.counts == {"full": 0, "oldest": 2, "drain_timeout": 0, "writer_error": 0}
    assert (ledger.accepted, ledger.taken, ledger.nb_buffered, ledger.size_buffered) == (4, 2, 2, 7)
    assert ledger.settled == 2  # evicted items are settled
    assert [core.take(), core.take()] == [b"ccc", b"dddd"]
    core.assert_balanced()


async def test_an_eviction_finishes_the_flushes_that_waited_for_the_evicted_item() -> None:
    core = make_core(buffer_size=2, when_full="drop_oldest")
    core.intake.put_nowait(core.send, b"a")
    first = core.flushes.add()  # waits for a
    core.intake.put_nowait(core.send, b"b")
    second = core.flushes.add()  # waits for a and b
    core.intake.put_nowait(core.send, b"c")  # evicts a
    assert first.is_set()
    assert not second.is_set()
    assert len(core.flushes.pending) == 1


async def test_evicting_a_sampled_item_forgets_its_sample() -> None:
    core = make_core(buffer_size=16, when_full="drop_oldest")
    for i in range(16):
        core.intake.put_nowait(core.send, b"%d" % i)
    assert [number for number, _ in core.ledger.samples] == [16]  # one item in 16
    for i in range(16, 31):
        core.intake.put_nowait(core.send, b"%d" % i)  # evicts items 1 to 15
    assert [number for number, _ in core.ledger.samples] == [16]
    core.intake.put_nowait(core.send, b"31")  # evicts item 16, the sampled one
    assert [number for number, _ in core.ledger.samples] == [32]
    assert core.ledger.drops.counts["oldest"] == 16


async def test_evicting_an_item_keeps_the_samples_of_the_items_the_receiver_holds() -> None:
    core = make_core(buffer_size=16, when_full="drop_oldest")
    for i in range(16):
        core.intake.put_nowait(core.send, b"%d" % i)
    for _ in range(16):  # taken into a batch the receiver has not handed over yet
        core.ledger.take(core.recv.receive_nowait(), held=True)
    for i in range(16, 33):
        core.intake.put_nowait(core.send, b"%d" % i)  # the 33rd evicts item 17
    assert [number for number, _ in core.ledger.samples] == [16, 32]
    for i in range(33, 48):
        core.intake.put_nowait(core.send, b"%d" % i)  # items 34-48 evict items 18 to 32
    assert [number for number, _ in core.ledger.samples] == [16, 48]
    assert core.ledger.settled == 0  # items 1-16 are held, not settled


async def test_drop_oldest_with_a_byte_budget_evicts_until_the_bytes_fit() -> None:
    core = make_core(buffer_size=10, when_full="drop_oldest", buffer_max_bytes=10)
    core.intake.put_nowait(core.send, b"1111")
    core.intake.put_nowait(core.send, b"2222")
    assert core.intake.put_nowait(core.send, b"333333") == 6  # 8 + 6 > 10: evicts 1111 only
    assert core.budget is not None
    assert core.budget.used == 10
    assert core.ledger.drops.counts["oldest"] == 1
    assert [core.take(), core.take()] == [b"2222", b"333333"]
    assert core.budget.used == 0


async def test_drop_oldest_drops_the_new_item_when_held_bytes_fill_the_budget() -> None:
    """Documented: if even an empty buffer has no room (bytes held by a lingering batch
    cannot be evicted), the new item is dropped and counted ``full``."""
    core = make_core(buffer_size=10, when_full="drop_oldest", buffer_max_bytes=10)
    assert core.budget is not None
    core.intake.put_nowait(core.send, b"held....")
    core.recv.receive_nowait()  # the receiver takes it into its batch: 8 bytes still count
    core.ledger.take(b"held....", held=True)
    core.intake.put_nowait(core.send, b"b")
    assert core.intake.put_nowait(core.send, b"cccc") == 0
    assert core.ledger.drops.counts["oldest"] == 1  # b was evicted, and c dropped anyway
    assert core.ledger.drops.counts["full"] == 1
    assert core.budget.used == 8
    assert core.buffered == 0


# --------------------------------------------------------------------------- byte budget


async def test_byte_budget_makes_put_nowait_wouldblock_when_the_bytes_do_not_fit() -> None:
    core = make_core(buffer_size=10, buffer_max_bytes=10)
    assert core.budget is not None
    core.intake.put_nowait(core.send, b"12345678")
    with pytest.raises(trio.WouldBlock):
        core.intake.put_nowait(core.send, b"abc")
    assert core.budget.used == 8
    assert core.intake.put_nowait(core.send, b"ab") == 2  # exactly the limit fits
    assert core.budget.used == 10
    assert core.ledger.accepted == 2


async def test_byte_budget_admits_an_oversized_item_alone_when_empty() -> None:
    core = make_core(buffer_size=10, buffer_max_bytes=4)
    assert core.budget is not None
    core.intake.put_nowait(core.send, b"x")
    with pytest.raises(trio.WouldBlock):
        core.intake.put_nowait(core.send, b"0123456789")  # too big to join another item
    assert core.take() == b"x"
    assert core.intake.put_nowait(core.send, b"0123456789") == 10
    assert core.budget.used == 10
    with pytest.raises(trio.WouldBlock):
        core.intake.put_nowait(core.send, b"y")  # nothing joins it
    assert core.take() == b"0123456789"
    assert core.budget.used == 0
    assert core.intake.put_nowait(core.send, b"y") == 1


async def test_writes_waiting_in_the_byte_line_go_in_fifo_order_as_bytes_are_released() -> None:
    core = make_core(buffer_size=10, buffer_max_bytes=10)
    assert core.budget is not None
    core.intake.put_nowait(core.send, b"aaaaaa")
    core.intake.put_nowait(core.send, b"AAAA")  # 10 of 10 bytes
    async with trio.open_nursery() as nursery:
        big = start_put(nursery, core, b"bbbbbbb")
        await settle()
        small = start_put(nursery, core, b"c")
        await settle()
        assert (core.ledger.nb_waiting, core.ledger.size_waiting) == (2, 8)
        assert core.waiting_senders == 0  # they wait in the byte line, before the channel
        with pytest.raises(trio.WouldBlock):
            core.intake.put_nowait(core.send, b"d")  # may not pass the line
        assert core.take() == b"aaaaaa"  # 4 bytes used: c would fit, but b is first
        await settle()
        assert (big.outcome, small.outcome) == ("running", "running")
        assert core.buffered == 1
        assert core.take() == b"AAAA"  # 0 bytes used: b, then c
        await settle()
    assert (big.returned, small.returned) == (7, 1)
    assert [core.take(), core.take()] == [b"bbbbbbb", b"c"]
    assert core.budget.used == 0
    assert (core.ledger.nb_waiting, core.ledger.size_waiting) == (0, 0)
    core.assert_balanced()


async def test_cancelled_write_gives_back_the_bytes_it_reserved_while_waiting_for_a_slot() -> None:
    core = make_core(buffer_size=1, buffer_max_bytes=10)
    assert core.budget is not None
    core.intake.put_nowait(core.send, b"aa")  # the one item slot
    async with trio.open_nursery() as nursery:
        put = start_put(nursery, core, b"bbb")
        await settle()
        assert core.waiting_senders == 1  # its bytes reserved, it waits for the slot
        assert core.budget.used == 5
        put.scope.cancel()
    assert put.outcome == "cancelled"
    assert core.budget.used == 2
    assert (core.ledger.nb_waiting, core.ledger.size_waiting, core.ledger.accepted) == (0, 0, 1)


async def test_closing_the_intake_fails_the_writes_waiting_in_the_byte_line() -> None:
    core = make_core(buffer_size=10, buffer_max_bytes=4)
    core.intake.put_nowait(core.send, b"1234")
    async with trio.open_nursery() as nursery:
        first = start_put(nursery, core, b"a")  # in the line, holding it
        second = start_put(nursery, core, b"b")  # behind it, waiting for the lock
        await settle()
        core.intake.close()
    assert (first.outcome, second.outcome) == ("raised", "raised")
    assert isinstance(first.error, AggregatorClosedError)
    assert isinstance(second.error, AggregatorClosedError)
    assert (core.ledger.nb_waiting, core.ledger.size_waiting) == (0, 0)
    assert core.take() == b"1234"  # what was accepted still drains


async def test_closing_a_clone_fails_its_write_waiting_in_the_byte_line() -> None:
    """`AggregatorSender.close`: "Tasks blocked in its `send` get ClosedResourceError"."""
    core = make_core(buffer_size=10, buffer_max_bytes=4)
    core.intake.put_nowait(core.send, b"1234")
    clone = core.intake.open_clone()
    async with trio.open_nursery() as nursery:
        put = start_put(nursery, core, b"a", clone)
        await settle()
        assert core.ledger.nb_waiting == 1
        core.intake.close_clone(clone)
        await settle()
        outcome, nb_waiting = put.outcome, core.ledger.nb_waiting
        put.scope.cancel()  # do not leave it waiting if the bug is there
    assert (outcome, nb_waiting) == ("raised", 0)
    assert type(put.error) is trio.ClosedResourceError


# --------------------------------------------------------------------------- waiting writes


async def test_blocked_put_waits_in_the_channel_and_goes_in_when_room_appears() -> None:
    core = make_core(buffer_size=1)
    ledger = core.ledger
    core.intake.put_nowait(core.send, b"a")
    async with trio.open_nursery() as nursery:
        puts: list[PendingPut] = []
        for item in (b"b", b"cc", b"ddd"):
            puts.append(start_put(nursery, core, item))
            await settle()
        assert core.waiting_senders == 3
        assert (ledger.nb_waiting, ledger.size_waiting, ledger.accepted) == (3, 6, 1)
        taken = [core.take()]
        await settle()  # the first waiting write resumes: accepted
        assert puts[0].returned == 1
        assert (ledger.nb_waiting, ledger.accepted, ledger.nb_buffered) == (2, 2, 1)
        assert core.waiting_senders == 2
        core.assert_balanced()
        for _ in range(3):
            taken.append(core.take())
            await settle()
    assert taken == [b"a", b"b", b"cc", b"ddd"]
    assert [put.returned for put in puts] == [1, 2, 3]
    assert (ledger.nb_waiting, ledger.size_waiting, ledger.blocked) == (0, 0, {})
    assert (ledger.accepted, ledger.taken) == (4, 4)


async def test_cancelled_blocked_put_is_neither_accepted_nor_left_waiting() -> None:
    core = make_core(buffer_size=1)
    ledger = core.ledger
    core.intake.put_nowait(core.send, b"a")
    async with trio.open_nursery() as nursery:
        cancelled = start_put(nursery, core, b"never")
        await settle()
        later = start_put(nursery, core, b"b")
        await settle()
        assert ledger.nb_waiting == 2
        cancelled.scope.cancel()
        await settle()
        assert cancelled.outcome == "cancelled"
        assert core.waiting_senders == 1
        assert (ledger.nb_waiting, ledger.size_waiting, ledger.accepted) == (1, 1, 1)
        assert ledger.blocked == {id(later.item): 1}
        assert core.take() == b"a"
        await settle()
    assert core.take() == b"b"
    with pytest.raises(trio.WouldBlock):
        core.take()
    assert (ledger.accepted, ledger.taken, ledger.nb_waiting, ledger.size_waiting) == (2, 2, 0, 0)
    core.assert_balanced()


async def test_a_blocked_put_that_gives_up_lowers_the_flushes_counting_on_it() -> None:
    core = make_core(buffer_size=1)
    core.intake.put_nowait(core.send, b"a")
    async with trio.open_nursery() as nursery:
        put = start_put(nursery, core, b"b")
        await settle()
        done = core.flushes.add()  # waits for a and for the waiting b
        assert core.flushes.pending[0].target == 2
        put.scope.cancel()  # b will never come: the flush only waits for a now
    assert put.outcome == "cancelled"
    assert core.flushes.pending[0].target == 1
    assert not done.is_set()
    core.take()  # (taking a while b waited would have moved b into the channel)
    core.flushes.check()
    assert done.is_set()
    assert not core.flushes.pending


async def test_a_put_that_would_wait_in_the_receiver_task_raises_runtime_error() -> None:
    core = make_core(buffer_size=1)
    core.intake.put_nowait(core.send, b"a")
    core.guard.enter()  # this task is the receiver now
    before = core.levels()
    with pytest.raises(RuntimeError, match="receiver task would wait for itself"):
        await core.intake.put(core.send, b"b")
    assert core.levels() == before
    assert core.ledger.blocked == {}
    with pytest.raises(trio.WouldBlock):  # put_nowait never waits, so it is allowed
        core.intake.put_nowait(core.send, b"b")


# --------------------------------------------------------------------------- closed


async def test_writes_on_a_closed_clone_raise_closed_resource_error_not_aggregator_closed() -> None:
    core = make_core(buffer_size=2)
    clone = core.intake.open_clone()
    assert core.intake.clones == {clone}
    core.intake.put_nowait(clone, b"a")
    core.intake.close_clone(clone)
    assert core.intake.clones == set()
    for data in (b"b", b""):
        with pytest.raises(trio.ClosedResourceError) as caught:
            core.intake.put_nowait(clone, data)
        assert type(caught.value) is trio.ClosedResourceError
        with pytest.raises(trio.ClosedResourceError) as caught:
            await core.intake.put(clone, data)
        assert type(caught.value) is trio.ClosedResourceError
    assert core.intake.put_nowait(core.send, b"c") == 1  # the run goes on
    assert core.ledger.accepted == 2


async def test_a_put_blocked_on_a_clone_fails_when_the_clone_is_closed() -> None:
    core = make_core(buffer_size=1)
    core.intake.put_nowait(core.send, b"a")
    clone = core.intake.open_clone()
    async with trio.open_nursery() as nursery:
        put = start_put(nursery, core, b"b", clone)
        other = start_put(nursery, core, b"c")
        await settle()
        assert core.ledger.nb_waiting == 2
        core.intake.close_clone(clone)
        await settle()
        assert put.outcome == "raised"
        assert type(put.error) is trio.ClosedResourceError
        assert (core.ledger.nb_waiting, core.ledger.size_waiting) == (1, 1)
        core.take()
    assert other.returned == 1
    assert core.take() == b"c"


@pytest.mark.parametrize("settings", [{}, {"buffer_max_bytes": 100}], ids=["plain", "budget"])
async def test_every_write_after_close_raises_aggregator_closed_error(
    settings: dict[str, int],
) -> None:
    core = make_core(buffer_size=2, **settings)
    clone = core.intake.open_clone()
    core.intake.put_nowait(core.send, b"a")
    core.intake.close()
    assert not core.intake.accepting
    assert core.intake.clones == set()
    for channel in (core.send, clone):
        for data in (b"b", b"", bytearray(b"c")):
            with pytest.raises(AggregatorClosedError):
                core.intake.put_nowait(channel, data)
            with pytest.raises(AggregatorClosedError):
                await core.intake.put(channel, data)
    with pytest.raises(AggregatorClosedError):
        core.intake.open_clone()
    assert core.ledger.accepted == 1
    assert core.take() == b"a"  # what was accepted drains, then the channel ends
    with pytest.raises(trio.EndOfChannel):
        core.recv.receive_nowait()


async def test_a_blocked_put_fails_with_aggregator_closed_error_when_the_intake_closes() -> None:
    core = make_core(buffer_size=1)
    core.intake.put_nowait(core.send, b"a")
    async with trio.open_nursery() as nursery:
        put = start_put(nursery, core, b"b")
        await settle()
        done = core.flushes.add()
        core.intake.close()
        await settle()
        core.take()
        core.flushes.check()
    assert isinstance(put.error, AggregatorClosedError)
    assert (core.ledger.nb_waiting, core.ledger.accepted, core.ledger.taken) == (0, 1, 1)
    assert done.is_set()


@pytest.mark.parametrize(
    ("data", "error"),
    [("text", TypeError), (12, TypeError), (None, TypeError), (b"x" * 9, ValueError)],
)
@pytest.mark.parametrize("full", [False, True])
async def test_type_and_size_errors_leave_every_count_untouched(
    data: object, error: type[Exception], full: bool
) -> None:
    core = make_core(buffer_size=1, max_item_bytes=8, buffer_max_bytes=100)
    if full:
        core.intake.put_nowait(core.send, b"a")
    before = core.levels()
    assert core.budget is not None
    used = core.budget.used
    with pytest.raises(error):
        core.intake.put_nowait(core.send, data)
    with pytest.raises(error):
        await core.intake.put(core.send, data)
    assert core.levels() == before
    assert core.budget.used == used
    assert core.ledger.drops.total == 0


async def test_type_error_without_max_item_bytes_or_budget_names_the_type() -> None:
    core = make_core(buffer_size=1)
    with pytest.raises(TypeError, match="not str"):
        core.intake.put_nowait(core.send, "text")
    with pytest.raises(TypeError, match="not int"):
        await core.intake.put(core.send, 3)
    assert core.ledger.accepted == 0


# --------------------------------------------------------------------------- adoption


async def test_taking_a_waiting_write_before_its_task_resumes_adopts_it() -> None:
    core = make_core(buffer_size=1)
    ledger = core.ledger
    core.intake.put_nowait(core.send, b"a")
    async with trio.open_nursery() as nursery:
        put = start_put(nursery, core, b"bb")
        await settle()
        assert core.take() == b"a"  # the channel moves bb into its buffer, wakes its task
        assert put.outcome == "running"
        assert (core.waiting_senders, core.buffered) == (0, 1)
        assert (ledger.nb_waiting, ledger.size_waiting, ledger.nb_buffered) == (1, 2, 0)
        core.assert_balanced()
        assert core.take() == b"bb"  # its task has not resumed: adopted
        assert core.levels() == {
            "accepted": 2,
            "taken": 2,
            "nb_buffered": 0,
            "size_buffered": 0,
            "nb_held": 0,
            "size_held": 0,
            "nb_waiting": 0,
            "size_waiting": 0,
        }
        assert ledger.blocked == {}
        after_adoption = core.levels()
        await settle()
        assert put.returned == 2
        assert core.levels() == after_adoption  # its resume counts nothing twice


async def test_a_waiting_write_that_resumes_before_it_is_taken_is_not_adopted() -> None:
    core = make_core(buffer_size=1)
    ledger = core.ledger
    core.intake.put_nowait(core.send, b"a")
    async with trio.open_nursery() as nursery:
        put = start_put(nursery, core, b"bb")
        await settle()
        core.take()
        await settle()
        assert put.returned == 2
        assert (ledger.nb_waiting, ledger.nb_buffered, ledger.size_buffered) == (0, 1, 2)
        assert (ledger.accepted, ledger.taken) == (2, 1)
        assert core.take() == b"bb"
    core.assert_balanced()
    assert (ledger.accepted, ledger.taken, ledger.nb_buffered) == (2, 2, 0)


async def test_a_rendezvous_take_adopts_the_waiting_write_it_takes_from() -> None:
    core = make_core(buffer_size=0)
    async with trio.open_nursery() as nursery:
        put = start_put(nursery, core, b"abc")
        await settle()
        assert core.waiting_senders == 1
        assert core.take() == b"abc"
        core.assert_balanced()
        assert (core.ledger.accepted, core.ledger.taken, core.ledger.nb_waiting) == (1, 1, 0)
    assert put.returned == 3
    assert (core.ledger.accepted, core.ledger.nb_buffered) == (1, 0)


async def test_the_same_bytes_object_waiting_twice_waits_as_two_copies() -> None:
    """A waiting write sends its own copy, so the receiver adopts exactly the one it took."""
    core = make_core(buffer_size=1)
    ledger = core.ledger
    same = b"xy"
    core.intake.put_nowait(core.send, b"a")
    async with trio.open_nursery() as nursery:
        first = start_put(nursery, core, same)
        second = start_put(nursery, core, same)
        await settle()
        assert sorted(ledger.blocked.values()) == [1, 1]
        assert id(same) not in ledger.blocked
        assert (ledger.nb_waiting, ledger.size_waiting) == (2, 4)
        core.take()
        assert core.take() == same  # the first one's copy, adopted before its task resumed
        core.assert_balanced()
        assert (ledger.nb_waiting, ledger.accepted, ledger.taken) == (1, 2, 2)
        await settle()
        assert (first.returned, second.returned) == (2, 2)
        core.assert_balanced()
        assert ledger.nb_waiting == 0
        assert core.take() == same
    core.assert_balanced()
    assert ledger.blocked == {}
    assert (ledger.accepted, ledger.taken, ledger.size_waiting, ledger.size_buffered) == (
        3,
        3,
        0,
        0,
    )


@pytest.mark.parametrize("same", [b"ab", b"a"], ids=["two bytes", "one shared byte"])
async def test_taking_an_item_of_the_same_object_as_a_write_in_the_byte_line(
    same: bytes,
) -> None:
    """A write waiting in the byte line is not in the channel. Taking the accepted item
    with the same bytes must not leave a phantom behind: once the waiting write gives up,
    every count is exact. With two bytes or more the waiting write has its own copy, so
    even the labels are exact at once; a one-byte object is shared by Python, so the
    adoption may first pick the waiting write (counted as taken instead of the other)."""
    core = make_core(buffer_size=10, buffer_max_bytes=1)
    ledger = core.ledger
    core.intake.put_nowait(core.send, same)
    async with trio.open_nursery() as nursery:
        put = start_put(nursery, core, same)
        await settle()
        assert (ledger.nb_waiting, core.waiting_senders) == (1, 0)  # in the byte line
        assert core.take() is same  # the accepted one
        after_take = (ledger.nb_waiting, ledger.nb_buffered, core.buffered, ledger.accepted)
        assert after_take[0] + after_take[1] == 1  # one write, waiting or counted buffered
        assert after_take[3] - after_take[1] == 1  # accepted minus buffered: the one taken
        put.scope.cancel()  # before it resumes: it never enters the channel
    assert put.outcome == "cancelled"
    if len(same) > 1:
        assert after_take == (1, 0, 0, 1)
    assert (ledger.accepted, ledger.taken, ledger.nb_buffered, ledger.nb_waiting) == (1, 1, 0, 0)
    assert core.flushes.is_settled()


async def test_taking_an_item_never_adopts_a_write_of_the_same_object_still_in_line() -> None:
    """No byte budget: the accepted item ``same`` is taken while another write of the
    very same object waits in the channel behind a different one. Taking it must not
    count that waiting write as taken; once it gives up, it must never have counted."""
    core = make_core(buffer_size=1)
    ledger = core.ledger
    same = b"same"
    core.intake.put_nowait(core.send, same)
    async with trio.open_nursery() as nursery:
        other = start_put(nursery, core, b"zz")
        await settle()
        late = start_put(nursery, core, same)
        await settle()
        assert core.take() is same  # the accepted one; zz moves into the channel's buffer
        after_take = (ledger.nb_waiting, core.waiting_senders, ledger.accepted)
        late.scope.cancel()  # still waiting in the channel: it never goes in
        await settle()
    assert (other.returned, late.outcome) == (2, "cancelled")
    assert after_take == (2, 1, 1)
    assert core.take() == b"zz"
    assert (ledger.accepted, ledger.taken, ledger.nb_buffered, ledger.nb_waiting) == (2, 2, 0, 0)
    assert core.flushes.is_settled()


# --------------------------------------------------------------------------- properties

PRODUCERS = 3
operation_st = st.one_of(
    st.tuples(st.sampled_from(["nowait", "put", "cancel"]), st.integers(0, PRODUCERS - 1)),
    st.tuples(st.sampled_from(["take", "yield", "settle"]), st.just(0)),
)


def _item(producer: int, index: int) -> bytes:
    return b"%d:%d:" % (producer, index) + b"." * producer * 3


@settings(max_examples=250, deadline=None)
@given(
    operations=st.lists(operation_st, max_size=60),
    buffer_size=st.integers(0, 3),
    buffer_max_bytes=st.sampled_from([None, 12]),
)
async def test_any_interleaving_of_writes_takes_and_cancels_keeps_counts_and_order(
    operations: list[tuple[str, int]], buffer_size: int, buffer_max_bytes: int | None
) -> None:
    """Under ``"block"``: ``accepted == taken + nb_buffered`` and no count below zero at
    every step; at the end every accepted item came out once, in each producer's order."""
    core = make_core(buffer_size=buffer_size, buffer_max_bytes=buffer_max_bytes)
    clones = [core.intake.open_clone() for _ in range(PRODUCERS)]
    issued: list[list[tuple[bytes, PendingPut | None]]] = [[] for _ in range(PRODUCERS)]
    busy: list[PendingPut | None] = [None] * PRODUCERS
    out: list[bytes] = []

    async with trio.open_nursery() as nursery:
        for op, producer in operations:
            pending = busy[producer]
            if pending is not None and pending.done.is_set():
                pending = busy[producer] = None
            item = _item(producer, len(issued[producer]))
            if op == "nowait" and pending is None:
                try:
                    core.intake.put_nowait(clones[producer], item)
                except trio.WouldBlock:
                    continue
                issued[producer].append((item, None))
            elif op == "put" and pending is None:
                busy[producer] = start_put(nursery, core, item, clones[producer])
                issued[producer].append((item, busy[producer]))
            elif op == "cancel" and pending is not None:
                pending.scope.cancel()
            elif op == "take":
                with contextlib.suppress(trio.WouldBlock):
                    out.append(core.take())
            elif op == "yield":
                await trio.lowlevel.checkpoint()
            elif op == "settle":
                await settle()
            core.assert_balanced()
            running = sum(p is not None and not p.done.is_set() for p in busy)
            assert core.ledger.nb_waiting <= running
        for _ in range(200):  # drain: every waiting write gets in, in turn
            await settle()
            try:
                out.append(core.take())
            except trio.WouldBlock:
                break
            core.assert_balanced()
        assert all(p is None or p.done.is_set() for p in busy)  # else the nursery hangs

    puts = [put for writes in issued for _, put in writes if put is not None]
    assert all(put.outcome in ("returned", "cancelled") for put in puts)
    expected = [
        [item for item, put in writes if put is None or put.outcome == "returned"]
        for writes in issued
    ]
    assert [[i for i in out if i.startswith(b"%d:" % p)] for p in range(PRODUCERS)] == expected
    ledger = core.ledger
    assert ledger.accepted == ledger.taken == len(out)
    assert (ledger.nb_buffered, ledger.size_buffered) == (0, 0)
    assert (ledger.nb_waiting, ledger.size_waiting, ledger.blocked) == (0, 0, {})
    assert ledger.drops.total == 0
    if core.budget is not None:
        assert core.budget.used == 0


@settings(max_examples=150, deadline=None)
@given(
    operations=st.lists(st.one_of(st.integers(0, 9), st.none()), max_size=40),
    when_full=st.sampled_from(["drop_newest", "drop_oldest"]),
    buffer_size=st.integers(1, 4),
    buffer_max_bytes=st.sampled_from([None, 10]),
)
async def test_drop_policies_follow_a_bounded_queue_model(
    operations: list[int | None], when_full: str, buffer_size: int, buffer_max_bytes: int | None
) -> None:
    """Writes (of 3 to 12 bytes) and takes against a model: a queue bounded in items and
    bytes that drops the new item (``drop_newest``) or evicts from the front until it
    fits (``drop_oldest``); an item larger than the byte bound goes in alone."""
    core = make_core(
        buffer_size=buffer_size, when_full=when_full, buffer_max_bytes=buffer_max_bytes
    )
    model: deque[bytes] = deque()
    full = oldest = 0

    def fits(size: int) -> bool:
        used = sum(map(len, model))
        by_bytes = buffer_max_bytes is None or not used or used + size <= buffer_max_bytes
        return len(model) < buffer_size and by_bytes

    takes = 0
    for index, op in enumerate(operations):
        if op is None:
            if model:
                assert core.take() == model.popleft()
                takes += 1
            else:
                with pytest.raises(trio.WouldBlock):
                    core.take()
            continue
        item = b"%03d" % index + b"." * op
        if when_full == "drop_oldest":
            while not fits(len(item)):
                model.popleft()
                oldest += 1
        if fits(len(item)):
            model.append(item)
            assert core.intake.put_nowait(core.send, item) == len(item)
        else:
            full += 1
            assert core.intake.put_nowait(core.send, item) == 0
        core.assert_balanced()

    ledger = core.ledger
    assert (ledger.drops.counts["full"], ledger.drops.counts["oldest"]) == (full, oldest)
    assert (ledger.nb_buffered, ledger.size_buffered) == (len(model), sum(map(len, model)))
    if core.budget is not None:
        assert core.budget.used == ledger.size_buffered
    left = len(model)
    assert [core.take() for _ in range(left)] == list(model)
    assert ledger.accepted == ledger.taken == takes + oldest + left
