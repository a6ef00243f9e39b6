"""`ByteBudget`: the ``buffer_max_bytes`` bound, which a memory channel cannot keep.

Only built when ``buffer_max_bytes`` is set. A write reserves its bytes before it goes
into the channel; the receiver gives them back when it hands the item to the writer.
Writes that do not fit wait in a FIFO line of their own (a `trio.Lock`, which is fair),
before the channel, so the order of writes is kept.
"""

from __future__ import annotations

import trio

from ._errors import AggregatorClosedError


class ByteBudget:
    """Bytes admitted and not yet handed to the writer, bounded by *limit*.

    The bound gives way when nothing is admitted: an item larger than the whole budget
    still goes, alone.
    """

    __slots__ = ("_closed", "_limit", "_line", "_room", "used")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.used = 0
        """Bytes reserved: buffered, held by the receiver, or waiting for an item slot."""
        self._line = trio.Lock()
        self._room = trio.Event()
        self._closed = False

    def _fits(self, size: int) -> bool:
        return not self.used or self.used + size <= self._limit

    def try_reserve(self, size: int) -> bool:
        """Reserve *size* bytes now, if they fit and no write waits in line."""
        if self._line.locked() or not self._fits(size):
            return False
        self.used += size
        return True

    async def reserve(self, size: int) -> None:
        """Wait in line until *size* bytes fit, then reserve them.

        Raises:
            AggregatorClosedError: the run stopped while waiting.
        """
        async with self._line:
            while not (self._closed or self._fits(size)):
                self._room = trio.Event()
                await self._room.wait()
            if self._closed:
                raise AggregatorClosedError("the aggregator stopped")
            self.used += size

    def release(self, size: int) -> None:
        """Give back *size* bytes (handed to the writer, evicted, or never sent)."""
        self.used -= size
        self._room.set()

    def close(self) -> None:
        """The run stops: the writes waiting in line give up."""
        self._closed = True
        self._room.set()
