"""Cutting one connection's bytes into records, as syslog over TCP does: `FrameSplitter`.

``serve --framing`` follows RFC 6587 the way rsyslog's ``imtcp`` reads it:

* ``auto`` (the default): a record that starts with an *octet count* (``MSG-LEN SP
  MSG``: 1 to 9 digits, the first not ``0``, then one space) is an octet-counted
  frame of exactly ``MSG-LEN`` bytes; any other record is a traditional frame, ending at
  LF, or at NUL (unless ``nul_terminates`` is false). So ``logger --octet-count``,
  rsyslog's ``omfwd`` with either framing, and the stdlib ``SysLogHandler`` (NUL after
  each message) all work without settings. A newline-delimited line that happens to
  start with digits and a space (``42 apples``) is read as an octet count: use
  ``lines`` for such input.
* ``octet-counted``: every record must be an octet-counted frame. One that is not (no
  digits, a non-digit after them, a length of 0 or of more than 9 digits) is a
  *framing error*: it is counted, and that record is read as a traditional frame up to
  the next LF (or NUL), written like one, and the next frame is looked for after it.
* ``lines``: records end at LF, and nothing else (`LineSplitter`, the fastest).

An octet-counted frame may hold any byte: before it is written, one trailing LF is
removed and the control characters (bytes 0 to 31, LF and TAB included) are escaped the
way rsyslog does by default, as ``#`` and three octal digits (LF is ``#012``), so
each frame is one line. A frame longer than ``max_line_bytes`` is a framing error too;
its first ``max_line_bytes`` bytes are written, the rest is read and discarded (counted,
like a truncated line): the frame's length keeps the reader in step with the sender.

Traditional frames keep the rule of `LineSplitter` (bounded memory, over-long lines
truncated and counted) and are written as they came. Binary records are counted, and
rejected if told so, by `BinaryRecords`. So a splitter holds at most ``max_line_bytes``
of a record (plus its octet count and space: 10 bytes at most).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal, Protocol

import attrs

from ._binary import BINARY_POLICIES, BinaryPolicy, BinaryRecords
from ._lines import LineSplitter

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "FRAMINGS",
    "SPLITTER_COUNTS",
    "CheckedLineSplitter",
    "FrameSplitter",
    "Framing",
    "FramingRules",
    "Splitter",
    "escape_controls",
]

SPLITTER_COUNTS = (
    "bytes_discarded",
    "lines_truncated",
    "partial_lines",
    "framing_errors",
    "binary_records",
)
"""The counts every splitter keeps (the collector adds them up under the same names)."""

Framing = Literal["auto", "lines", "octet-counted"]
FRAMINGS: tuple[Framing, ...] = ("auto", "lines", "octet-counted")

_HEADER = re.compile(rb"([1-9][0-9]{0,8}) ")
"""An octet count and its space (at most 9 digits: 999,999,999 bytes)."""
_UNFINISHED_HEADER = re.compile(rb"[1-9][0-9]{0,8}")
"""The start of an octet count, when the chunk ends before its space (a fullmatch)."""
_FRAME_START = re.compile(rb"\n[1-9][0-9]{0,8}(?: |\Z)")
"""An octet count (or the start of one, at the end) after a traditional frame's LF.

Searched for in the chunk with NUL made LF; one search in C, also where every line
starts with digits (a date) that are not an octet count."""
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_CONTROL_BYTES = bytes([*range(32), 127])
_ESCAPES = {bytes([code]): b"#%03o" % code for code in (*range(32), 127)}


def _escape(match: re.Match[bytes]) -> bytes:
    return _ESCAPES[match.group()]


def escape_controls(record: bytes) -> bytes:
    """*record* with each control byte (0-31, 127) as ``#`` + 3 octal digits (``#012``)."""
    if _CONTROL.search(record) is None:
        return record
    return _CONTROL.sub(_escape, record)


class Splitter(Protocol):
    """What the collector needs of a splitter (its counts are read by name)."""

    @property
    def pending_bytes(self) -> int:
        """Bytes of the record being received."""
        ...

    @property
    def binary_records(self) -> int:
        """Binary records met (written or rejected)."""
        ...

    def feed(self, data: bytes | bytearray) -> bytes:
        """The complete records that *data* finishes, each ending in a newline."""
        ...

    def take_pending(self) -> bytes:
        """The record being received, without a newline, and forget it."""
        ...

    def finish(self) -> bytes:
        """The last, unfinished record with a newline added; ``b""`` if none."""
        ...


