"""`Aggregator`: many tasks write, one task hands each write, in order, to a single writer.

How it works: writes go into a `trio.open_memory_channel` of ``buffer_size`` items.
An admission gate in front of it keeps the exact metrics, the byte budget and the
``when_full`` policy: a write that finds no room waits in a FIFO queue and is moved
into the channel by the receiver as room appears, so the channel itself never blocks
anyone. One receiver task takes items (in batches if asked) and calls the writer; the
inline periodic callback runs in that same task, between writer calls. The receiver
runs in a shielded cancel scope, so that a cancelled nursery still gets its buffered
data delivered, within ``drain_timeout``.
"""

from __future__ import annotations

import inspect
import time
from collections import deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import outcome
import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from ._config import AggregatorConfig
from ._drops import DropCounter
from ._error_log import ErrorLog
from ._errors import AggregatorClosedError, StillRunningError
from ._sender import AggregatorSender
from ._statistics import AggregatorStatistics
from ._timers import call_maybe_async, tick_every

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

    from typing_extensions import Buffer

_SAMPLE_MASK = 15
"""One accepted item in 16 has its buffered time measured."""
_SAMPLE_WINDOW = 1024
"""How many recent buffered-time samples the percentiles are computed over."""
_YIELD_EVERY = 64
"""The receiver checkpoints at least once per this many writer calls."""
_MAX_BACKOFF = 10.0
_WAKE = b""
"""Handed to a waiting receiver to wake it: empty writes are never queued, so it is no data."""


