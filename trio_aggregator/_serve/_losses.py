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
  connection at the shutdown deadline, as far as one non-blocking read can tell;
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

    def add_data(self, reason: str, data: bytes | bytearray | memoryview | list[bytes]) -> None:
        """Count the lines of *data* lost (a last line without a newline counts as one)."""
        if isinstance(data, list):
            data = b"".join(data)
        data = bytes(data)
        lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        self.add(reason, lines, len(data))

    def snapshot(self) -> LossSnapshot:
        """A copy of the counts."""
        return LossSnapshot(lines=dict(self._lines), bytes=dict(self._bytes))


class OutputAccount:
    """What the output took, in lines and bytes, to count what the aggregator lost.

    `writer` wraps the sink's write (counting what it took), `lost_to_writer` is the
    aggregator's ``on_writer_error`` hook (a batch lost for good), and once the
    aggregator is closed `count_drain_losses` counts the rest of what it accepted.
    """

    __slots__ = ("_losses", "bytes_written", "lines_written")

    def __init__(self, losses: Losses) -> None:
        self._losses = losses
        self.lines_written = 0
        self.bytes_written = 0

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
        self._losses.add_data("writer_error", data)

    def count_drain_losses(self, lines_accepted: int, bytes_accepted: int) -> None:
        """Count lost (``drain_timeout``) what was accepted, never written, never failed."""
        snapshot = self._losses.snapshot()
        lines = lines_accepted - self.lines_written - snapshot.lines["writer_error"]
        nbytes = bytes_accepted - self.bytes_written - snapshot.bytes["writer_error"]
        if lines > 0 or nbytes > 0:
            self._losses.add("drain_timeout", max(lines, 0), max(nbytes, 0))
