"""`Flushes` on a `Ledger` moved by hand: targets by item number, and tickets."""

from __future__ import annotations

from trio_aggregator import AggregatorConfig
from trio_aggregator._flushes import Flushes
from trio_aggregator._ledger import Ledger


def make() -> tuple[Ledger, Flushes]:
    ledger = Ledger(AggregatorConfig(writer=lambda data: None))
    return ledger, Flushes(ledger)


async def test_a_flush_targets_what_is_accepted_or_waiting_when_it_is_added() -> None:
    ledger, flushes = make()
    assert flushes.is_settled()
    for item in (b"a", b"b"):
        ledger.accept(item)
    ledger.block(b"c")
    assert not flushes.is_settled()
    done = flushes.add()
    assert flushes.pending[0].target == 3
    ledger.accept(b"d")  # a later write: not waited for
    ledger.take(b"a")
    ledger.take(b"b")
    flushes.check()
    assert not done.is_set()
    ledger.resume(b"c", ledger.runs)
    ledger.take(b"c")
    flushes.check()
    assert done.is_set()
    assert not flushes.pending
    assert not flushes.is_settled()  # d is not settled


async def test_items_held_by_the_receiver_are_not_settled() -> None:
    ledger, flushes = make()
    ledger.accept(b"a")
    ledger.accept(b"b")
    done = flushes.add()
    ledger.take(b"a", held=True)
    ledger.take(b"b", held=True)
    flushes.check()
    assert ledger.settled == 0
    assert not done.is_set()
    ledger.unsettled_from = 0  # the receiver handed both to the writer
    flushes.check()
    assert done.is_set()


async def test_flushes_are_done_in_turn_as_their_items_settle() -> None:
    ledger, flushes = make()
    events = []
    for item in (b"a", b"b", b"c"):
        ledger.accept(item)
        events.append(flushes.add())
    ledger.take(b"a")
    ledger.take(b"b")
    flushes.check()
    assert [event.is_set() for event in events] == [True, True, False]
    assert [flush.target for flush in flushes.pending] == [3]


async def test_a_waiting_write_that_gives_up_lowers_only_the_flushes_that_counted_on_it() -> None:
    ledger, flushes = make()
    ledger.accept(b"a")
    before = flushes.add()  # added before the write waited: does not count on it
    ticket = flushes.ticket()
    ledger.block(b"w")
    counting = flushes.add()  # counts on w
    later_ticket = flushes.ticket()
    ledger.block(b"x")
    last = flushes.add()  # counts on w and x
    assert [flush.target for flush in flushes.pending] == [1, 2, 3]
    ledger.unblock(b"w")
    flushes.gave_up(ticket)
    assert [flush.target for flush in flushes.pending] == [1, 1, 2]
    assert [event.is_set() for event in (before, counting, last)] == [False] * 3
    ledger.take(b"a")
    ledger.unblock(b"x")
    flushes.gave_up(later_ticket)  # also checks: every remaining target is settled
    assert [event.is_set() for event in (before, counting, last)] == [True] * 3
    assert not flushes.pending


async def test_release_all_finishes_every_pending_flush() -> None:
    ledger, flushes = make()
    ledger.accept(b"a")
    events = [flushes.add(), flushes.add()]
    flushes.release_all()
    assert all(event.is_set() for event in events)
    assert not flushes.pending
