"""The numbers of a ``serve`` run.

`Counters` are the live totals a `LineCollector` updates (a closed connection's
`LineSplitter` counts are added to them); `ServerStatistics` is a snapshot;
`ServeSummary` is what a `LineServer` reports when it has finished, shown with
`format_table`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trio_aggregator import AggregatorStatistics

    from ._inputs import InputStatistics
    from ._losses import LossSnapshot
    from ._outputs import OutputReport

__all__ = ["Counters", "ServeSummary", "ServerStatistics", "format_table", "input_status"]


@attrs.frozen(kw_only=True)
class ServerStatistics:
    """Counters of a `LineCollector` (a snapshot)."""

    connections_open: int
    connections_total: int
    connections_peak: int
    lines: int
    """Lines handed to the aggregator (truncated and final partial lines included)."""
    bytes_accepted: int
    """Bytes of those lines."""
    bytes_received: int
    lines_truncated: int
    bytes_discarded: int
    """Bytes of over-long lines thrown away (past ``max_line_bytes``)."""
    partial_lines: int
    """Final lines without a newline, kept at disconnect."""
    cut_records: int
    """Lines the server cut (idle timeout, shutdown): marked or dropped, as configured."""
    idle_closed: int
    line_timeouts: int
    """Connections cut because a line was not finished within ``line_timeout``."""
    refused_per_address: int
    """Connections closed at once: their address had ``max_per_address`` already."""
    resets: int
    """Connections that ended with an error (reset by the peer...)."""
    accept_errors: int
    framing_errors: int = 0
    """Malformed frames, and octet-counted frames over ``max_line_bytes`` (see ``_framing``)."""
    binary_records: int = 0
    """Records holding a NUL byte (where NUL does not end one) or invalid UTF-8."""


class Counters:
    """The mutable totals a `LineCollector` updates."""

    __slots__ = (
        "accept_errors",
        "binary_records",
        "bytes_accepted",
        "bytes_discarded",
        "bytes_received",
        "connections_open",
        "connections_peak",
        "connections_total",
        "cut_records",
        "framing_errors",
        "idle_closed",
        "line_timeouts",
        "lines",
        "lines_truncated",
        "partial_lines",
        "refused_per_address",
        "resets",
    )

    def __init__(self) -> None:
        self.accept_errors = self.bytes_accepted = self.bytes_discarded = 0
        self.bytes_received = self.connections_open = self.connections_peak = 0
        self.connections_total = self.idle_closed = self.lines = self.lines_truncated = 0
        self.partial_lines = self.resets = self.cut_records = 0
        self.line_timeouts = self.refused_per_address = 0
        self.framing_errors = self.binary_records = 0


@attrs.frozen(kw_only=True)
class ServeSummary:
    """What a `LineServer` did, once it has finished."""

    seconds: float
    output: str
    server: ServerStatistics
    aggregator: AggregatorStatistics
    rotations: int
    cut_records: str = "mark"
    """What was done with the records the server cut: ``"mark"`` or ``"drop"``."""
    losses: LossSnapshot
    """Lines and bytes read and not written, by reason."""
    final_errors: tuple[str, ...] = ()
    """Problems met while closing the output (a failed final fsync...)."""
    outputs: tuple[OutputReport, ...] = ()
    """Each output's own figures (the file, the forward targets), in order."""

    inputs: InputStatistics | None = None
    """The TLS and UDP figures (UDP kernel drops are shown, not in `ok`: never read)."""

    @property
    def lines(self) -> int:
        """Lines handed to the aggregator, from every input (UDP records included)."""
        return self.server.lines + (self.inputs.lines if self.inputs is not None else 0)

    @property
    def ok(self) -> bool:
        """Whether every line read was written: no loss, error, drop, failed fsync or
        framing error (truncated lines and binary records kept do not count)."""
        agg = self.aggregator
        return not (
            self.server.framing_errors
            or self.losses.total_lines
            or self.losses.total_bytes
            or agg.writer_errors
            or agg.callback_errors
            or agg.dropped
            or self.final_errors
            or not all(out.ok for out in self.outputs)
        )

    @property
    def _cut_action(self) -> str:
        return "marked" if self.cut_records == "mark" else "dropped, counted lost"

    def throughput_rows(self) -> list[tuple[str, str]]:
        """The ``lines/s``, ``MB/s``, ``writer calls`` and ``peak buffered`` rows."""
        agg, of = self.aggregator, self.first_output_label()
        seconds = max(self.seconds, 1e-9)
        return [
            ("lines/s", f"{self.lines / seconds:,.0f}"),
            ("MB/s" + of, f"{agg.bytes_written / seconds / 1e6:,.1f}"),
            ("writer calls" + of, f"{agg.writer_calls:,}"),
            (
                "peak buffered" + of,
                f"{agg.peak_nb_processing:,} writes incl. the writer's batch"
                f" (buffer size {agg.buffer_size:,})",
            ),
        ]

    def first_output_label(self) -> str:
        """With several outputs, which one the aggregator figures are of; else ``""``."""
        if len(self.outputs) < 2:
            return ""
        return f" ({self.outputs[0].kind} {self.outputs[0].name})"

    def rows(self) -> list[tuple[str, str]]:
        """The summary as ``(label, value)`` rows."""
        s, agg, of = self.server, self.aggregator, self.first_output_label()
        rows = [
            ("seconds", f"{self.seconds:.2f}"),
            ("connections", f"{s.connections_total:,} (peak {s.connections_peak:,} at once)"),
            ("lines", f"{self.lines:,}"),
            ("bytes received", f"{s.bytes_received:,}"),
            ("bytes written" + of, f"{agg.bytes_written:,}"),
            *self.throughput_rows(),
            ("truncated lines", f"{s.lines_truncated:,} ({s.bytes_discarded:,} bytes discarded)"),
            ("partial lines", f"{s.partial_lines:,} (client closed mid-line: kept)"),
            ("cut records", f"{s.cut_records:,} (cut by the server: {self._cut_action})"),
            ("framing errors", f"{s.framing_errors:,} (malformed or over-long frames)"),
            ("binary records", f"{s.binary_records:,} (NUL or invalid UTF-8; see --binary)"),
            ("idle closed", f"{s.idle_closed:,}"),
            ("line timeouts", f"{s.line_timeouts:,}"),
            ("refused", f"{s.refused_per_address:,} (too many from one address)"),
            ("resets", f"{s.resets:,}"),
            *(self.inputs.rows() if self.inputs is not None else ()),
            ("errors", f"{agg.writer_errors + agg.callback_errors + s.accept_errors:,}"),
            ("lost lines", self.losses.describe()),
            ("dropped writes" + of, f"{agg.dropped:,} (aggregator items: chunks of lines)"),
            ("output", self.output + (f" ({self.rotations} rotations)" if self.rotations else "")),
        ]
        rows.extend(self.output_rows())
        rows.extend(("error", message) for message in self.final_errors)
        return rows

    def output_rows(self) -> list[tuple[str, str]]:
        """A row per output when there are several or one forwards; SIGHUP reopenings."""
        reports = self.outputs
        if len(reports) == 1 and reports[0].kind == "file":
            reopenings = reports[0].reopenings
            return [("reopened", f"{reopenings:,} (SIGHUP)")] if reopenings else []
        return [(f"{out.kind} {out.name}", out.describe()) for out in reports]


def input_status(server: ServerStatistics) -> str:
    """The status line's part about the input: truncated, framing errors, binary."""
    return (
        f" | truncated {server.lines_truncated:,} ({server.bytes_discarded:,} bytes discarded)"
        f" | framing errors {server.framing_errors:,} | binary {server.binary_records:,}"
    )


def format_table(rows: Sequence[tuple[str, str]], indent: str = "  ") -> str:
    """Rows of ``(label, value)`` as aligned text, one row a line."""
    width = max((len(label) for label, _ in rows), default=0)
    return "\n".join(f"{indent}{label:<{width}}  {value}" for label, value in rows)
