"""What ``trio-aggregator serve`` is told: `ServeOptions`, and the defaults."""

from __future__ import annotations

from typing import Any

import attrs

from ._collector import SHUTDOWN_IDLE
from ._lines import DEFAULT_MAX_LINE_BYTES

__all__ = [
    "BATCH_MAX_BYTES",
    "BATCH_MAX_ITEMS",
    "DEFAULT_OUTPUT",
    "DEFAULT_TCP",
    "ROTATE_CHECK_INTERVAL",
    "ServeOptions",
]

DEFAULT_TCP = "127.0.0.1:5140"
"""Where ``serve`` listens when given neither ``--tcp`` nor ``--unix``."""

DEFAULT_OUTPUT = "aggregated.log"

BATCH_MAX_ITEMS = 128
BATCH_MAX_BYTES = 1024 * 1024
ROTATE_CHECK_INTERVAL = 1.0
"""Seconds between rotation checks when fsync is off (``--fsync-interval 0``)."""


def _positive_or_none(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, (int, float)) or not value > 0):
        raise ValueError(f"{attr.name} must be > 0 (or None), not {value!r}")


def _positive(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{attr.name} must be > 0, not {value!r}")


def _non_negative(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{attr.name} must be >= 0, not {value!r}")


@attrs.frozen(kw_only=True)
class ServeOptions:
    """What ``trio-aggregator serve`` is told on its command line."""

    tcp: tuple[tuple[str, int], ...] = ()
    """TCP addresses to listen on, as ``(host, port)``; port 0 picks a free port."""

    unix: tuple[str, ...] = ()
    """Unix socket paths to listen on."""

    output: str = DEFAULT_OUTPUT
    """The file to append to, or ``"-"`` for standard output."""

    rotate_bytes: int | None = attrs.field(default=None, validator=_positive_or_none)
    """Rotate the output when it reaches this size (None: never)."""

    backups: int = attrs.field(default=5, validator=_positive)
    """Rotated files kept, with ``rotate_bytes``."""

    buffer: int = attrs.field(default=256, validator=_positive)
    """Capacity of the aggregator's buffer, in writes (each: the lines of one chunk read)."""

    fsync_interval: float = attrs.field(default=1.0, validator=_non_negative)
    """Seconds between fsyncs of the output; 0 turns periodic fsync off."""

    max_line_bytes: int = attrs.field(default=DEFAULT_MAX_LINE_BYTES, validator=_positive)
    """Longer lines are truncated to this many bytes (the newline not counted)."""

    max_connections: int | None = attrs.field(default=1024, validator=_positive_or_none)
    """Connections served at once; more wait in the listen backlog (None: no limit)."""

    idle_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Close a connection silent for this many seconds (None: never)."""

    shutdown_timeout: float = attrs.field(default=5.0, validator=_non_negative)
    """At shutdown, the most seconds given to clients to finish sending."""

    shutdown_idle: float = attrs.field(default=SHUTDOWN_IDLE, validator=_non_negative)
    """At shutdown, close a listener or connection silent for this many seconds."""

    drain_timeout: float = attrs.field(default=30.0, validator=_non_negative)
    """At shutdown, the most seconds given to the aggregator to write what it holds."""

    quiet: bool = False
    """No status line."""

    status_interval: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Seconds between status lines (None: 1 on a terminal, 10 otherwise)."""

    announce: bool = True
    """Print the ``listening on`` lines first and a summary at the end, on stderr."""

    metrics: tuple[str, int] | None = None
    """Serve the aggregator's Prometheus metrics over HTTP on this ``(host, port)``.

    It needs prometheus-client (the ``prometheus`` extra); None: no metrics.
    """

    def __attrs_post_init__(self) -> None:
        if not self.tcp and not self.unix:
            raise ValueError("give at least one TCP address or Unix socket path")
        if self.output == "-" and self.rotate_bytes is not None:
            raise ValueError("rotation needs a file output, not standard output")
