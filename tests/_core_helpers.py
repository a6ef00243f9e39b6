"""The pieces of one run built by hand, for the tests that drive the core modules directly.

`make_core` wires a `Ledger`, a memory channel, `Flushes`, a `ReceiverGuard`, an
optional `ByteBudget` and an `Intake` the way `Run` does, but starts no task: nothing
takes from the channel unless the test does (`Core.take`) or runs a `Receiver`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import trio

from trio_aggregator import AggregatorConfig
from trio_aggregator._budget import ByteBudget
from trio_aggregator._flushes import Flushes
from trio_aggregator._intake import Intake
from trio_aggregator._ledger import Ledger
from trio_aggregator._lowlevel import ReceiverGuard
from trio_aggregator._receiver import Receiver

LEVELS = (
    "accepted",
    "taken",
    "nb_buffered",
    "size_buffered",
    "nb_held",
    "size_held",
    "nb_waiting",
    "size_waiting",
)


def _no_writer(data: object) -> None:
    raise AssertionError(f"no receiver runs in this test, yet the writer got {data!r}")


@dataclasses.dataclass
class Core:
    """One run's core, with no task running."""

    config: AggregatorConfig
    ledger: Ledger
    send: trio.MemorySendChannel[bytes]
    recv: trio.MemoryReceiveChannel[bytes]
    flushes: Flushes
    guard: ReceiverGuard
    budget: ByteBudget | None
    intake: Intake

    def receiver(self) -> Receiver:
        """The run's receiver, on the same channel, ledger, budget and flushes."""
        return Receiver(
            self.config,
            self.ledger,
            (self.send, self.recv),
            budget=self.budget,
            flushes=self.flushes,
        )

    def take(self) -> bytes:
        """Take the next item the way an abandoning receiver does: out of the channel,
        counted as taken, its bytes given back (`trio.WouldBlock` if there is none)."""
        item = self.recv.receive_nowait()
        self.ledger.take(item)
        if self.budget is not None:
            self.budget.release(len(item))
        return item

    def levels(self) -> dict[str, int]:
        """The ledger's counts that must never go negative."""
        return {name: getattr(self.ledger, name) for name in LEVELS}

    def assert_never_negative(self) -> None:
        levels = self.levels()
        assert all(value >= 0 for value in levels.values()), levels

    def assert_balanced(self) -> None:
        """Every item accepted was taken or is still buffered (nothing held here)."""
        ledger = self.ledger
        self.assert_never_negative()
        assert ledger.accepted == ledger.taken + ledger.nb_buffered, self.levels()

    @property
    def waiting_senders(self) -> int:
        """Tasks waiting in the memory channel itself for an item slot."""
        return self.send.statistics().tasks_waiting_send

    @property
    def buffered(self) -> int:
        """Items in the memory channel's buffer."""
        return self.send.statistics().current_buffer_used


def make_core(writer: Callable[[Any], object] | None = None, /, **settings: Any) -> Core:
    """Build a core as `Run` does, from `AggregatorConfig` *settings*."""
    config = AggregatorConfig(writer=writer or _no_writer, **settings)
    ledger = Ledger(config)
    send, recv = trio.open_memory_channel[bytes](config.buffer_size)
    flushes = Flushes(ledger)
    guard = ReceiverGuard()
    limit = config.buffer_max_bytes
    budget = ByteBudget(limit) if limit is not None else None
    intake = Intake(config, ledger, (send, recv), budget=budget, flushes=flushes, guard=guard)
    return Core(config, ledger, send, recv, flushes, guard, budget, intake)


def start_put(
    nursery: trio.Nursery,
    core: Core,
    item: bytes,
    channel: trio.MemorySendChannel[bytes] | None = None,
) -> PendingPut:
    """Start ``await intake.put(channel, item)`` in a task of its own (not run yet)."""
    pending = PendingPut(item)
    nursery.start_soon(pending.run, core.intake, channel if channel is not None else core.send)
    return pending


class PendingPut:
    """A put running in a task of its own: its cancel scope and how it ended.

    `outcome` is "running" until the put ends, then "returned" (`returned` holds its
    result), "cancelled", or "raised" (`error` holds the exception).
    """

    def __init__(self, item: bytes) -> None:
        self.item = item
        self.scope = trio.CancelScope()
        self.outcome = "running"
        self.returned: int | None = None
        self.error: Exception | None = None
        self.done = trio.Event()

    async def run(self, intake: Intake, channel: trio.MemorySendChannel[bytes]) -> None:
        try:
            with self.scope:
                self.returned = await intake.put(channel, self.item)
                self.outcome = "returned"
            if self.scope.cancelled_caught:
                self.outcome = "cancelled"
        except Exception as exc:
            self.outcome = "raised"
            self.error = exc
        finally:
            self.done.set()
