"""`StatusDisplay`: the live status line on standard error."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, TextIO

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

Counts = tuple[int, int]
"""Lines and bytes so far, to compute the next line's rates from."""

_KEPT_SEGMENTS = 3
"""The first parts of the status line (connections, lines/s, MB/s), always shown."""
_NONZERO = re.compile(r"[1-9]")


def fit_status(text: str, width: int | None) -> str:
    """*text* within *width* columns (None: as it is), for a line redrawn in place.

    A line longer than the terminal wraps, and ``\r`` then redraws only its last row:
    the terminal fills with copies. So the parts that say nothing (every figure 0) go
    first, then the end is cut, marked ``...``.
    """
    if width is None or len(text) < width:
        return text
    parts = text.split(" | ")
    kept = parts[:_KEPT_SEGMENTS] + [p for p in parts[_KEPT_SEGMENTS:] if _NONZERO.search(p)]
    text = " | ".join(kept)
    return text if len(text) < width else text[: max(width - 4, 0)] + "..."


def _terminal_width(stream: TextIO) -> int | None:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # not a real terminal (a test's stream)
        return None


class StatusDisplay:
    """Shows a status line every so often: in place on a terminal, one line each otherwise."""

    def __init__(self, stream: Callable[[], TextIO], interval: float | None) -> None:
        self._stream = stream
        self._interval = interval
        self._shown = False

    def _is_tty(self) -> bool:
        isatty = getattr(self._stream(), "isatty", None)
        return bool(isatty is not None and isatty())

    async def show(self, status_line: Callable[[float, Counts], tuple[str, Counts]]) -> None:
        """Print ``status_line(seconds, counts)`` every interval (1 s on a terminal, else 10 s)."""
        tty = self._is_tty()
        interval = self._interval or (1.0 if tty else 10.0)
        counts = (0, 0)
        last = trio.current_time()
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            text, counts = status_line(now - last, counts)
            last = now
            stream = self._stream()
            if tty:
                stream.write(f"\r\x1b[K{fit_status(text, _terminal_width(stream))}")
                stream.flush()
                self._shown = True
            else:
                print(text, file=stream, flush=True)

    def clear(self) -> None:
        """Erase a status line shown in place, before other output."""
        if self._shown:
            self._stream().write("\r\x1b[K")
            self._shown = False
