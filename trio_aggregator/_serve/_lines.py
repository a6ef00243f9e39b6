"""Cutting one connection's bytes into whole lines, in bounded memory: `LineSplitter`.

Over-long lines: a line longer than ``max_line_bytes`` (newline not counted) is
**truncated**. Its first ``max_line_bytes`` bytes are written at once, as one line
ending in a newline, and the rest, up to the next newline, is read and discarded. Both
are counted (`LineSplitter.lines_truncated`, `LineSplitter.bytes_discarded`).
So a client that never sends a newline costs at most ``max_line_bytes`` of memory.
A final line without a newline, when a client disconnects, is kept (a newline is added);
when the server cuts the connection, the collector takes it with `LineSplitter.take_pending`.

A splitter knows nothing of the server: it keeps its own counts, which the collector
reads and adds to its totals.
"""

from __future__ import annotations

from ._checks import check_count

__all__ = ["DEFAULT_MAX_LINE_BYTES", "LineSplitter"]

DEFAULT_MAX_LINE_BYTES = 64 * 1024


class LineSplitter:
    """Cuts one connection's bytes into whole lines, in bounded memory.

    `feed` returns the complete lines found so far (each ending in ``\\n``) as one
    `bytes`; a line longer than *max_line_bytes* is truncated as the module docs say.
    `finish` returns the last, unterminated line, with a newline added.

    Its counts, `lines_truncated`, `bytes_discarded` and `partial_lines`, only grow.
    """

    __slots__ = (
        "_discarding",
        "_max",
        "_pending",
        "bytes_discarded",
        "lines_truncated",
        "partial_lines",
    )

    def __init__(self, max_line_bytes: int) -> None:
        self._max = check_count("max_line_bytes", max_line_bytes)
        self._pending = bytearray()
        self._discarding = False
        self.lines_truncated = 0
        """Over-long lines cut to ``max_line_bytes``."""
        self.bytes_discarded = 0
        """Bytes of over-long lines thrown away (past ``max_line_bytes``)."""
        self.partial_lines = 0
        """Final lines without a newline, returned by `finish` with one added."""

    @property
    def pending_bytes(self) -> int:
        """Bytes of the line being received (never more than *max_line_bytes*)."""
        return len(self._pending)

    @property
    def at_line_start(self) -> bool:
        """Whether the next byte fed starts a line (none pending, none being discarded)."""
        return not self._pending and not self._discarding

    def feed(self, data: bytes | bytearray) -> bytes:
        """The complete lines that *data* finishes, joined; ``b""`` if none."""
        if not isinstance(data, bytes):
            data = bytes(data)
        pending = self._pending
        if not self._discarding and len(data) <= self._max:
            # Fast path: only the line that *pending* starts can be too long.
            first = data.find(b"\n")
            if first < 0:
                if len(pending) + len(data) <= self._max:
                    pending += data
                    return b""
            elif len(pending) + first <= self._max:
                last = data.rfind(b"\n")
                out = bytes(pending) + data[: last + 1] if pending else data[: last + 1]
                self._pending = bytearray(data[last + 1 :])
                return out
        return self._feed_slow(data)

    def _feed_slow(self, data: bytes) -> bytes:
        pending = self._pending
        out = bytearray()
        pos = 0
        size = len(data)
        while pos < size:
            newline = data.find(b"\n", pos)
            if self._discarding:
                if newline < 0:
                    self.bytes_discarded += size - pos
                    break
                self.bytes_discarded += newline - pos
                self._discarding = False
                pos = newline + 1
                continue
            end = size if newline < 0 else newline
            room = self._max - len(pending)
            if end - pos > room:
                out += pending
                out += data[pos : pos + room]
                out += b"\n"
                pending.clear()
                self.lines_truncated += 1
                self._discarding = True
                pos += room
                continue
            if newline < 0:
                pending += data[pos:]
                break
            if pending:
                out += pending
                pending.clear()
            out += data[pos : newline + 1]
            pos = newline + 1
        return bytes(out)

    def take_pending(self) -> bytes:
        """The line being received, without a newline, and forget it (a cut record)."""
        self._discarding = False
        line = bytes(self._pending)
        self._pending.clear()
        return line

    def finish(self) -> bytes:
        """The final line if it had no newline (with one added); ``b""`` otherwise."""
        self._discarding = False
        if not self._pending:
            return b""
        line = bytes(self._pending) + b"\n"
        self._pending.clear()
        self.partial_lines += 1
        return line
