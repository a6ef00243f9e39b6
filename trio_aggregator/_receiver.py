"""`Receiver`: the one task that takes items from the channel and hands them to the writer.

It takes what is buffered with ``receive_nowait`` (a batch, when batching), waits with
``receive`` when there is nothing, and ends on `trio.EndOfChannel`, which the channel
raises once every send end is closed and everything buffered was taken. ``sync_fn``
runs in this task, between two writer calls.
"""

from __future__ import annotations

import contextlib
from inspect import isawaitable
from typing import TYPE_CHECKING

import trio

from ._lowlevel import checkpoint
from ._timers import call_maybe_async
from ._writer_call import WriterCall

if TYPE_CHECKING:
    from ._budget import ByteBudget
    from ._config import AggregatorConfig
    from ._flushes import Flushes
    from ._ledger import Ledger
    from ._writer_call import Payload

YIELD_EVERY = 64
"""The receiver checkpoints at least once per this many writer calls."""


class Receiver:
    """Takes batches from the memory channel and delivers them, in order, one call at a time."""

    __slots__ = (
        "_batch",
        "_batch_bytes",
        "_budget",
        "_carry",
        "_carry_number",
        "_config",
        "_flushes",
        "_in_flight",
        "_join",
        "_ledger",
        "_max_bytes",
        "_max_items",
        "_plain_writer",
        "_recv",
        "_waker",
        "_writer",
        "sync_due",
    )

    def __init__(
        self,
        config: AggregatorConfig,
        ledger: Ledger,
        channel: tuple[trio.MemorySendChannel[bytes], trio.MemoryReceiveChannel[bytes]],
        *,
        budget: ByteBudget | None,
        flushes: Flushes,
    ) -> None:
        self._config = config
        self._ledger = ledger
        self._waker, self._recv = channel
        self._budget = budget
        self._flushes = flushes
        self._writer = WriterCall(config, ledger)
        self._max_items = config.batch_max_items
        self._join = config.batch_join
        plain = not (config.writer_is_async or config.writer_thread)
        self._plain_writer = config.writer if plain else None
        self._max_bytes = config.batch_max_bytes
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._carry: bytes | None = None  # taken, but did not fit in batch_max_bytes
        self._carry_number = 0  # its number (evictions may have taken later ones since)
        self._in_flight = 0
        self.sync_due = False
        """Set by the ``sync_fn`` timer; the receiver runs it before its next batch."""

    async def run(self) -> None:
        """Deliver until every send end is closed and the channel is drained."""
        ledger = self._ledger
        linger = self._config.batch_linger
        budget = YIELD_EVERY
        try:
            while True:
                if self.sync_due:
                    await self._run_sync_fn()
                if self._carry is not None or ledger.nb_buffered or ledger.blocked:
                    self._take_buffered()
                if not self._batch and not await self._wait_for_data():
                    continue
                if linger and not self._done_gathering():
                    await self._linger()
                await self._deliver()
                budget -= 1
                if not budget:
                    budget = YIELD_EVERY
                    await checkpoint()
        except trio.EndOfChannel:
            return

    async def _wait_for_data(self) -> bool:
        """Wait for the next item, then take what came with it; False when woken without."""
        item = await self._recv.receive()
        if not item:  # woken: a timer tick or a flush
            self._flushes.check()
            return False
        ledger = self._ledger
        ledger.take(item, held=True)  # the batch is empty: nothing to carry over
        self._batch.append(item)
        self._batch_bytes = len(item)
        if self._max_items > 1 and (ledger.nb_buffered or ledger.blocked):
            self._take_buffered()
        return True

    def wake(self) -> None:
        """Make a receiver that waits for data look at ``sync_due`` and the flushes again."""
        if self._recv.statistics().tasks_waiting_receive:
            # Handed straight to the waiting receiver: an empty item is never data.
            with contextlib.suppress(trio.ClosedResourceError):
                self._waker.send_nowait(b"")

    def request_sync(self) -> None:
        """The ``sync_fn`` timer ticked: run it between two writer calls."""
        self.sync_due = True
        self.wake()

    # ------------------------------------------------------------ gathering

    def _add(self, item: bytes) -> None:
        """Count *item* as taken, and put it in the batch, or carry it to the next one."""
        ledger = self._ledger
        ledger.take(item, held=True)
        max_bytes = self._max_bytes
        if self._batch and max_bytes is not None and self._batch_bytes + len(item) > max_bytes:
            self._carry = item
            self._carry_number = ledger.taken
        else:
            self._batch.append(item)
            self._batch_bytes += len(item)

    def _take_buffered(self) -> None:
        """Take what is buffered into the batch, up to its limits.

        A new batch starts with the item carried over from the last one, if any (a
        carried item only exists once its batch is gone).
        """
        if self._carry is not None and not self._batch:
            self._batch.append(self._carry)
            self._batch_bytes = len(self._carry)
            self._carry = None
        room = self._max_items - len(self._batch)
        if room <= 0:
            return
        if room == 1 and self._max_bytes is None:  # the per-item case, kept lean
            try:
                item = self._recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            self._batch.append(item)
            self._batch_bytes += len(item)
            self._ledger.take(item, held=True)
            return
        if self._max_bytes is None:
            ledger = self._ledger
            # With no write waiting, every item in the channel is counted as buffered.
            available = self._in_channel() if ledger.blocked else ledger.nb_buffered
            self._take_run(min(room, available))
            return
        receive = self._recv.receive_nowait
        while room > 0 and self._carry is None:
            try:
                item = receive()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            self._add(item)
            room -= 1

    def _in_channel(self) -> int:
        """How many items can be taken now while writes wait: Trio's count, since each
        item taken moves a blocked send into the buffer."""
        stats = self._recv.statistics()
        return stats.current_buffer_used + stats.tasks_waiting_send

    def _take_run(self, count: int) -> None:
        """Take up to *count* items at once (fewer if the channel has fewer)."""
        if count <= 0:
            return
        receive = self._recv.receive_nowait
        run: list[bytes] = []
        with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel):
            for _ in range(count):
                run.append(receive())
        if not run:
            return
        size = sum(map(len, run))
        self._batch += run
        self._batch_bytes += size
        self._ledger.take_run(run, size)

    def _done_gathering(self) -> bool:
        return (
            len(self._batch) >= self._max_items
            or self._carry is not None
            or self.sync_due
            or bool(self._flushes.pending)
        )

    async def _linger(self) -> None:
        """Wait up to ``batch_linger`` for more items; a flush, a tick or a stop cuts it."""
        with trio.move_on_after(self._config.batch_linger):
            while not self._done_gathering():
                try:
                    item = await self._recv.receive()
                except trio.EndOfChannel:
                    return  # stopping: deliver what there is; the next wait ends the run
                if not item:
                    return
                self._add(item)
                self._take_buffered()

    # ------------------------------------------------------------ delivering

    async def _deliver(self) -> None:
        payload, count, nbytes = self._hand_over()
        self._in_flight = count
        self._ledger.writer_calls += 1
        try:
            if self._plain_writer is not None:  # the usual case, kept inline
                result = self._plain_writer(payload)
                if result is not None and isawaitable(result):
                    await result
            else:
                await self._writer.call(payload)
        except Exception as exc:
            await self._failed(payload, nbytes, exc)
        else:
            self._in_flight = 0
            self._ledger.wrote(count, nbytes)
        self._ledger.unsettled_from = self._carry_number if self._carry is not None else 0
        if self._flushes.pending:
            self._flushes.check()

    def _hand_over(self) -> tuple[Payload, int, int]:
        """Take the batch out of the held count: the payload, its items and bytes."""
        batch, nbytes = self._batch, self._batch_bytes
        count = len(batch)
        self._batch, self._batch_bytes = [], 0
        ledger = self._ledger
        ledger.hand_over(count, nbytes)
        if self._budget is not None:
            self._budget.release(nbytes)
        samples = ledger.samples
        if samples and samples[0][0] <= ledger.taken:
            carried = self._carry is not None
            ledger.measure_handover(self._carry_number - 1 if carried else ledger.taken)
        if not self._join:
            return batch, count, nbytes
        return (batch[0] if count == 1 else b"".join(batch)), count, nbytes

    async def _failed(self, payload: Payload, nbytes: int, exc: Exception) -> None:
        """The writer call raised: retry it, or count the batch lost and dead-letter it."""
        count = self._in_flight
        error = await self._writer.retry(payload, exc)
        self._in_flight = 0
        ledger = self._ledger
        if error is None:
            ledger.wrote(count, nbytes)
        else:
            ledger.drops.add("writer_error", count)
            await self._writer.dead_letter(payload, error)  # a flush waits for it too

    async def _run_sync_fn(self) -> None:
        self.sync_due = False
        fn = self._config.sync_fn
        assert fn is not None
        ledger = self._ledger
        ledger.sync_runs += 1
        try:
            await call_maybe_async(fn, self._config.sync_fn_is_async)
        except Exception as exc:
            ledger.callback_errors += 1
            ledger.errors.record(exc, "sync_fn")

    def abandon(self, reason: str) -> None:
        """Count what will never be delivered: in flight, held, and left in the channel."""
        ledger = self._ledger
        left: list[bytes] = []
        while True:
            try:
                item = self._recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if item:
                left.append(item)
        lost = ledger.abandon(reason, self._in_flight, left)
        self._in_flight = 0
        self._batch, self._batch_bytes, self._carry = [], 0, None
        if lost:
            ledger.errors.record(
                RuntimeError(f"{lost} item(s) were not delivered ({reason})"), "stop"
            )
        self._flushes.check()