def _as_bytes(data: object) -> bytes:
    """The bytes of a write, copied where the caller could change them later."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)  # pyright: ignore[reportUnknownArgumentType]
    raise TypeError(f"write() takes bytes, bytearray or memoryview, not {type(data).__name__}")


class _Waiter:
    """A write blocked in the admission gate until the receiver makes room for it."""

    __slots__ = ("aborted", "data", "sender", "seq", "task")

    def __init__(self, data: bytes, sender: AggregatorSender | None, task: trio.lowlevel.Task):
        self.data = data
        self.sender = sender
        self.task = task
        self.seq = 0
        self.aborted = False


class _Flush:
    """One pending `Aggregator.flush`: done once every item up to ``target`` is settled."""

    __slots__ = ("event", "target", "waiters")

    def __init__(self, target: int, waiters: list[_Waiter]) -> None:
        self.target = target
        self.waiters = waiters
        self.event = trio.Event()

    def ready(self, settled: int) -> bool:
        waiters = self.waiters
        while waiters:
            last = waiters[-1]
            if last.aborted:
                waiters.pop()
            elif last.seq:
                self.target = max(self.target, last.seq)
                waiters.clear()
            else:
                return False
        return settled >= self.target


class Aggregator(trio.abc.AsyncResource):
    """Serialises writes from many tasks into one writer.

    Writes go into a `trio.open_memory_channel` of ``buffer_size`` items; one receiver
    task hands them, in order, to the writer, one call at a time. Create it from an
    `AggregatorConfig`, then `start` it in a nursery, or use `open_aggregator`. It can be
    stopped and started again; `aclose` is final.
    """

    def __init__(self, config: AggregatorConfig) -> None:
        if not isinstance(config, AggregatorConfig):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"config must be an AggregatorConfig, not {type(config).__name__}")
        self._config = config
        self._writer_is_async = config.writer_is_async
        self._writer_is_plain = not (self._writer_is_async or config.writer_thread)
        self._capacity = config.buffer_size
        self._max_bytes = config.buffer_max_bytes
        self._max_item = config.max_item_bytes
        self._when_full = config.when_full
        self._errors = ErrorLog(config.max_errors)
        self._drops = DropCounter()
        self._closed = False
        self._running = False
        self._accepting = False
        self._plain_accept = False  # accepting, and no max_item_bytes: bytes go as they are
        self._stopping = False
        self._run_number = 0
        self._last_nursery: trio.Nursery | None = None
        # Closed placeholders until the first start: nothing is accepted before it.
        self._send, self._recv = trio.open_memory_channel[bytes](0)
        self._send.close()
        self._stopped = trio.Event()
        self._stopped.set()
        self._timers_done = trio.Event()
        self._receiver_scope = trio.CancelScope()
        self._timers_scope = trio.CancelScope()
        self._park_scope: trio.CancelScope | None = None
        self._receiver_task: trio.lowlevel.Task | None = None
        self._started_at = 0.0
        self._started_monotonic = 0.0
        # Gate and buffer accounting.
        self._waiters: deque[_Waiter] = deque()
        self._size_waiting = 0
        self._nb_buf: int = 0
        self._size_buf: int = 0
        self._nb_held = 0
        self._size_held = 0
        self._peak: int = 0
        self._receiver_parked = False
        self._open_senders = 0
        # Order bookkeeping: items are numbered 1, 2, ... in the order they are accepted.
        self._accepted_total: int = 0
        self._taken_total: int = 0
        self._inflight_start = 0  # number of the oldest item the receiver holds; 0: none
        self._inflight_items = 0
        self._carry_seq = 0  # number of the item held over for the next batch
        self._flushes: list[_Flush] = []
        self._samples: deque[tuple[int, float]] = deque()
        self._buffered_times: deque[float] = deque(maxlen=_SAMPLE_WINDOW)
        # Counters.
        self._items_written = 0
        self._bytes_written = 0
        self._writer_calls = 0
        self._writer_errors = 0
        self._callback_errors = 0
        self._sync_runs = 0
        self._async_runs = 0
        self._async_skipped = 0
        self._sync_due = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def config(self) -> AggregatorConfig:
        """The configuration this aggregator was built with."""
        return self._config

    @property
    def is_running(self) -> bool:
        """Whether the aggregator accepts writes (started and not stopping)."""
        return self._accepting

    @property
    def uptime(self) -> float:
        """Seconds since the current run started; 0.0 when stopped.

        Inside Trio it is read on Trio's clock; from another thread (a metrics exporter
        calling `statistics`), on `time.monotonic`.
        """
        if not self._running:
            return 0.0
        try:
            return trio.current_time() - self._started_at
        except RuntimeError:  # not in Trio's thread
            return time.monotonic() - self._started_monotonic

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the receiver and timer tasks in *nursery*.

        Raises:
            StillRunningError: it is already running (or starting).
            AggregatorClosedError: `aclose` was called.
        """
        if self._closed:
            raise AggregatorClosedError("the aggregator was closed for good (aclose)")
        if self._running:
            raise StillRunningError("the aggregator is already running")
        send, recv = trio.open_memory_channel[bytes](self._capacity)
        self._reset_run(send, recv)
        receiver_scope = self._receiver_scope = trio.CancelScope(shield=True)
        nursery.start_soon(self._receive, send, recv, receiver_scope)
        nursery.start_soon(self._listen, self._stopped, self._run_number)
        if not self._timers_done.is_set():
            nursery.start_soon(self._run_timers)
        self._last_nursery = nursery
        # Running from here on: writes are buffered until the receiver first runs.
        await trio.lowlevel.checkpoint()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until stopped, as a Trio service: ``await nursery.start(agg.run)``.

        Returns once `stop` or `aclose` has finished (or, cancelled, once the buffer
        has been drained, within ``drain_timeout``).
        """
        async with trio.open_nursery() as nursery:
            await self.start(nursery)
            task_status.started()

    async def stop(self) -> None:
        """Stop intake, deliver everything accepted, end the timers, then return.

        Writes blocked at that moment raise `AggregatorClosedError`; senders of this run
        raise it from now on. Idempotent; the aggregator can be started again.

        Raises:
            RuntimeError: called from inside the writer, ``sync_fn`` or the dead-letter
                hook, where it would wait for itself.
        """
        if not self._running:
            await trio.lowlevel.checkpoint()
            return
        self._refuse_from_receiver("stop")
        self._begin_stop()
        await self._stopped.wait()

    async def restart(self, nursery: trio.Nursery | None = None) -> None:
        """`stop`, then `start` in *nursery* (by default the one of the last start)."""
        target = nursery or self._last_nursery
        if target is None:
            raise RuntimeError("restart() needs a nursery: this aggregator never started")
        await self.stop()
        await self.start(target)

    async def aclose(self) -> None:
        """`stop`, then close for good: `start` raises `AggregatorClosedError` after it."""
        self._closed = True
        await self.stop()

    async def wait_stopped(self) -> None:
        """Return once the aggregator is not running (at once if it is not)."""
        await self._stopped.wait()

    async def _listen(self, stopped: trio.Event, run_number: int) -> None:
        """Wait for the end of the run, only to hear of a cancelled nursery.

        The receiver is shielded, so that it can still drain the buffer when the nursery
        is cancelled; this task tells it to.
        """
        try:
            await stopped.wait()
        finally:
            if self._run_number == run_number:  # not a later run, after a restart
                self._begin_stop()

    def _reset_run(
        self, send: trio.MemorySendChannel[bytes], recv: trio.MemoryReceiveChannel[bytes]
    ) -> None:
        self._send = send
        self._recv = recv
        self._run_number += 1
        self._stopped = trio.Event()
        self._timers_done = trio.Event()
        if self._config.sync_enabled or self._config.async_enabled:
            self._timers_scope = trio.CancelScope()
        else:
            self._timers_done.set()
        self._running = self._accepting = True
        self._plain_accept = self._max_item is None
        self._stopping = False
        self._started_at = trio.current_time()
        self._started_monotonic = time.monotonic()
        self._peak = 0
        self._open_senders = 0
        self._sync_due = False

    def _begin_stop(self) -> None:
        """Close the gate, end the timers and give the receiver ``drain_timeout`` to finish."""
        if self._stopping:
            return
        self._accepting = self._plain_accept = False
        self._stopping = True
        self._reject_waiters(lambda w: True, AggregatorClosedError("the aggregator stopped"))
        self._timers_scope.cancel()
        self._receiver_scope.deadline = trio.current_time() + self._config.drain_timeout
        self._wake_receiver()

    def _end_run(
        self, send: trio.MemorySendChannel[bytes], recv: trio.MemoryReceiveChannel[bytes]
    ) -> None:
        self._accepting = self._plain_accept = False
        send.close()
        recv.close()
        self._running = False
        self._open_senders = 0
        self._drops.report()
        self._stopped.set()

    # ------------------------------------------------------------------ writing

    async def write(self, data: Buffer) -> int:
        """Queue *data* for the writer, waiting while the buffer is full.

        The data is copied, so the caller may reuse its buffer. Returns the number of
        bytes queued: 0 for empty data or a write dropped by ``when_full="drop_newest"``.

        Raises:
            TypeError: *data* is not bytes, bytearray or memoryview.
            ValueError: *data* is larger than ``max_item_bytes``.
            AggregatorClosedError: the aggregator is not running.
            trio.WouldBlock: the buffer is full and ``when_full="raise"``.
            RuntimeError: it would wait for room from inside the writer, ``sync_fn`` or
                the dead-letter hook (the task that makes room).
        """
        # The same steps as `submit`, repeated here to spare every write a coroutine.
        await checkpoint_if_cancelled()
        if type(data) is bytes and self._plain_accept:
            item = data
        else:
            item = self._accept_check(data, None)
        if item and not self._offer(item):
            return await self._no_room(item, None)
        await cancel_shielded_checkpoint()
        return len(item)

    def write_nowait(self, data: Buffer) -> int:
        """Like `write`, but raise `trio.WouldBlock` instead of waiting for room.

        Under ``when_full="drop_newest"`` or ``"drop_oldest"`` it drops as `write` does.
        """
        if type(data) is bytes and self._plain_accept:
            item = data
        else:
            item = self._accept_check(data, None)
        if item and not self._offer(item):
            return self._no_room_nowait(item)
        return len(item)

    def sender(self) -> AggregatorSender:
        """A new `AggregatorSender` for one producer task (close it when done).

        Raises:
            AggregatorClosedError: the aggregator is not running.
        """
        if not self._accepting:
            raise AggregatorClosedError("the aggregator is not running")
        return self.new_sender()

    def new_sender(self) -> AggregatorSender:
        """Make a sender over a fresh clone of the channel (used by `AggregatorSender.clone`).

        :meta private:
        """
        self._open_senders += 1
        return AggregatorSender(self, self._send.clone(), self._run_number)

    def sender_closed(self, sender: AggregatorSender) -> None:
        """Account for a closed sender and fail the writes blocked in it.

        :meta private:
        """
        if sender._run == self._run_number and self._running:  # pyright: ignore[reportPrivateUsage]
            self._open_senders -= 1
        self._reject_waiters(
            lambda w: w.sender is sender, trio.ClosedResourceError("this sender was closed")
        )

    def _accept_check(self, data: object, sender: AggregatorSender | None) -> bytes:
        if sender is not None:
            sender._check_open()  # pyright: ignore[reportPrivateUsage]
        elif not self._accepting:
            raise AggregatorClosedError("the aggregator is not running")
        item = data if type(data) is bytes else _as_bytes(data)
        if self._max_item is not None and len(item) > self._max_item:
            raise ValueError(
                f"write of {len(item)} bytes is larger than max_item_bytes={self._max_item}"
            )
        return item

    async def submit(self, data: object, sender: AggregatorSender | None) -> int:
        """The body of `AggregatorSender.send` (and of `write`, which inlines it).

        :meta private:
        """
        await checkpoint_if_cancelled()
        item = self._accept_check(data, sender)
        if item and not self._offer(item):
            return await self._no_room(item, sender)
        await cancel_shielded_checkpoint()
        return len(item)

    def submit_nowait(self, data: object, sender: AggregatorSender | None) -> int:
        """The body of `write_nowait` and `AggregatorSender.send_nowait`.

        :meta private:
        """
        item = self._accept_check(data, sender)
        if item and not self._offer(item):
            return self._no_room_nowait(item)
        return len(item)

    def _no_room_nowait(self, item: bytes) -> int:
        """A non-blocking write found no room: drop, or raise `trio.WouldBlock`."""
        if self._when_no_room(item):
            return len(item)
        if self._when_full in ("block", "raise"):
            raise trio.WouldBlock
        return 0

    async def _no_room(self, item: bytes, sender: AggregatorSender | None) -> int:
        """A write found no room: block, drop or raise, as ``when_full`` says."""
        if self._when_full == "block":
            return await self._wait_for_room(item, sender)
        if self._when_no_room(item):
            await cancel_shielded_checkpoint()
            return len(item)
        if self._when_full == "raise":
            raise trio.WouldBlock
        await cancel_shielded_checkpoint()
        return 0

    def _offer(self, item: bytes, *, first_in_line: bool = False) -> int:
        """Put *item* in now if it may go, and return its number; 0 if it may not.

        It may go when there is room for it and no blocked write is ahead of it (unless
        it is itself the oldest blocked write, *first_in_line*). A receiver waiting for
        data takes it straight away: it is then taken, not buffered.
        """
        if self._receiver_parked and (self._park_scope is None or self._receiver_waiting()):
            self._send.send_nowait(item)
            seq = self._accepted_total = self._accepted_total + 1
            self._receiver_parked = False
            self._taken_total = seq
            if not self._inflight_start:
                self._inflight_start = seq
        else:
            buffered = self._nb_buf
            if buffered >= self._capacity or (self._waiters and not first_in_line):
                return 0
            if self._max_bytes is not None and not self._bytes_fit(len(item)):
                return 0
            self._send.send_nowait(item)
            seq = self._accepted_total = self._accepted_total + 1
            self._nb_buf = buffered + 1  # its high-water mark: see `_note_peak`
            self._size_buf += len(item)
        if not seq & _SAMPLE_MASK:
            self._samples.append((seq, trio.current_time()))
        return seq

    def _receiver_waiting(self) -> bool:
        """Whether the parked receiver still waits in ``receive()`` to be handed an item.

        A lingering receiver stops waiting the moment its park scope is cancelled (by
        `_wake_receiver` or its deadline), before it runs again to lower its flag.
        """
        scope = self._park_scope
        if scope is not None and scope.cancel_called:
            self._receiver_parked = False
            return False
        return True

    def _bytes_fit(self, size: int) -> bool:
        """Whether *size* more bytes stay within ``buffer_max_bytes`` (always, when empty)."""
        assert self._max_bytes is not None
        if not (self._nb_buf or self._nb_held):
            return True
        return self._size_buf + self._size_held + size <= self._max_bytes

    def _has_room(self, size: int) -> bool:
        return (self._receiver_parked and self._receiver_waiting()) or (
            self._nb_buf < self._capacity and (self._max_bytes is None or self._bytes_fit(size))
        )

    def _when_no_room(self, item: bytes) -> bool:
        """Apply ``when_full`` (other than block) to a write that found no room.

        Returns True when the item was accepted after all (drop_oldest made room);
        a dropped item is counted here.
        """
        policy = self._when_full
        if policy == "drop_oldest":
            size = len(item)
            while self._nb_buf and not self._has_room(size):
                self._evict_oldest()
            if self._offer(item):
                return True
            self._drops.add("full")
        elif policy == "drop_newest":
            self._drops.add("full")
        return False

    async def _wait_for_room(self, item: bytes, sender: AggregatorSender | None) -> int:
        task = trio.lowlevel.current_task()
        if task is self._receiver_task:
            self._refuse_from_receiver("write")
        waiter = _Waiter(item, sender, task)
        self._waiters.append(waiter)
        self._size_waiting += len(item)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._waiters.remove(waiter)
            self._size_waiting -= len(item)
            waiter.aborted = True
            self._check_flushes()
            return trio.lowlevel.Abort.SUCCEEDED

        result: int = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    def _admit_waiters(self) -> None:
        """Move blocked writes into the channel, oldest first, while there is room."""
        waiters = self._waiters
        while waiters:
            waiter = waiters[0]
            waiter.seq = self._offer(waiter.data, first_in_line=True)
            if not waiter.seq:
                return
            waiters.popleft()
            self._size_waiting -= len(waiter.data)
            trio.lowlevel.reschedule(waiter.task, outcome.Value(len(waiter.data)))

    def _reject_waiters(self, which: Callable[[_Waiter], bool], exc: BaseException) -> None:
        for waiter in [w for w in self._waiters if which(w)]:
            self._waiters.remove(waiter)
            self._size_waiting -= len(waiter.data)
            waiter.aborted = True
            trio.lowlevel.reschedule(waiter.task, outcome.Error(exc))
        self._check_flushes()

    # ------------------------------------------------------------------ flush

    async def flush(self) -> None:
        """Return once every write accepted before this call has been settled.

        Settled means handed to the writer and that call returned (or failed for good),
        or dropped and counted. Writes already blocked waiting for room when `flush` was
        called are included. A lingering batch is written at once.

        Raises:
            AggregatorClosedError: the aggregator is not running.
            RuntimeError: called from inside the writer, ``sync_fn`` or the dead-letter
                hook, where it would wait for itself.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._accepting:
            raise AggregatorClosedError("the aggregator is not running")
        pending = _Flush(self._accepted_total, list(self._waiters))
        if pending.ready(self._settled()):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        self._refuse_from_receiver("flush")
        self._flushes.append(pending)
        self._wake_receiver()
        await pending.event.wait()

    def _refuse_from_receiver(self, what: str) -> None:
        """Fail loudly where waiting would wait for the waiting task itself."""
        if trio.lowlevel.current_task() is self._receiver_task:
            raise RuntimeError(
                f"{what}() cannot wait from inside the writer, sync_fn or the dead-letter hook:"
                " the receiver task would wait for itself"
            )

    def _settled(self) -> int:
        """The number n such that items 1..n are all settled."""
        start = self._inflight_start
        return start - 1 if start else self._taken_total

    def _check_flushes(self) -> None:
        if self._flushes:
            settled = self._settled()
            pending: list[_Flush] = []
            for flush in self._flushes:
                if flush.ready(settled):
                    flush.event.set()
                else:
                    pending.append(flush)
            self._flushes = pending

    # ------------------------------------------------------------------ receiver

    def _wake_receiver(self) -> None:
        """Make a waiting receiver look at its flags (stop, flush, timer) again."""
        if self._park_scope is not None:
            self._park_scope.cancel()  # aborts its receive() at once
            self._receiver_parked = False
        elif self._receiver_parked:
            self._receiver_parked = False
            self._send.send_nowait(_WAKE)  # handed straight to the receiver: never buffered

    async def _receive(
        self,
        send: trio.MemorySendChannel[bytes],
        recv: trio.MemoryReceiveChannel[bytes],
        scope: trio.CancelScope,
    ) -> None:
        """The receiver task: consume until stopped and drained, then end the run."""
        self._receiver_task = trio.lowlevel.current_task()
        clean = False
        try:
            with scope:
                await self._consume(recv)
                clean = True
        finally:
            self._begin_stop()  # if the receiver died: close the gate, end the timers
            if not clean:
                reason = "drain_timeout" if scope.cancelled_caught else "writer_error"
                self._abandon(recv, reason)
            if not self._timers_done.is_set():
                with trio.CancelScope(shield=True):
                    await self._timers_done.wait()
            self._end_run(send, recv)

    def _abandon(self, recv: trio.MemoryReceiveChannel[bytes], reason: str) -> None:
        """Count what the receiver will never deliver: held, in flight, and still buffered."""
        self._note_peak()
        lost = self._inflight_items + self._nb_held
        self._inflight_items = self._nb_held = self._size_held = 0
        while True:
            try:
                recv.receive_nowait()
            except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
                break
            lost += 1
        self._nb_buf = self._size_buf = 0
        self._taken_total = self._accepted_total
        self._inflight_start = 0
        self._samples.clear()
        if lost:
            self._drops.add(reason, lost)
            self._errors.record(
                RuntimeError(f"{lost} item(s) were not delivered ({reason})"), "stop"
            )
        self._check_flushes()

    def _note_peak(self) -> None:
        """Keep the high-water mark of `nb_processing`.

        Writers only ever raise it, so its highs come just before the receiver (or an
        eviction) lowers it; noting it there, and in `statistics`, spares every write.
        """
        level = self._nb_buf + self._nb_held
        if level > self._peak:
            self._peak = level

    def _evict_oldest(self) -> None:
        """drop_oldest: discard the oldest buffered item (a producer calls this)."""
        self._note_peak()
        item = self._recv.receive_nowait()
        self._nb_buf -= 1
        self._size_buf -= len(item)
        seq = self._taken_total = self._taken_total + 1
        for index, (sampled, _) in enumerate(self._samples):  # it never reaches the writer
            if sampled >= seq:
                if sampled == seq:
                    del self._samples[index]
                break
        self._drops.add("oldest")
        self._check_flushes()

    def _take_waiter(self) -> bytes:
        """Take the oldest blocked write directly (the channel is empty)."""
        waiter = self._waiters.popleft()
        item = waiter.data
        self._size_waiting -= len(item)
        seq = self._accepted_total = self._accepted_total + 1
        waiter.seq = self._taken_total = seq
        if not self._inflight_start:
            self._inflight_start = seq
        trio.lowlevel.reschedule(waiter.task, outcome.Value(len(item)))
        return item

    def _take(self, recv: trio.MemoryReceiveChannel[bytes]) -> bytes:
        """The oldest buffered item, or else the oldest blocked write (there is one)."""
        if not self._nb_buf:  # exact, and cheaper than a receive_nowait that raises
            return self._take_waiter()
        self._note_peak()
        item = recv.receive_nowait()
        self._nb_buf -= 1
        self._size_buf -= len(item)
        self._taken_total += 1
        if not self._inflight_start:
            self._inflight_start = self._taken_total
        if self._waiters:
            self._admit_waiters()
        return item

    async def _wait_item(
        self, recv: trio.MemoryReceiveChannel[bytes], deadline: float
    ) -> bytes | None:
        """Wait, until *deadline*, for an item handed over by a writer (accounted by `_put`).

        Returns None when woken (stop, flush, timer: `_wake_receiver`) or timed out; used
        for lingering batches only.
        """
        if self._stopping or self._sync_due or self._flushes or deadline <= trio.current_time():
            return None
        with trio.CancelScope(deadline=deadline) as park:
            self._park_scope = park
            self._receiver_parked = True
            try:
                return await recv.receive()
            finally:
                self._receiver_parked = False
                self._park_scope = None
        return None

    async def _consume(self, recv: trio.MemoryReceiveChannel[bytes]) -> None:
        """The receiver's loop; the per-item path is kept flat on purpose (it is the hot one)."""
        config = self._config
        writer = config.writer
        plain = self._writer_is_plain
        batching = config.batch_max_items > 1 or not config.batch_join
        always_gather = config.batch_linger > 0 or not config.batch_join
        isawaitable = inspect.isawaitable
        budget = _YIELD_EVERY
        carry: bytes | None = None
        while True:
            if self._sync_due:
                await self._run_sync_fn()
            if carry is not None:
                item = carry
                carry = None
            elif self._nb_buf or self._waiters:
                item = self._take(recv)
            elif self._stopping or self._sync_due:
                if self._stopping:
                    return
                continue
            else:
                # Wait for a writer to hand an item over (`_put` accounts for it). No cancel
                # scope on this hot path: `_wake_receiver` hands over an empty item instead.
                self._receiver_parked = True
                try:
                    item = await recv.receive()
                finally:
                    self._receiver_parked = False
                if not item:
                    self._check_flushes()
                    continue
            payload: bytes | list[bytes] = item
            count, nbytes = 1, len(item)
            if batching and (always_gather or self._nb_buf or self._waiters):
                batch, nbytes, carry = await self._gather(recv, item)
                count = len(batch)
                if carry is None:
                    self._nb_held = self._size_held = 0
                else:
                    self._nb_held, self._size_held = 1, len(carry)
                if self._waiters:
                    self._admit_waiters()
                if not config.batch_join:
                    payload = batch
                elif count > 1:
                    payload = b"".join(batch)
            elif self._nb_held:  # a carried item, going alone
                self._nb_held = self._size_held = 0
            if self._samples:
                self._sample_handover(carry)
            self._inflight_items = count
            self._writer_calls += 1
            try:
                if plain:
                    result = writer(payload)
                    if result is not None and isawaitable(result):
                        await result
                else:
                    await self._call_writer(payload)
            except Exception as exc:
                if not await self._retry(payload, exc):
                    self._inflight_items = 0
                    self._drops.add("writer_error", count)
                    try:
                        await self._writer_failed(payload, exc)
                    finally:
                        self._settle(carry)  # a flush waits for the dead-letter hook too
                    continue
            self._inflight_items = 0
            self._items_written += count
            self._bytes_written += nbytes
            if carry is None and not self._flushes:
                self._inflight_start = 0
            else:
                self._settle(carry)
            budget -= 1
            if not budget:
                budget = _YIELD_EVERY
                await trio.lowlevel.checkpoint()

    async def _gather(
        self, recv: trio.MemoryReceiveChannel[bytes], first: bytes
    ) -> tuple[list[bytes], int, bytes | None]:
        """A batch starting with *first*: what is buffered, plus what arrives while lingering.

        Returns the batch, its size in bytes, and the item taken that did not fit in
        ``batch_max_bytes`` (held over for the next batch), if any.
        """
        config = self._config
        max_items = config.batch_max_items
        max_bytes = config.batch_max_bytes
        batch = [first]
        nbytes = self._size_held = len(first)
        self._nb_held = 1
        deadline = trio.current_time() + config.batch_linger if config.batch_linger else 0.0
        item: bytes | None
        while len(batch) < max_items:
            if self._nb_buf and max_bytes is None:
                # The usual case, kept tight: take a run of buffered items, count it once.
                self._note_peak()
                count = min(max_items - len(batch), self._nb_buf)
                receive = recv.receive_nowait
                run = [receive() for _ in range(count)]
                size = sum(map(len, run))
                batch += run
                nbytes += size
                self._nb_buf -= count
                self._size_buf -= size
                self._taken_total += count
                self._hold(count, size)
                continue
            if self._nb_buf or self._waiters:
                item = self._take(recv)
            elif not deadline:
                break
            else:
                item = await self._wait_item(recv, deadline)
                if item is None:
                    break
            if max_bytes is not None and nbytes + len(item) > max_bytes:
                self._carry_seq = self._taken_total  # its number: it was taken last
                return batch, nbytes, item
            batch.append(item)
            nbytes += len(item)
            self._hold(1, len(item))
        return batch, nbytes, None

    def _hold(self, count: int, size: int) -> None:
        """Count items taken into a batch that is not handed to the writer yet."""
        self._nb_held += count
        self._size_held += size
        self._note_peak()
        if self._waiters:
            self._admit_waiters()

    async def _call_writer(self, payload: bytes | list[bytes]) -> None:
        """One call of the writer, whatever its kind."""
        config = self._config
        if config.writer_thread:
            await trio.to_thread.run_sync(config.writer, payload)
        elif self._writer_is_async:
            await cast("Awaitable[object]", config.writer(payload))
        else:
            result = config.writer(payload)
            if result is not None and inspect.isawaitable(result):
                await result

    async def _retry(self, payload: bytes | list[bytes], exc: Exception) -> bool:
        """Record a failed writer call, then retry it with backoff; True once one succeeds."""
        retries = self._config.writer_retries
        backoff = self._config.writer_retry_backoff
        while True:
            self._writer_errors += 1
            self._errors.record(exc, "writer")
            if not retries:
                return False
            retries -= 1
            await trio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)
            self._writer_calls += 1
            try:
                await self._call_writer(payload)
            except Exception as again:
                exc = again
            else:
                return True

    async def _writer_failed(self, payload: bytes | list[bytes], exc: Exception) -> None:
        """Apply ``on_writer_error`` to a batch whose writer call failed for good."""
        policy = self._config.on_writer_error
        if policy == "raise":
            raise exc
        if callable(policy):
            try:
                result = policy(payload, exc)
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception as hook_exc:
                self._callback_errors += 1
                self._errors.record(hook_exc, "on_writer_error hook")

    def _settle(self, carry: bytes | None) -> None:
        """After a writer call: what is settled now, and the flushes that waited for it."""
        self._inflight_start = self._carry_seq if carry is not None else 0
        if self._flushes:
            self._check_flushes()

    def _sample_handover(self, carry: bytes | None) -> None:
        """Measure how long the sampled items about to go to the writer were buffered."""
        now = trio.current_time()
        samples = self._samples
        limit = self._taken_total if carry is None else self._carry_seq - 1
        while samples and samples[0][0] <= limit:
            self._buffered_times.append(now - samples.popleft()[1])

    # ------------------------------------------------------------------ callbacks

    async def _run_sync_fn(self) -> None:
        self._sync_due = False
        fn = self._config.sync_fn
        assert fn is not None
        self._sync_runs += 1
        try:
            await call_maybe_async(fn, self._config.sync_fn_is_async)
        except Exception as exc:
            self._callback_errors += 1
            self._errors.record(exc, "sync_fn")

    def _sync_tick(self) -> None:
        self._sync_due = True
        self._wake_receiver()

    async def _run_timers(self) -> None:
        config = self._config
        try:
            await self._tick_until_stopped(config)
        finally:
            self._timers_done.set()

    async def _tick_until_stopped(self, config: AggregatorConfig) -> None:
        with self._timers_scope:
            async with trio.open_nursery() as nursery:
                if config.sync_enabled:
                    nursery.start_soon(tick_every, config.sync_interval, self._sync_tick)
                if config.async_enabled:
                    limiter = trio.CapacityLimiter(config.async_limit)

                    def async_tick() -> None:
                        token = object()
                        try:
                            limiter.acquire_on_behalf_of_nowait(token)
                        except trio.WouldBlock:
                            self._async_skipped += 1
                            return
                        self._async_runs += 1
                        nursery.start_soon(self._run_async_fn, limiter, token)

                    nursery.start_soon(tick_every, config.async_interval, async_tick)

    async def _run_async_fn(self, limiter: trio.CapacityLimiter, token: object) -> None:
        fn = self._config.async_fn
        assert fn is not None
        try:
            await call_maybe_async(fn, self._config.async_fn_is_async)
        except Exception as exc:
            self._callback_errors += 1
            self._errors.record(exc, "async_fn")
        finally:
            limiter.release_on_behalf_of(token)

    # ------------------------------------------------------------------ metrics

    @property
    def nb_waiting(self) -> int:
        """Writes blocked because the buffer is full."""
        return len(self._waiters)

    @property
    def size_waiting(self) -> int:
        """Bytes of the blocked writes."""
        return self._size_waiting

    @property
    def nb_processing(self) -> int:
        """Items accepted and not yet handed to the writer."""
        return self._nb_buf + self._nb_held

    @property
    def size_processing(self) -> int:
        """Bytes of the items counted in `nb_processing`."""
        return self._size_buf + self._size_held

    @property
    def last_error(self) -> Exception | None:
        """The most recent error of the writer or a callback, or None."""
        return self._errors.last

    @property
    def errors(self) -> tuple[Exception, ...]:
        """The recent errors, oldest first (at most ``max_errors``)."""
        return self._errors.all

    def statistics(self) -> AggregatorStatistics:
        """A consistent snapshot of every metric and counter."""
        times = sorted(self._buffered_times)
        drops = self._drops.counts
        return AggregatorStatistics(
            is_running=self._accepting,
            uptime=self.uptime,
            buffer_size=self._capacity,
            nb_waiting=len(self._waiters),
            size_waiting=self._size_waiting,
            nb_processing=self.nb_processing,
            size_processing=self.size_processing,
            peak_nb_processing=max(self._peak, self.nb_processing),  # read-only: any thread
            open_senders=self._open_senders,
            items_accepted=self._accepted_total,
            items_written=self._items_written,
            bytes_written=self._bytes_written,
            writer_calls=self._writer_calls,
            writer_errors=self._writer_errors,
            callback_errors=self._callback_errors,
            sync_runs=self._sync_runs,
            async_runs=self._async_runs,
            async_skipped=self._async_skipped,
            dropped_full=drops["full"],
            dropped_oldest=drops["oldest"],
            dropped_drain_timeout=drops["drain_timeout"],
            dropped_writer_error=drops["writer_error"],
            dropped=self._drops.total,
            buffered_time_p50=_percentile(times, 0.50),
            buffered_time_p99=_percentile(times, 0.99),
        )


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@asynccontextmanager
async def open_aggregator(
    nursery: trio.Nursery, config: AggregatorConfig
) -> AsyncGenerator[Aggregator, None]:
    """Run an `Aggregator` in *nursery* for the duration of the ``async with`` block.

    On exit, normal, by exception or by cancellation, it is closed with a full drain
    (bounded by ``drain_timeout``)::

        async with trio.open_nursery() as nursery:
            async with open_aggregator(nursery, config) as agg:
                await agg.write(b"hello\\n")
    """
    aggregator = Aggregator(config)
    await aggregator.start(nursery)
    try:
        yield aggregator
    finally:
        with trio.CancelScope(shield=True):
            await aggregator.aclose()


async def connect_aggregator(nursery: trio.Nursery, config: AggregatorConfig) -> Aggregator:
    """Start an `Aggregator` in *nursery* and return it; the caller must `Aggregator.aclose` it."""
    aggregator = Aggregator(config)
    await aggregator.start(nursery)
    return aggregator
