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
  connection at the shutdown deadline, as far as one non-blocking read can tell.

Any loss makes the exit status 1.
"""

from __future__ import annotations

import attrs

__all__ = ["LOSS_REASONS", "LossSnapshot", "Losses"]

LOSS_REASONS: tuple[str, ...] = (
    "writer_error",
    "drain_timeout",
    "forced_shutdown",
    "cut",
    "unread",
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
