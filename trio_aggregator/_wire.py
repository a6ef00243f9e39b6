"""Records on the wire: the two framings of RFC 6587 a `TcpForwardSink` sends.

A record is a line: the bytes up to and including an LF (a last one without LF is a
record too). ``lines`` sends them as they are, each ended with LF; ``octet-counted``
sends each as ``LEN SP MSG`` with the LF left out, so a receiver never has to look for
the end of a record (rsyslog's imtcp tells the two apart by the first byte).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ._sinks import Data

__all__ = ["FRAMINGS", "Framing", "as_list", "count_records", "frame_lines", "frame_octet_counted"]

Framing = Literal["lines", "octet-counted"]
"""How records are framed on the wire (RFC 6587): LF-terminated, or ``LEN SP MSG``."""

FRAMINGS: tuple[Framing, ...] = ("lines", "octet-counted")


def count_records(buffers: list[bytes]) -> int:
    """How many records *buffers* hold."""
    return sum(buf.count(b"\n") + (0 if buf.endswith(b"\n") else 1) for buf in buffers if buf)


def as_list(data: Data) -> list[bytes]:
    """What a sink was given, as the list of buffers it is."""
    if isinstance(data, list):
        return data
    return [bytes(data)]


def frame_lines(buffers: list[bytes]) -> bytes:
    """Join *buffers*, each ended with LF (one is added where it is missing)."""
    return b"".join(buf if buf.endswith(b"\n") else buf + b"\n" for buf in buffers if buf)


_PREFIXES = [b"%d " % n for n in range(2048)]
"""``LEN SP`` of the common lengths, made once (framing is per line, so it counts)."""


def frame_octet_counted(buffers: list[bytes]) -> bytes:
    """Each line of *buffers* as ``LEN SP MSG`` (RFC 6587), MSG without its LF."""
    out: list[bytes] = []
    for buf in buffers:
        lines = buf.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        lengths = list(map(len, lines))
        framed = [b""] * (2 * len(lines))
        if lengths and max(lengths) < len(_PREFIXES):
            framed[0::2] = list(map(_PREFIXES.__getitem__, lengths))
        else:
            framed[0::2] = [b"%d " % n for n in lengths]
        framed[1::2] = lines
        out += framed
    return b"".join(out)
