"""`AggregatorSender`: one producer's clone of the aggregator's send channel."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import trio

from ._lowlevel import checkpoint

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._intake import Intake


class AggregatorSender(trio.abc.SendChannel[bytes]):
    """A `trio.abc.SendChannel` that sends on its own clone of the aggregator's channel.

    Hand one to each producer task (`Aggregator.sender`, then `clone`). A send follows
    the rules of `Aggregator.write`, and a send that waits for room waits in the memory
    channel itself, on this clone. Closing it closes only this clone; once the
    aggregator stops, every sender of that run raises `AggregatorClosedError`.
    """

    __slots__ = ("_clone", "_closed", "_intake")

    def __init__(self, intake: Intake) -> None:
        intake.check_thread("Aggregator.sender")
        self._intake = intake
        self._clone = intake.open_clone()
        self._closed = False

    async def send(self, value: Buffer) -> None:
        """Queue *value* (copied), waiting for room like `Aggregator.write`."""
        await self._intake.put(self._clone, value)

    def send_nowait(self, value: Buffer) -> None:
        """Queue *value* now, or raise `trio.WouldBlock` like `Aggregator.write_nowait`."""
        self._intake.put_nowait(self._clone, value)

    def clone(self) -> AggregatorSender:
        """Another sender for another producer task, independent of this one."""
        self._intake.check_thread("AggregatorSender.clone")
        if self._closed:
            raise trio.ClosedResourceError("this sender was closed")
        return AggregatorSender(self._intake)

    def close(self) -> None:
        """Close this sender (idempotent).

        Tasks blocked in its `send` get `trio.ClosedResourceError`.
        """
        self._intake.check_thread("AggregatorSender.close")
        if not self._closed:
            self._closed = True
            self._intake.close_clone(self._clone)

    async def aclose(self) -> None:
        """Close this sender; a checkpoint, like every async method."""
        self.close()
        await checkpoint()

    @property
    def closed(self) -> bool:
        """Whether `close` was called on this sender."""
        return self._closed

    def statistics(self) -> trio.MemoryChannelStatistics:
        """Trio's statistics of the memory channel this sender sends on."""
        return self._clone.statistics()

    @property
    def channel(self) -> trio.MemorySendChannel[bytes]:
        """Deprecated: the clone this sender sends on.

        Sending on it directly would skip the checks and the accounting of `send`; use
        `send` and `send_nowait`, and `statistics` for the channel's statistics.
        """
        warnings.warn(
            "AggregatorSender.channel is deprecated: use send()/send_nowait() to write,"
            " and statistics() for the channel's statistics",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._clone
