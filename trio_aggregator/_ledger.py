"""`Ledger`: every count an aggregator keeps, in one place.

The producers' side (`Intake`) and the receiver update it; `Aggregator.statistics`
reads it. Items are numbered by their place in the memory channel, which is first in,
first out: ``taken`` counts the items that have left it (taken by the receiver or
evicted), so "every item up to number n is settled" is a single integer.

A write that had to wait is counted as waiting until its own task resumes, even after
the channel moved it into the buffer; if the receiver takes it before that, it
*adopts* it (counts it as accepted and taken at once), so no count ever goes negative.
The receiver knows such an item by its identity: a waiting write sends its own copy of
the bytes (except a 1-byte write: Python shares those objects, so among waiting 1-byte
writes of the same byte the one adopted may be another one than the one taken; the
counts stay right, and which of them is labelled waiting is settled when they resume).

Only the Trio thread changes the counts; `snapshot` may be called from any thread. In
the Trio thread it copies them directly: nothing changes them meanwhile. From another
thread it has the Trio thread make the copy, between two of its steps (with the run's
`trio.lowlevel.TrioToken`). So the write path pays nothing for it: no lock, no counter.
"""

from __future__ import annotations

import threading
from collections import deque
from functools import partial
from typing import TYPE_CHECKING

import trio

from ._drops import DropCounter
from ._error_log import ErrorLog
from ._statistics import AggregatorStatistics

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._config import AggregatorConfig
    from ._lowlevel import TrioToken

SAMPLE_MASK = 15
"""One item in 16 accepted without waiting has its buffered time measured."""
SAMPLE_WINDOW = 1024
"""How many recent buffered-time samples the percentiles are computed over."""
SNAPSHOT_PATIENCE = 1.0
"""Seconds a reader on another thread waits for the Trio thread's copy (see `Ledger.snapshot`)."""


