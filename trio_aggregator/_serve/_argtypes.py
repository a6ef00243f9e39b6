"""The types of the ``trio-aggregator`` arguments: sizes, counts, seconds, modes.

Each parses one argument's text and checks it with the app's rules (``_checks``),
raising `argparse.ArgumentTypeError` (or, for `parse_size`, `ValueError`) with a
message that says what is wrong.
"""

from __future__ import annotations

import argparse
import functools

from ._checks import check_count, check_seconds
from ._listeners import parse_tcp_address
from ._options import MIN_INTERVAL

__all__ = [
    "MAX_SIZE",
    "count_arg",
    "interval_arg",
    "octal_mode_arg",
    "parse_size",
    "positive_interval_arg",
    "seconds_arg",
    "size_arg",
    "tcp_address_arg",
]

_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2}
_SIZE_UNITS.update({"MB": 1024**2, "MIB": 1024**2, "G": 1024**3, "GB": 1024**3, "GIB": 1024**3})
MAX_SIZE = 1024**4
"""The largest size any option takes (1 TiB); ``--max-line-bytes`` has its own, lower."""


def parse_size(text: str, maximum: int = MAX_SIZE) -> int:
    """A byte count: ``65536``, ``64K``, ``10M``, ``1G`` (binary units, case ignored).

    Raises:
        ValueError: Not a positive size, or above *maximum*.
    """
    stripped = text.strip().upper()
    number = stripped.rstrip("KMGIB")
    unit = stripped[len(number) :]
    if not number.isdigit() or unit not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 65536, 64K, 10M, 1G)")
    value = int(number) * _SIZE_UNITS[unit]
    return check_count("a size in bytes", value, maximum=maximum)


def size_arg(text: str, maximum: int = MAX_SIZE) -> int:
    try:
        return parse_size(text, maximum)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def octal_mode_arg(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r} (e.g. 660)") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"mode must be 000 to 777, not {text!r}")
    return mode


def count_arg(minimum: int, maximum: int | None = None) -> functools.partial[int]:
    return functools.partial(_int_at_least, minimum, maximum)


def _int_at_least(minimum: int, maximum: int | None, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    try:
        return check_count("N", value, minimum=minimum, maximum=maximum)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds_arg(text: str, *, positive: bool = False, at_least: float = 0.0) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    try:
        return check_seconds("SECONDS", value, finite=True, positive=positive, at_least=at_least)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


interval_arg = functools.partial(seconds_arg, at_least=MIN_INTERVAL)
positive_interval_arg = functools.partial(seconds_arg, positive=True, at_least=MIN_INTERVAL)


def tcp_address_arg(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[IPV6]:PORT``) as ``(host, port)``."""
    try:
        return parse_tcp_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
