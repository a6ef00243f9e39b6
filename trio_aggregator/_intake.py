"""`Intake`: the producers' side of one run, in front of the memory channel.

Every write, whether `Aggregator.write` on the aggregator's own send end or
`AggregatorSender.send` on a producer's clone, goes through one body here: checks,
``send_nowait`` on that channel, and when the channel is full, ``when_full``. Under
``"block"`` the write waits in the channel's own queue (``await channel.send``), so
backpressure, FIFO wake-ups and cancellation are Trio's. Only the byte budget, when
set, has a line of its own in front of the channel (`ByteBudget`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ._errors import AggregatorClosedError
from ._lowlevel import (
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    enable_ki_protection,
)
from ._threads import foreign_thread_error, get_ident

if TYPE_CHECKING:
    from ._budget import ByteBudget
    from ._config import AggregatorConfig
    from ._flushes import Flushes
    from ._ledger import Ledger
    from ._lowlevel import ReceiverGuard

Channel = trio.MemorySendChannel[bytes]


def as_bytes(data: object) -> bytes:
    """The bytes of a write, copied where the caller could change them later."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)  # pyright: ignore[reportUnknownArgumentType]
    raise TypeError(f"write() takes bytes, bytearray or memoryview, not {type(data).__name__}")


class Intake:
    """Accepts writes for one run: the checks, the accounting and ``when_full``."""

    __slots__ = (
        "_budget",
        "_flushes",
        "_guard",
        "_in_line",
        "_ledger",
        "_max_item",
        "_plain",
        "_policy",
        "_recv",
        "_send",
        "accepting",
        "clones",
        "owner",
    )

    def __init__(
        self,
        config: AggregatorConfig,
        ledger: Ledger,
        channel: tuple[Channel, trio.MemoryReceiveChannel[bytes]],
        *,
        budget: ByteBudget | None,
        flushes: Flushes,
        guard: ReceiverGuard,
    ) -> None:
        self._send, self._recv = channel
        self._ledger = ledger
        self._budget = budget
        self._flushes = flushes
        self._guard = guard
        self._policy = config.when_full
        self._max_item = config.max_item_bytes
        self._plain = self._max_item is None and budget is None  # bytes go in as they are
        self.accepting = True
        """False once the run stops: every write raises `AggregatorClosedError`."""
        self.owner: int | None = None
        """The id of the run's Trio thread, once started: the only one allowed in."""
        self.clones: set[Channel] = set()
        """The send channels of the open `AggregatorSender` objects of this run."""
        self._in_line: dict[Channel, set[trio.CancelScope]] = {}  # writes in the byte line

    # ------------------------------------------------------------ writes

    @enable_ki_protection
    def put_nowait(self, channel: Channel, data: object, checked: bool = False) -> int:
        """Put *data* in now: its size, or 0 if dropped (`trio.WouldBlock`: block and raise).

        *checked*: `put` has checked the thread and made *data* the item already
        (positional: cheaper to pass than a keyword on this path).
        """
        if checked:
            item: bytes = data  # type: ignore[assignment]
        else:
            if get_ident() != self.owner:
                self._foreign(channel, "send_nowait")
            item = data if type(data) is bytes and self._plain else self._checked(data)
        if not item:
            return self._empty(channel)
        while True:
            try:
                if self._budget is None:
                    channel.send_nowait(item)
                else:
                    self._send_within_budget(channel, item)
            except trio.WouldBlock:
                if self._policy == "drop_oldest" and self._evict_oldest():
                    continue  # room was made: try again
                return self._full()
            except trio.ClosedResourceError:
                raise self._closed_error() from None
            self._ledger.accept(item)
            return len(item)

    @enable_ki_protection
    async def put(self, channel: Channel, data: object) -> int:
        """Put *data* in, waiting in the channel (or the byte line) while it is full."""
        if get_ident() != self.owner:
            self._foreign(channel, "send")
        await checkpoint_if_cancelled()
        item = data if type(data) is bytes and self._plain else self._checked(data)
        if not (item and self._ledger.nb_waiting and self._policy == "block"):
            try:
                size = self.put_nowait(channel, item, True)  # checked: True
            except trio.WouldBlock:
                if self._policy != "block":
                    raise
            else:
                await cancel_shielded_checkpoint()
                return size
        return await self._wait_for_room(channel, item)  # in line behind those waiting

    def _foreign(self, channel: Channel, send: str) -> None:
        """Refuse a write from a thread other than the run's (unless never started)."""
        if self.owner is not None:
            write = "write" + send[len("send") :]
            method = f"Aggregator.{write}" if channel is self._send else f"AggregatorSender.{send}"
            raise foreign_thread_error(method)

    def check_thread(self, method: str) -> None:
        """Raise `RuntimeError` naming *method* if this is not the run's Trio thread."""
        if get_ident() != self.owner and self.owner is not None:
            raise foreign_thread_error(method)

    def _checked(self, data: object) -> bytes:
        if not self.accepting:
            raise AggregatorClosedError("the aggregator is not running")
        item = as_bytes(data)
        if self._max_item is not None and len(item) > self._max_item:
            raise ValueError(
                f"write of {len(item)} bytes is larger than max_item_bytes={self._max_item}"
            )
        return item

    def _empty(self, channel: Channel) -> int:
        """An empty write queues nothing, but a closed sender or run still says so."""
        if not self.accepting or (channel is not self._send and channel not in self.clones):
            raise self._closed_error()
        return 0

    def _closed_error(self) -> trio.ClosedResourceError:
        if self.accepting:
            return trio.ClosedResourceError("this sender was closed")
        return AggregatorClosedError("the aggregator is not running")

    def _send_within_budget(self, channel: Channel, item: bytes) -> None:
        assert self._budget is not None
        if not self._budget.try_reserve(len(item)):
            raise trio.WouldBlock
        try:
            channel.send_nowait(item)
        except BaseException:
            self._budget.release(len(item))
            raise

    def _full(self) -> int:
        """No room, nothing (more) to evict: `trio.WouldBlock` (block, raise), or drop it."""
        if self._policy in ("block", "raise"):
            raise trio.WouldBlock
        self._ledger.drops.add("full")
        return 0

    def _evict_oldest(self) -> bool:
        try:
            old = self._recv.receive_nowait()
        except trio.WouldBlock:
            return False
        self._ledger.evict(old)
        if self._budget is not None:
            self._budget.release(len(old))
        self._flushes.check()
        return True

    async def _wait_for_room(self, channel: Channel, item: bytes) -> int:
        self._guard.refuse("write")
        if len(item) > 1:  # its own object, so that the receiver can tell it from others
            item = bytes(memoryview(item))
        ledger = self._ledger
        size = len(item)
        ticket = self._flushes.ticket()
        run = ledger.runs  # it may resume only after a stop and a new start
        ledger.block(item)
        reserved = False
        try:
            if self._budget is not None:
                await self._wait_in_line(channel, size)
                reserved = True
            await channel.send(item)
        except BaseException as exc:
            ledger.give_up(item, run)
            if reserved:
                assert self._budget is not None
                self._budget.release(size)
            self._flushes.gave_up(ticket)
            if type(exc) is trio.ClosedResourceError:
                raise self._closed_error() from None
            raise
        ledger.resume(item, run)
        return size

    async def _wait_in_line(self, channel: Channel, size: int) -> None:
        """Reserve *size* bytes of the budget, in line; closing the sender fails it at once."""
        assert self._budget is not None
        scopes = self._in_line.setdefault(channel, set())
        with trio.CancelScope() as scope:
            scopes.add(scope)
            try:
                await self._budget.reserve(size)
                return
            finally:
                scopes.discard(scope)
        raise trio.ClosedResourceError("this sender was closed")  # close_clone cancelled it

    # ------------------------------------------------------------ senders and stop

    def open_clone(self) -> Channel:
        """A new clone of the send channel, for a new `AggregatorSender`."""
        if not self.accepting:
            raise AggregatorClosedError("the aggregator is not running")
        clone = self._send.clone()
        self.clones.add(clone)
        return clone

    @enable_ki_protection
    def close_clone(self, clone: Channel) -> None:
        """Close a sender's clone: its blocked writes raise `trio.ClosedResourceError`."""
        self.clones.discard(clone)
        clone.close()
        for scope in self._in_line.pop(clone, ()):
            scope.cancel()

    @enable_ki_protection
    def close(self) -> None:
        """Stop accepting: close every send end, so the receiver drains, then ends."""
        self.accepting = False
        if self._budget is not None:
            self._budget.close()
        self._send.close()
        for clone in self.clones:
            clone.close()
        self.clones.clear()
