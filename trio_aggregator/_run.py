"""`Run`: one run of an aggregator, from `Aggregator.start` to the end of its drain.

A run owns a fresh memory channel and the tasks around it: the receiver (shielded, so a
cancelled nursery still gets the buffer delivered, within ``drain_timeout``), a watcher
that hears the nursery's cancellation, and the timers. Stopping closes every send end:
blocked writes fail, the receiver drains what was accepted and ends on
`trio.EndOfChannel`.
"""

from __future__ import annotations

import enum
import time
from typing import TYPE_CHECKING

import trio

from ._budget import ByteBudget
from ._flushes import Flushes
from ._intake import Intake
from ._lowlevel import ReceiverGuard, current_trio_token, enable_ki_protection
from ._receiver import Receiver
from ._threads import get_ident
from ._timers import run_timers

if TYPE_CHECKING:
    from ._config import AggregatorConfig
    from ._ledger import Ledger
    from ._lowlevel import TrioToken


class RunState(enum.Enum):
    """Where a run is in its life; it only moves forward."""

    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Run:
    """The channel, tasks and scopes of one run."""

    __slots__ = (
        "_config",
        "_ledger",
        "_receiver_scope",
        "_timers_done",
        "_timers_scope",
        "flushes",
        "guard",
        "intake",
        "receiver",
        "send",
        "started_at",
        "started_monotonic",
        "state",
        "stopped",
        "thread",
        "token",
    )

    def __init__(self, config: AggregatorConfig, ledger: Ledger) -> None:
        self._config = config
        self._ledger = ledger
        channel = trio.open_memory_channel[bytes](config.buffer_size)
        self.send = channel[0]
        """The aggregator's own send end, which `Aggregator.write` sends on."""
        max_bytes = config.buffer_max_bytes
        budget = ByteBudget(max_bytes) if max_bytes is not None else None
        self.flushes = Flushes(ledger)
        self.guard = ReceiverGuard()
        self.intake = Intake(
            config, ledger, channel, budget=budget, flushes=self.flushes, guard=self.guard
        )
        self.receiver = Receiver(config, ledger, channel, budget=budget, flushes=self.flushes)
        self.state = RunState.RUNNING
        self.stopped = trio.Event()
        self._timers_done = trio.Event()
        self._receiver_scope = trio.CancelScope(shield=True)
        self._timers_scope = trio.CancelScope()
        self.started_at = self.started_monotonic = 0.0
        self.thread: int | None = None
        """The id of the thread that runs Trio (None before `start`)."""
        self.token: TrioToken | None = None
        """The `trio.lowlevel.TrioToken` of the Trio run (None before `start`)."""

    @classmethod
    def never_started(cls, config: AggregatorConfig, ledger: Ledger) -> Run:
        """A stopped run, for an aggregator that was never started."""
        run = cls(config, ledger)
        run.intake.close()
        run.state = RunState.STOPPED
        run.stopped.set()
        return run

    def start(self, nursery: trio.Nursery) -> None:
        """Spawn the run's tasks in *nursery* (raises as `trio.Nursery.start_soon` does)."""
        self.token = current_trio_token()
        self._ledger.new_run(self.token)
        self.thread = self.intake.owner = get_ident()
        self.started_at = trio.current_time()
        self.started_monotonic = time.monotonic()
        nursery.start_soon(self._receive)
        nursery.start_soon(self._watch)
        config = self._config
        if config.sync_enabled or config.async_enabled:
            nursery.start_soon(self._tick)
        else:
            self._timers_done.set()

    @enable_ki_protection
    def begin_stop(self) -> None:
        """Stop intake, end the timers and give the receiver ``drain_timeout`` to finish."""
        if self.state is not RunState.RUNNING:
            return
        self.state = RunState.STOPPING
        self.intake.close()
        self._timers_scope.cancel()
        self._receiver_scope.deadline = trio.current_time() + self._config.drain_timeout

    async def _receive(self) -> None:
        self.guard.enter()
        scope = self._receiver_scope
        clean = False
        try:
            with scope:
                await self.receiver.run()
                clean = True
        finally:
            self.begin_stop()  # if the receiver died: close intake, end the timers
            if not clean:
                self.receiver.abandon("drain_timeout" if scope.cancelled_caught else "writer_error")
            if not self._timers_done.is_set():
                with trio.CancelScope(shield=True):
                    await self._timers_done.wait()
            self._end()

    def _end(self) -> None:
        self.flushes.release_all()
        self._ledger.drops.report()
        self._ledger.errors.report()
        self.state = RunState.STOPPED
        self.stopped.set()

    async def _watch(self) -> None:
        """Wait for the end of the run, only to hear of a cancelled nursery.

        The receiver is shielded, so that it can still drain when the nursery is
        cancelled; this task tells it to.
        """
        try:
            await self.stopped.wait()
        finally:
            self.begin_stop()

    async def _tick(self) -> None:
        try:
            with self._timers_scope:
                await run_timers(self._config, self._ledger, self.receiver.request_sync)
        finally:
            self._timers_done.set()
