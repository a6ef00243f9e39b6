"""What the server read and did not write, in lines and bytes, by reason: `Losses`.

The aggregator counts its drops in writes (one write: the complete lines of one chunk
read); an operator needs lines. So the server keeps its own account, in lines and bytes:

* ``writer_error``: lines of a batch the output refused for good (a full disk, EIO...);
* ``drain_timeout``: lines still in the aggregator when ``--drain-timeout`` ran out
  (what it accepted, less what was written, less the writer errors);
* ``forced_shutdown``: lines read but not handed to the aggregator in time after a
  second signal (or any cancellation of a reader that was waiting for room);
* ``cut``: records the server cut (idle timeout, line deadline, shutdown) that the
  ``cut_records="drop"`` policy dropped;
* ``unread``: lines still in the kernel's receive buffer when the server closed the
  connection at the shutdown deadline, or sent on a connection still queued on a
  listener then (never accepted), as far as non-blocking reads can tell;
* ``when_full``: lines an output with ``--forward-when-full drop_newest`` dropped because
  its buffer was full (its target down or slow); the other outputs still have them.
* ``binary``: binary records (a NUL byte, invalid UTF-8) that ``--binary reject``
  did not write.

Any loss makes the exit status 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Writer = Callable[[bytes], Awaitable[None]]

__all__ = ["LOSS_REASONS", "LossSnapshot", "Losses", "OutputAccount"]

LOSS_REASONS: tuple[str, ...] = (
    "writer_error",
    "drain_timeout",
    "forced_shutdown",
    "cut",
    "unread",
    "when_full",
    "binary",
)
"""Why lines were lost, in the order the summary shows them."""


@attrs.frozen(kw_only=True)
class LossSnapshot:
    """Lines and bytes lost, by reason (every reason of `LOSS_REASONS` present)."""

    lines: dict[str, int]
    bytes: dict[str, int]

    @property
    def total_lines(self) -> int:
        """Lines lost, whatever the reason."""
        return sum(self.lines.values())

    @property
    def total_bytes(self) -> int:
        """Bytes of the lines lost, whatever the reason."""
        return sum(self.bytes.values())

    def describe(self) -> str:
        """``N (B bytes: reason N, ...)``, or ``0``."""
        if not self.total_lines:
            return "0"
        reasons = ", ".join(
            f"{reason.replace('_', ' ')} {self.lines[reason]:,}"
            for reason in LOSS_REASONS
            if self.lines[reason]
        )
        return f"{self.total_lines:,} ({self.total_bytes:,} bytes; {reasons})"


class Losses:
    """The running account of lines (and bytes) lost, by reason."""

    __slots__ = ("_bytes", "_lines")

    def __init__(self) -> None:
        self._lines = dict.fromkeys(LOSS_REASONS, 0)
        self._bytes = dict.fromkeys(LOSS_REASONS, 0)

    def add(self, reason: str, lines: int, nbytes: int) -> None:
        """Count *lines* lines of *nbytes* bytes lost for *reason*."""
        self._lines[reason] += lines
        self._bytes[reason] += nbytes

    def add_data(
        self, reason: str, data: bytes | bytearray | memoryview | list[bytes]
    ) -> tuple[int, int]:
        """Count the lines of *data* lost (a last line without a newline counts as one).

        Returns:
            The lines and bytes counted.
        """
        if isinstance(data, list):
            data = b"".join(data)
        data = bytes(data)
        lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        self.add(reason, lines, len(data))
        return lines, len(data)

    def snapshot(self) -> LossSnapshot:
        """A copy of the counts."""
        return LossSnapshot(lines=dict(self._lines), bytes=dict(self._bytes))


class OutputAccount:
    """What one output took, in lines and bytes, to count what it lost.

    `writer` wraps the sink's write (counting what it took), `lost_to_writer` is the
    aggregator's ``on_writer_error`` hook (a batch lost for good), `missed` counts a
    chunk the output never got (its input counted the loss), and once the aggregator
    is closed `count_drain_losses` counts the rest of what reached the outputs.
    """

    __slots__ = ("_losses", "bytes_lost", "bytes_written", "lines_lost", "lines_written")

    def __init__(self, losses: Losses) -> None:
        self._losses = losses
        self.lines_written = 0
        self.bytes_written = 0
        self.lines_lost = 0
        """Lines this output lost (its writer errors and drops, its drain losses, and
        chunks a forced shutdown cut before this output got them)."""
        self.bytes_lost = 0

    def _lose(self, reason: str, data: bytes) -> None:
        lines, nbytes = self._losses.add_data(reason, data)
        self.lines_lost += lines
        self.bytes_lost += nbytes

    def missed(self, data: bytes) -> None:
        """A chunk this output never got: lost for it (the input counted the loss)."""
        self.lines_lost += data.count(b"\n")
        self.bytes_lost += len(data)

    def writer(
        self, write: Callable[[bytes], Awaitable[None]]
    ) -> Callable[[bytes], Awaitable[None]]:
        """*write*, counting the lines and bytes of each call that returns."""

        async def counting_write(data: bytes) -> None:
            await write(data)
            self.lines_written += data.count(b"\n")
            self.bytes_written += len(data)

        return counting_write

    def lost_to_writer(self, data: bytes, exc: Exception) -> None:
        """The ``on_writer_error`` hook: count the batch's lines lost (``writer_error``)."""
        self._lose("writer_error", data)

    def lost_to_when_full(self, data: bytes) -> None:
        """Count the lines of a write the output's aggregator dropped (``when_full``)."""
        self._lose("when_full", data)

    def count_drain_losses(self, lines_reached: int, bytes_reached: int) -> None:
        """Count lost (``drain_timeout``) what reached the outputs, never written or lost."""
        lines = max(lines_reached - self.lines_written - self.lines_lost, 0)
        nbytes = max(bytes_reached - self.bytes_written - self.bytes_lost, 0)
        if lines or nbytes:
            self._losses.add("drain_timeout", lines, nbytes)
            self.lines_lost += lines
            self.bytes_lost += nbytes