@attrs.frozen(kw_only=True)
class FramingRules:
    """How the records of a connection are framed: one splitter per connection.

    Attributes:
        framing: ``"auto"``, ``"lines"`` or ``"octet-counted"`` (module docs).
        nul_terminates: Whether NUL ends a traditional frame (not with ``"lines"``).
        binary: ``"keep"`` or ``"reject"`` binary records (`BinaryRecords`).
    """

    framing: Framing = attrs.field(default="auto", validator=attrs.validators.in_(FRAMINGS))
    nul_terminates: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    binary: BinaryPolicy = attrs.field(
        default="keep", validator=attrs.validators.in_(BINARY_POLICIES)
    )

    def splitter(
        self, max_line_bytes: int, on_reject: Callable[[bytes], object] | None = None
    ) -> CheckedLineSplitter | FrameSplitter:
        """A new splitter; *on_reject* is given each binary record rejected."""
        if self.framing == "lines":
            return CheckedLineSplitter(
                max_line_bytes, BinaryRecords(self.binary, nul_is_binary=True, on_reject=on_reject)
            )
        return FrameSplitter(
            max_line_bytes,
            strict=self.framing == "octet-counted",
            nul_terminates=self.nul_terminates,
            binary=BinaryRecords(
                self.binary, nul_is_binary=not self.nul_terminates, on_reject=on_reject
            ),
        )


class CheckedLineSplitter(LineSplitter):
    """`LineSplitter` (``--framing lines``), counting binary lines as `BinaryRecords` says."""

    __slots__ = ("_binary",)

    framing_errors = 0
    """Always 0: any byte sequence is a valid series of lines."""

    def __init__(self, max_line_bytes: int, binary: BinaryRecords) -> None:
        super().__init__(max_line_bytes)
        self._binary = binary

    @property
    def binary_records(self) -> int:
        """Binary lines met (written or rejected)."""
        return self._binary.records

    def feed(self, data: bytes | bytearray) -> bytes:
        """The complete lines that *data* finishes, less the binary ones rejected."""
        out = super().feed(data)
        return self._binary.check(out) if out else out

    def finish(self) -> bytes:
        """The final line if it had no newline (with one added); ``b""`` otherwise."""
        out = super().finish()
        return self._binary.check(out) if out else out

    def take_pending(self) -> bytes:
        """The line being received, without a newline (``b""`` if rejected as binary)."""
        line = super().take_pending()
        return line if self._binary.keep(line, True, newline=b"") else b""


