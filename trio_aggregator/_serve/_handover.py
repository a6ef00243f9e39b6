"""Handing what the server read to the outputs, bounded by a forced shutdown: `Handover`.

Each input (the TCP collector, the UDP reader) hands every chunk it read to the outputs
through one `Handover`. A write may wait for room in a full buffer; a forced shutdown
bounds that wait in two steps: the first `Handover.force` gives the waiting writes
*grace* seconds, the second asks the input to cancel everything. A chunk whose write
was cut is counted lost (``forced_shutdown``), in lines, so nothing read vanishes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._losses import Losses

__all__ = ["Handover"]


class Handover:
    """Hands chunks to *write*; a forced shutdown bounds how long a write may wait.

    Args:
        write: Where chunks go (the outputs' write).
        losses: Where a chunk cut by a forced shutdown is counted (``forced_shutdown``).
        grace: Seconds the writes waiting at the first `force` still get.
    """

    def __init__(
        self, write: Callable[[bytes], Awaitable[object]], losses: Losses, grace: float
    ) -> None:
        self._write = write
        self._losses = losses
        self._grace = grace
        self._deadline = math.inf
        self._scopes: set[trio.CancelScope] = set()
        self.forced = 0
        """How many times `force` was called."""

    async def write(self, chunk: bytes) -> bool:
        """Hand *chunk* over; False if the forced shutdown's grace ran out first (lost)."""
        scope = trio.CancelScope(deadline=self._deadline)
        self._scopes.add(scope)
        try:
            with scope:
                await self._write(chunk)
                return True
        except BaseException:
            self._losses.add_data("forced_shutdown", chunk)
            raise
        finally:
            self._scopes.discard(scope)
        self._losses.add_data("forced_shutdown", chunk)
        return False

    def force(self) -> bool:
        """A forced shutdown: True when it is the second (the caller cancels everything).

        The first call gives the writes waiting now, and any later one, *grace* seconds.
        """
        self.forced += 1
        if self.forced > 1:
            return True
        self._deadline = trio.current_time() + self._grace
        for scope in self._scopes:
            scope.deadline = min(scope.deadline, self._deadline)
        return False
