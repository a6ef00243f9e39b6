"""`ResendWindow`: the batches a forwarding sink sent lately, to send again after a loss.

A send into a TCP connection succeeds once the local kernel has the bytes; if the
receiver stops (a restart) before reading them, they vanish without an error. So the
sink keeps what it sent in the last ``seconds`` (at most ``max_bytes``), and when the
connection is lost, not closed by the sink itself, it sends those batches again, whole
and in order, on the next connection before anything new. The receiver may see them
twice (duplicates, counted, only across the reconnect); it does not miss them, as long
as what it had not read was sent within the window. A batch older than the window is
not kept: after a quiet spell, a receiver that closes an idle connection (an idle
timeout, a load balancer) has had time to read everything, and nothing is sent twice.
"""

from __future__ import annotations

from collections import deque

__all__ = ["ResendWindow"]


class ResendWindow:
    """Recently sent batches: ``(time sent, framed bytes, records)``, oldest first.

    Args:
        seconds: Keep the batches sent this many seconds ago or less (0: keep none).
        max_bytes: Keep at most this many bytes (the oldest batches go first).
    """

    __slots__ = ("_batches", "_bytes", "_max_bytes", "_seconds", "pending")

    def __init__(self, seconds: float, max_bytes: int) -> None:
        self._seconds = seconds
        self._max_bytes = max_bytes
        self._batches: deque[tuple[float, bytes, int]] = deque()
        self._bytes = 0
        self.pending: list[tuple[bytes, int]] = []
        """Batches to send again first on the next connection, in order."""

    def _trim(self, now: float) -> None:
        batches = self._batches
        while batches and (now - batches[0][0] > self._seconds or self._bytes > self._max_bytes):
            self._bytes -= len(batches.popleft()[1])

    def sent(self, now: float, batches: list[tuple[bytes, int]]) -> None:
        """*batches* (framed bytes, records) went out on the connection at *now*.

        The pending ones were among them: none is pending any more.
        """
        self.pending.clear()
        if self._seconds <= 0:
            return
        for payload, records in batches:
            self._batches.append((now, payload, records))
            self._bytes += len(payload)
        self._trim(now)

    def connection_lost(self, now: float) -> None:
        """The connection was lost at *now*: what is still in the window becomes pending."""
        self._trim(now)
        self.pending.extend((payload, records) for _, payload, records in self._batches)
        self._batches.clear()
        self._bytes = 0
