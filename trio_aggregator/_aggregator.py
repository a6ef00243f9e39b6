"""`Aggregator`: many tasks write, one task hands each write, in order, to a single writer.

The aggregator is a facade over its current `Run` (the memory channel and the tasks
around it) and its `Ledger` (every count, kept across runs).
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from ._config import AggregatorConfig
from ._errors import AggregatorClosedError, StillRunningError
from ._intake import as_bytes
from ._ledger import Ledger
from ._lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled
from ._run import Run, RunState
from ._sender import AggregatorSender
from ._threads import run_in_trio, run_sync_in_trio, trio_token_for

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from typing_extensions import Buffer

    from ._statistics import AggregatorStatistics


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
        self._ledger = Ledger(config)
        self._run = Run.never_started(config, self._ledger)
        self._closed = False
        self._last_nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def config(self) -> AggregatorConfig:
        """The configuration this aggregator was built with."""
        return self._config

    @property
    def is_running(self) -> bool:
        """Whether the aggregator accepts writes (started and not stopping)."""
        return self._run.state is RunState.RUNNING

    @property
    def uptime(self) -> float:
        """Seconds since the current run started; 0.0 when stopped.

        Inside Trio it is read on Trio's clock; from another thread (a metrics exporter
        calling `statistics`), on `time.monotonic`.
        """
        run = self._run
        if run.state is RunState.STOPPED:
            return 0.0
        try:
            return trio.current_time() - run.started_at
        except RuntimeError:  # not in Trio's thread
            return time.monotonic() - run.started_monotonic

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the receiver and timer tasks in *nursery*.

        Raises:
            StillRunningError: it is already running (or stopping).
            AggregatorClosedError: `aclose` was called.
            RuntimeError: *nursery* is closed (the aggregator stays stopped).
        """
        if self._closed:
            raise AggregatorClosedError("the aggregator was closed for good (aclose)")
        if self._run.state is not RunState.STOPPED:
            raise StillRunningError("the aggregator is already running")
        run = Run(self._config, self._ledger)
        run.start(nursery)
        self._run = run
        self._last_nursery = nursery
        # Running from here on: writes are buffered until the receiver first runs.
        await checkpoint()

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
            RuntimeError: called from a thread other than the aggregator's Trio thread,
                or from inside the writer, ``sync_fn`` or the dead-letter hook, where it
                would wait for itself.
        """
        run = self._run
        run.intake.check_thread("Aggregator.stop")
        if run.state is RunState.STOPPED:
            await checkpoint()
            return
        run.guard.refuse("stop")
        run.begin_stop()
        await run.stopped.wait()

    async def restart(self, nursery: trio.Nursery | None = None) -> None:
        """`stop`, then `start` in *nursery* (by default the one of the last start)."""
        self._run.intake.check_thread("Aggregator.restart")
        target = nursery or self._last_nursery
        if target is None:
            raise RuntimeError("restart() needs a nursery: this aggregator never started")
        await self.stop()
        await self.start(target)

    async def aclose(self) -> None:
        """`stop`, then close for good: `start` raises `AggregatorClosedError` after it."""
        self._run.intake.check_thread("Aggregator.aclose")
        self._closed = True
        await self.stop()

    async def wait_stopped(self) -> None:
        """Return once the aggregator is not running (at once if it is not)."""
        run = self._run
        run.intake.check_thread("Aggregator.wait_stopped")
        await run.stopped.wait()

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
            RuntimeError: called from a thread other than the aggregator's Trio thread
                (use `write_from_thread` there), or it would wait for room from inside
                the writer, ``sync_fn`` or the dead-letter hook (the task that makes
                room).
        """
        run = self._run
        return await run.intake.put(run.send, data)

    def write_nowait(self, data: Buffer) -> int:
        """Like `write`, but raise `trio.WouldBlock` instead of waiting for room.

        Under ``when_full="drop_newest"`` or ``"drop_oldest"`` it drops as `write` does.
        From a thread other than the aggregator's Trio thread it raises `RuntimeError`:
        use `write_from_thread_nowait` there.
        """
        run = self._run
        return run.intake.put_nowait(run.send, data)

    def sender(self) -> AggregatorSender:
        """A new `AggregatorSender` for one producer task (close it when done).

        Raises:
            AggregatorClosedError: the aggregator is not running.
            RuntimeError: called from a thread other than the aggregator's Trio thread.
        """
        return AggregatorSender(self._run.intake)

    # ------------------------------------------------------------------ other threads

    def write_from_thread(self, data: Buffer) -> int:
        """`write`, from a thread other than the aggregator's Trio thread.

        Blocks the calling thread until the write is accepted (or dropped by
        ``when_full``) and returns what `write` returns. The same copy, type and size
        rules apply; the data is copied before this call blocks. Each thread's writes
        keep their order. Any thread will do, `trio.to_thread` workers included (the
        write is not cancelled with the worker's caller: it runs in the run's system
        nursery).

        Raises:
            AggregatorClosedError: the aggregator is not running, or its Trio run has
                ended.
            RuntimeError: called from the aggregator's Trio thread (use `write` there),
                or it would wait for room from inside a writer run in a worker thread
                (``writer_thread``), which the aggregator waits for.
            TypeError, ValueError, trio.WouldBlock: as `write`.
        """
        item = as_bytes(data)
        run = self._run
        token = trio_token_for(run.token, run.thread, "write_from_thread", "await write()")
        return run_in_trio(token, self._write_in_trio, item)

    def write_from_thread_nowait(self, data: Buffer) -> int:
        """`write_nowait`, from a thread other than the aggregator's Trio thread.

        Never waits for room: raises `trio.WouldBlock` when the buffer is full, or drops
        as ``when_full`` says. It does wait for the event loop to run the write (so the
        answer is known when it returns).

        Raises:
            AggregatorClosedError: the aggregator is not running, or its Trio run has
                ended.
            RuntimeError: called from the aggregator's Trio thread (use `write_nowait`).
            TypeError, ValueError, trio.WouldBlock: as `write_nowait`.
        """
        item = as_bytes(data)
        run = self._run
        token = trio_token_for(run.token, run.thread, "write_from_thread_nowait", "write_nowait()")
        return run_sync_in_trio(token, self._write_nowait_in_trio, item)

    async def _write_in_trio(self, item: bytes) -> int:
        run = self._run  # the current run: it may have been restarted meanwhile
        return await run.intake.put(run.send, item)

    def _write_nowait_in_trio(self, item: bytes) -> int:
        run = self._run
        return run.intake.put_nowait(run.send, item)

    async def flush(self) -> None:
        """Return once every write accepted before this call has been settled.

        Settled means handed to the writer and that call returned (or failed for good),
        or dropped and counted. Writes already blocked waiting for room when `flush` was
        called are included. A lingering batch is written at once.

        Raises:
            AggregatorClosedError: the aggregator is not running.
            RuntimeError: called from a thread other than the aggregator's Trio thread,
                or from inside the writer, ``sync_fn`` or the dead-letter hook, where it
                would wait for itself.
        """
        run = self._run
        run.intake.check_thread("Aggregator.flush")
        await checkpoint_if_cancelled()
        if run.state is not RunState.RUNNING:
            raise AggregatorClosedError("the aggregator is not running")
        if run.flushes.is_settled():
            await cancel_shielded_checkpoint()
            return
        run.guard.refuse("flush")
        done = run.flushes.add()
        run.receiver.wake()
        await done.wait()

    # ------------------------------------------------------------------ metrics

    @property
    def nb_waiting(self) -> int:
        """Writes blocked because the buffer is full."""
        return self._ledger.nb_waiting

    @property
    def size_waiting(self) -> int:
        """Bytes of the blocked writes."""
        return self._ledger.size_waiting

    @property
    def nb_processing(self) -> int:
        """Items accepted and not yet handed to the writer."""
        return self._ledger.nb_buffered + self._ledger.nb_held

    @property
    def size_processing(self) -> int:
        """Bytes of the items counted in `nb_processing`."""
        return self._ledger.size_buffered + self._ledger.size_held

    @property
    def last_error(self) -> Exception | None:
        """The most recent error of the writer or a callback, or None."""
        return self._ledger.errors.last

    @property
    def errors(self) -> tuple[Exception, ...]:
        """The recent errors, oldest first (at most ``max_errors``)."""
        return self._ledger.errors.all

    def statistics(self) -> AggregatorStatistics:
        """A consistent snapshot of every metric and counter, safe from any thread.

        From another thread, the Trio thread makes the copy between two of its steps
        and the caller waits for it (a round trip through the event loop); the write
        path pays nothing for it.
        """
        return self._ledger.snapshot(
            is_running=self.is_running,
            uptime=self.uptime,
            buffer_size=self._config.buffer_size,
            open_senders=len(self._run.intake.clones),
        )


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
