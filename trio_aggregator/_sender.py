"""`AggregatorSender`: one producer's send channel into an aggregator."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ._errors import AggregatorClosedError

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._aggregator import Aggregator


class AggregatorSender(trio.abc.SendChannel[bytes]):
    """A `trio.abc.SendChannel` over a clone of the aggregator's memory channel.

    Hand one to each producer task (`Aggregator.sender`, then `clone`); it follows the
    rules of `Aggregator.write`. Closing it closes only this clone. Once the aggregator
    stops, every sender of that run raises `AggregatorClosedError`.
    """

    __slots__ = ("_aggregator", "_channel", "_closed", "_run")

    def __init__(
        self, aggregator: Aggregator, channel: trio.MemorySendChannel[bytes], run: int
    ) -> None:
        self._aggregator = aggregator
        self._channel = channel
        self._run = run
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this sender was closed")
        if (
            self._run != self._aggregator._run_number  # pyright: ignore[reportPrivateUsage]
            or not self._aggregator.is_running
        ):
            raise AggregatorClosedError("the aggregator this sender belongs to has stopped")

    async def send(self, value: Buffer) -> None:
        """Queue *value* (copied), waiting for room like `Aggregator.write`."""
        await self._aggregator.submit(value, self)

    def send_nowait(self, value: Buffer) -> None:
        """Queue *value* now, or raise `trio.WouldBlock` like `Aggregator.write_nowait`."""
        self._aggregator.submit_nowait(value, self)

    def clone(self) -> AggregatorSender:
        """Another sender for another producer task, independent of this one."""
        self._check_open()
        return self._aggregator.new_sender()

    def close(self) -> None:
        """Close this sender (idempotent).

        Tasks blocked in its `send` get `trio.ClosedResourceError`.
        """
        if self._closed:
            return
        self._closed = True
        self._channel.close()
        self._aggregator.sender_closed(self)

    async def aclose(self) -> None:
        """Close this sender; a checkpoint, like every async method."""
        self.close()
        await trio.lowlevel.checkpoint()

    @property
    def closed(self) -> bool:
        """Whether `close` was called on this sender."""
        return self._closed

    @property
    def channel(self) -> trio.MemorySendChannel[bytes]:
        """The clone of the memory channel's send side that this sender holds."""
        return self._channel