class Ledger:
    """The counts of one aggregator: levels of the current run and totals since the first."""

    __slots__ = (
        "_buffered_times",
        "_ended_blocked",
        "_owner",
        "_token",
        "accepted",
        "async_runs",
        "async_skipped",
        "blocked",
        "bytes_written",
        "callback_errors",
        "drops",
        "errors",
        "items_written",
        "nb_buffered",
        "nb_held",
        "nb_waiting",
        "peak",
        "runs",
        "samples",
        "size_buffered",
        "size_held",
        "size_waiting",
        "sync_runs",
        "taken",
        "unsettled_from",
        "writer_calls",
        "writer_errors",
        "writer_lock",
    )

    def __init__(self, config: AggregatorConfig) -> None:
        self.errors = ErrorLog(config.max_errors)
        self.drops = DropCounter()
        self.accepted = 0
        """Items accepted into the channel since the first start."""
        self.taken = 0
        """Items that left the channel (taken by the receiver or evicted)."""
        self.items_written = self.bytes_written = self.writer_calls = self.writer_errors = 0
        self.callback_errors = self.sync_runs = self.async_runs = self.async_skipped = 0
        self.blocked: dict[int, int] = {}
        """Waiting writes not resumed yet, by id of their bytes (a count per object)."""
        self._ended_blocked: dict[int, dict[int, int]] = {}
        """`blocked` as each ended run left it (by run), while its writes resume."""
        self.samples: deque[tuple[int, float]] = deque()
        """(number, time accepted) of the sampled items not handed to the writer yet."""
        self._buffered_times: deque[float] = deque(maxlen=SAMPLE_WINDOW)
        self.runs = 0
        """Runs started (1 before the first start): a waiting write knows its own by it."""
        self.writer_lock = threading.Lock()
        """Held by a ``writer_thread`` call, even one a stop stopped waiting for."""
        self.new_run()

    def new_run(self, token: TrioToken | None = None) -> None:
        """Levels start from zero with each run (the totals go on).

        *token*: the run's, for `snapshot` (None before the first start).
        """
        if self.blocked:  # writes still waiting settle their count when they resume
            self._ended_blocked[self.runs] = dict(self.blocked)
        self.runs += 1
        self._owner = threading.get_ident()  # the thread that runs Trio, for `snapshot`
        self._token = token
        self.nb_buffered = self.size_buffered = 0  # accepted, still in the channel
        self.nb_held = self.size_held = 0  # taken by the receiver, not handed to the writer
        self.nb_waiting = self.size_waiting = 0
        self.peak = 0
        self.unsettled_from = 0  # number of the oldest item the receiver holds; 0: none
        self.blocked.clear()
        self.samples.clear()

    # ------------------------------------------------------------ writes that wait

    def block(self, item: bytes) -> None:
        """Count *item* as waiting: its write found no room."""
        self.nb_waiting += 1
        self.size_waiting += len(item)
        key = id(item)
        self.blocked[key] = self.blocked.get(key, 0) + 1

    def unblock(self, item: bytes) -> bool:
        """The write of *item* resumed: False if the receiver already adopted it."""
        key = id(item)
        left = self.blocked.get(key, 0)
        if not left:
            return False
        if left == 1:
            del self.blocked[key]
        else:  # the same bytes object written by several tasks at once: same size
            self.blocked[key] = left - 1
        self.nb_waiting -= 1
        self.size_waiting -= len(item)
        return True

    def give_up(self, item: bytes, run: int) -> None:
        """The write of *item* waited and never entered the channel (cancelled, closed).

        Its registration may have been taken by the adoption of another item that is the
        same (1-byte) bytes object: that adoption counted this write as accepted, and
        left the other item counted as buffered; both are undone here. If its *run* is
        over (the task resumed only after a new start), the new run's levels started from
        zero: only the total of accepted items is undone, if that run adopted it.
        """
        if run != self.runs:
            ended = self._ended_blocked.get(run)
            if not _unregister(ended, id(item)):
                self.accepted -= 1  # adopted in place of another item of its run
            if ended is not None and not ended:
                del self._ended_blocked[run]
            return
        if not self.unblock(item):
            self.accepted -= 1
            self.nb_buffered -= 1
            self.size_buffered -= len(item)

    def accept(self, item: bytes) -> None:
        """Count *item* as accepted into the channel without waiting.

        One such item in 16 has its buffered time measured: it entered the channel
        behind every accepted or waiting item, so its number is known.
        """
        self.nb_buffered += 1
        self.size_buffered += len(item)
        self.accepted += 1
        if not self.accepted & SAMPLE_MASK:
            self.samples.append((self.accepted + self.nb_waiting, trio.current_time()))

    def resume(self, item: bytes, run: int) -> None:
        """The write of *item* waited and is now in the channel, unless already adopted.

        If its *run* is over, the receiver adopted it before that run ended.
        """
        if run != self.runs:
            return
        if self.unblock(item):
            self.nb_buffered += 1
            self.size_buffered += len(item)
            self.accepted += 1

    # ------------------------------------------------------------ taking

    def take(self, item: bytes, *, held: bool = False) -> None:
        """Count *item* as having left the channel, adopting it if its write waits still.

        *held*: the receiver took it, and holds it until it hands it to the writer.
        """
        blocked = self.blocked
        if blocked and id(item) in blocked:
            self.unblock(item)
            self.accepted += 1
        else:
            self.nb_buffered -= 1
            self.size_buffered -= len(item)
        self.taken += 1
        if held:
            if not self.unsettled_from:
                self.unsettled_from = self.taken
            self.nb_held += 1
            self.size_held += len(item)

    def take_run(self, run: list[bytes], size: int) -> None:
        """The receiver took the items of *run*, *size* bytes, at once, and holds them."""
        count = len(run)
        adopted = adopted_size = 0
        if self.blocked:  # some may come from writes whose task has not resumed yet
            blocked = self.blocked
            for item in run:
                if id(item) in blocked:
                    self.unblock(item)
                    adopted += 1
                    adopted_size += len(item)
            self.accepted += adopted
        self.nb_buffered -= count - adopted
        self.size_buffered -= size - adopted_size
        self.taken += count
        if not self.unsettled_from:
            self.unsettled_from = self.taken - count + 1
        self.nb_held += count
        self.size_held += size

    def hand_over(self, count: int, size: int) -> None:
        """The receiver hands *count* held items of *size* bytes to the writer."""
        level = self.nb_buffered + self.nb_held
        if level > self.peak:
            self.peak = level
        self.nb_held -= count
        self.size_held -= size

    def wrote(self, count: int, size: int) -> None:
        """A writer call for *count* items of *size* bytes returned."""
        self.items_written += count
        self.bytes_written += size

    def evict(self, item: bytes) -> None:
        """*item*, taken from the channel, is dropped to make room (``drop_oldest``)."""
        self.note_peak()
        self.take(item)
        self.forget_sample(self.taken)
        self.drops.add("oldest")

    def abandon(self, reason: str, in_flight: int, left: list[bytes]) -> int:
        """Count as lost: *in_flight*, the held items, and *left* (taken from the channel).

        Returns how many items that is.
        """
        self.note_peak()
        lost = in_flight + self.nb_held + len(left)
        self.nb_held = self.size_held = 0
        for item in left:
            self.take(item)
        self.unsettled_from = 0
        self.samples.clear()
        if lost:
            self.drops.add(reason, lost)
        return lost

    def note_peak(self) -> None:
        """Keep the high-water mark of the processing level.

        Writers only ever raise it, so its highs come just before the receiver (or an
        eviction) lowers it; noting it there, and in `snapshot`, spares every write.
        """
        level = self.nb_buffered + self.nb_held
        if level > self.peak:
            self.peak = level

    @property
    def settled(self) -> int:
        """The number n such that items 1..n are all settled (written, or dropped)."""
        start = self.unsettled_from
        return start - 1 if start else self.taken

    # ------------------------------------------------------------ buffered time

    def measure_handover(self, last: int) -> None:
        """The sampled items up to number *last* are being handed to the writer now."""
        samples = self.samples
        now = trio.current_time()
        while samples and samples[0][0] <= last:
            self._buffered_times.append(now - samples.popleft()[1])

    def forget_sample(self, number: int) -> None:
        """Item *number* was evicted: it never reaches the writer."""
        for index, (sampled, _) in enumerate(self.samples):
            if sampled >= number:
                if sampled == number:
                    del self.samples[index]
                return

    # ------------------------------------------------------------ reading

    def snapshot(
        self, *, is_running: bool, uptime: float, buffer_size: float, open_senders: int
    ) -> AggregatorStatistics:
        """Every count as one `AggregatorStatistics`, consistent from any thread.

        In the Trio thread (or before the first start) the counts are copied directly:
        nothing changes them under the reader. From another thread, the Trio thread is
        asked to copy them between two of its steps (`trio.lowlevel.TrioToken.run_sync_soon`)
        and the reader waits; once that Trio run is over, nothing changes them any more
        and they are copied directly. Should the Trio thread not come back to its event
        loop within `SNAPSHOT_PATIENCE` seconds (a sync writer or callback blocking it),
        they are copied directly too: it is busy elsewhere, not changing them.
        """
        copy = partial(self._copy, is_running, uptime, buffer_size, open_senders)
        token = self._token
        if token is None or threading.get_ident() == self._owner:
            return copy()
        return _copy_in_trio_thread(token, copy)

    def _copy(
        self, is_running: bool, uptime: float, buffer_size: float, open_senders: int
    ) -> AggregatorStatistics:
        # Counts that change alone, and only grow, are read before those they depend on
        # (writer_errors before writer_calls): a change between the two keeps the order.
        errors = self.writer_errors
        times = sorted(self._buffered_times)
        drops = dict(self.drops.counts)  # copied at once
        processing = self.nb_buffered + self.nb_held
        return AggregatorStatistics(
            is_running=is_running,
            uptime=uptime,
            buffer_size=buffer_size,
            nb_waiting=self.nb_waiting,
            size_waiting=self.size_waiting,
            nb_processing=processing,
            size_processing=self.size_buffered + self.size_held,
            nb_held=self.nb_held,
            peak_nb_processing=max(self.peak, processing),  # read-only: any thread
            open_senders=open_senders,
            items_accepted=self.accepted,
            items_written=self.items_written,
            bytes_written=self.bytes_written,
            writer_calls=self.writer_calls,
            writer_errors=errors,
            callback_errors=self.callback_errors,
            sync_runs=self.sync_runs,
            async_runs=self.async_runs,
            async_skipped=self.async_skipped,
            dropped_full=drops["full"],
            dropped_oldest=drops["oldest"],
            dropped_drain_timeout=drops["drain_timeout"],
            dropped_writer_error=drops["writer_error"],
            dropped=sum(drops.values()),
            buffered_time_p50=_percentile(times, 0.50),
            buffered_time_p99=_percentile(times, 0.99),
        )


def _copy_in_trio_thread(
    token: TrioToken, copy: Callable[[], AggregatorStatistics]
) -> AggregatorStatistics:
    """``copy()`` made by the Trio thread of *token*'s run, or here if that cannot be."""
    done = threading.Event()
    result: list[AggregatorStatistics | Exception] = []

    def in_trio() -> None:
        try:
            result.append(copy())
        except Exception as exc:  # raised to the reader, never into the Trio run
            result.append(exc)
        finally:
            done.set()

    try:
        token.run_sync_soon(in_trio)
    except trio.RunFinishedError:
        return copy()  # the run is over: nothing changes the counts any more
    if not done.wait(SNAPSHOT_PATIENCE):
        return copy()
    if isinstance(result[0], Exception):
        raise result[0]
    return result[0]


def _unregister(blocked: dict[int, int] | None, key: int) -> bool:
    """Take one registration of *key* from *blocked*; False if it had none."""
    if not blocked or not blocked.get(key):
        return False
    blocked[key] -= 1
    if not blocked[key]:
        del blocked[key]
    return True


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