class FrameSplitter:
    """Cuts one connection's bytes into octet-counted and traditional frames.

    See the module docs for the rules. `feed` returns the complete records as one
    `bytes`, each ending in a newline; `finish` and `take_pending` are those of
    `LineSplitter`. The counts only grow.

    Args:
        max_line_bytes: The longest record written; longer ones are truncated.
        strict: Every frame must be octet-counted (``--framing octet-counted``).
        nul_terminates: Whether NUL ends a traditional frame.
        binary: Counts (and rejects) the binary records.
    """

    __slots__ = (
        "_binary",
        "_body",
        "_discarded",
        "_head",
        "_header_bytes",
        "_lines",
        "_max",
        "_nul",
        "_remaining",
        "_strict",
        "_truncated",
        "framing_errors",
    )

    def __init__(
        self,
        max_line_bytes: int,
        *,
        strict: bool = False,
        nul_terminates: bool = True,
        binary: BinaryRecords | None = None,
    ) -> None:
        self._lines = LineSplitter(max_line_bytes)  # checks max_line_bytes
        self._max = max_line_bytes
        self._strict = strict
        self._nul = nul_terminates
        if binary is None:
            binary = BinaryRecords("keep", nul_is_binary=not nul_terminates)
        self._binary = binary
        self._head = b""  # the digits of an octet count not finished in the last chunk
        self._body = bytearray()  # the part kept of the octet-counted frame being read
        self._remaining = 0  # its bytes still to come (0: not in such a frame)
        self._header_bytes = 0  # the length of its octet count and space
        self._truncated = 0
        self._discarded = 0
        self.framing_errors = 0
        """Malformed frames (``octet-counted``) and frames over ``max_line_bytes``."""

    @property
    def lines_truncated(self) -> int:
        """Records cut to ``max_line_bytes`` (traditional and octet-counted)."""
        return self._lines.lines_truncated + self._truncated

    @property
    def bytes_discarded(self) -> int:
        """Bytes of over-long records thrown away."""
        return self._lines.bytes_discarded + self._discarded

    @property
    def partial_lines(self) -> int:
        """Last records cut short by the client closing, kept with a newline."""
        return self._lines.partial_lines

    @property
    def binary_records(self) -> int:
        """Binary records met (written or rejected)."""
        return self._binary.records

    @property
    def pending_bytes(self) -> int:
        """Bytes of the record being received, octet count included (bounded by
        ``max_line_bytes`` + 10)."""
        pending = self._lines.pending_bytes + len(self._head)
        if self._remaining or self._body:
            pending += self._header_bytes + len(self._body)
        return pending

    def feed(self, data: bytes | bytearray) -> bytes:
        """The complete records that *data* finishes, joined; ``b""`` if none."""
        if not isinstance(data, bytes):
            data = bytes(data)
        if self._head:
            data = self._head + data
            self._head = b""
        scan = data.replace(b"\0", b"\n") if self._nul and b"\0" in data else data
        if not self._remaining and not self._strict:
            # Fast path: traditional frames only, as long as no octet count can start.
            at_start = self._lines.at_line_start
            if not (at_start and data[:1].isdigit()) and _FRAME_START.search(scan) is None:
                out = self._lines.feed(scan)
                return self._binary.check(out) if out else out
        return self._feed_frames(data, scan)

    def _feed_frames(self, data: bytes, scan: bytes) -> bytes:
        out = bytearray()
        pos = 0
        size = len(data)
        lines = self._lines
        while pos < size:
            if self._remaining:
                pos = self._read_body(data, pos, out)
                continue
            if lines.at_line_start:
                header = _HEADER.match(data, pos)
                if header is not None:
                    end = self._whole_frames(data, pos, out)
                    if end == pos:  # a frame this chunk does not finish, or too long
                        end = header.end()
                        self._start_frame(int(data[pos : end - 1]), end - pos)
                    pos = end
                    continue
                if _UNFINISHED_HEADER.fullmatch(data, pos) is not None:
                    self._head = data[pos:]
                    break
                if self._strict:
                    self.framing_errors += 1
            end = self._traditional_end(data, scan, pos)
            chunk = lines.feed(scan[pos:end])
            if chunk:
                out += self._binary.check(chunk)
            pos = end
        return bytes(out)

    def _whole_frames(self, data: bytes, pos: int, out: bytearray) -> int:
        """Read the octet-counted frames *data* holds whole from *pos*; where they end.

        The fast path of octet-counted input: when the frames hold no control character
        and only ASCII (one check over them all), they are joined as they are.
        """
        bodies: list[bytes] = []
        match, append = _HEADER.match, bodies.append
        start, size, limit = pos, len(data), self._max
        while (header := match(data, pos)) is not None:
            body_start = header.end()
            end = body_start + int(header[1])
            if end > size or end - body_start > limit:
                break
            append(data[body_start:end])
            pos = end
        if not bodies:
            return pos
        frames = data[start:pos]
        if frames.isascii() and len(frames.translate(None, _CONTROL_BYTES)) == len(frames):
            out += b"\n".join(bodies)
            out += b"\n"
        else:
            for body in bodies:
                out += self._record(body)
        return pos

    def _traditional_end(self, data: bytes, scan: bytes, pos: int) -> int:
        """Where the traditional frames from *pos* end: after a LF, or at the end."""
        if self._strict:
            newline = scan.find(b"\n", pos)
            return len(data) if newline < 0 else newline + 1
        found = _FRAME_START.search(scan, pos)
        return len(data) if found is None else found.start() + 1

    def _start_frame(self, length: int, header_bytes: int) -> None:
        self._remaining = length
        self._header_bytes = header_bytes
        if length > self._max:
            self.framing_errors += 1
            self._truncated += 1

    def _read_body(self, data: bytes, pos: int, out: bytearray) -> int:
        """Read what *data* holds of the frame's body from *pos*; where it stops."""
        take = min(self._remaining, len(data) - pos)
        end = pos + take
        self._remaining -= take
        body = self._body
        if not body and not self._remaining and take <= self._max:
            out += self._record(data[pos:end])  # the whole frame is in this chunk
            return end
        keep = min(take, self._max - len(body))
        body += data[pos : pos + keep]
        self._discarded += take - keep
        if not self._remaining:
            out += self._record(bytes(body))
            body.clear()
        return end

    def _record(self, body: bytes) -> bytes:
        """One octet-counted record as a line: escaped, newline added ("" if rejected)."""
        if body.endswith(b"\n"):
            body = body[:-1]
        if not self._binary.keep(body, True):
            return b""
        return escape_controls(body) + b"\n"

    def take_pending(self) -> bytes:
        """The record being received, without a newline, and forget it (a cut record)."""
        if self._remaining or self._body:
            body = bytes(self._body)
            self._body.clear()
            self._remaining = 0
            return escape_controls(body) if self._binary.keep(body, True, newline=b"") else b""
        record = self._head + self._lines.take_pending()
        self._head = b""
        return record if self._binary.keep(record, not self._nul, newline=b"") else b""

    def finish(self) -> bytes:
        """The final record if it was not finished (with a newline added); ``b""`` if none."""
        if self._remaining or self._body:
            self._lines.partial_lines += 1
            body = bytes(self._body)
            self._body.clear()
            self._remaining = 0
            return self._record(body)
        if self._head:
            self._lines.feed(self._head)
            self._head = b""
        out = self._lines.finish()
        return self._binary.check(out) if out else out
