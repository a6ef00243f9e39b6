"""`Flushes`: the pending `Aggregator.flush` calls of one run, and when each is done.

A flush waits for every item accepted before it, and for the writes already waiting
for room when it was called: they enter the channel before any later write, so the
flush is done once the items numbered up to their count are settled. A waiting write
that gives up (cancelled, or its sender closed) lowers the count of the flushes that
were counting on it; each waiting write carries a ticket to tell which ones.

Targets never decrease from one flush to the next (a write that gives up lowers the
target of every flush after it alike), so the pending flushes are done in order.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._ledger import Ledger


class _Flush:
    __slots__ = ("done", "target", "ticket")

    def __init__(self, target: int, ticket: int) -> None:
        self.target = target
        self.ticket = ticket
        self.done = trio.Event()


class Flushes:
    """The flushes waiting in one run, checked each time items are settled."""

    __slots__ = ("_ledger", "_tickets", "pending")

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.pending: deque[_Flush] = deque()
        """The flushes not done yet (a lingering batch goes at once while there are any)."""
        self._tickets = 0

    def ticket(self) -> int:
        """A ticket for a write that starts waiting for room."""
        self._tickets += 1
        return self._tickets

    def is_settled(self) -> bool:
        """Whether a flush called now would be done at once."""
        ledger = self._ledger
        return ledger.settled >= ledger.accepted + ledger.nb_waiting

    def add(self) -> trio.Event:
        """Register a flush for what is accepted or waiting now; its event is set when done."""
        ledger = self._ledger
        flush = _Flush(ledger.accepted + ledger.nb_waiting, self._tickets)
        self.pending.append(flush)
        return flush.done

    def gave_up(self, ticket: int) -> None:
        """The waiting write with *ticket* will never enter the channel."""
        for flush in self.pending:
            if ticket <= flush.ticket:
                flush.target -= 1
        self.check()

    def check(self) -> None:
        """Finish the flushes whose items are all settled (the oldest first)."""
        pending = self.pending
        if pending:
            settled = self._ledger.settled
            while pending and pending[0].target <= settled:
                pending.popleft().done.set()

    def release_all(self) -> None:
        """The run ended: everything was written or dropped, so every flush is done."""
        for flush in self.pending:
            flush.done.set()
        self.pending.clear()
