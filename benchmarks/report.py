"""Turning results into printed tables, target verdicts, JSON and the docs page's tables."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from pathlib import Path

    from .aggregator_cases import MemoryResult
    from .scaling import BlockedResult

MB = 1_000_000
MARK_START = ".. benchmark-results-start"
MARK_END = ".. benchmark-results-end"


@dataclass
class Row:
    """One throughput (or file) case at one size and producer count."""

    group: str
    """``throughput`` or ``file``."""
    case: str
    size: int
    producers: int
    items: int
    elapsed: float
    items_per_s: float
    mb_per_s: float
    writer_calls: int
    items_per_call: float
    p50_us: float
    p99_us: float
    latency_samples: int
    reps_items_per_s: list[float] = field(default_factory=list[float])
    items_per_cpu_s: float = math.nan
    """Best items per CPU second of the process over the repetitions."""
    cpu_share: float = math.nan
    """CPU seconds over wall seconds in the best repetition (< 1: the process waited)."""

    @property
    def worst_over_best(self) -> float:
        """Slowest repetition over the best one: how noisy the machine was."""
        if not self.reps_items_per_s:
            return math.nan
        return min(self.reps_items_per_s) / max(self.reps_items_per_s)


@dataclass
class Target:
    """One of the issue's targets, evaluated inside the run."""

    name: str
    detail: str
    value: float
    unit: str
    need: str
    passed: bool | None
    """None when the cases it needs did not run."""
    cpu_value: float = math.nan
    """The same ratio computed from items per CPU second (a check against machine noise)."""

    @property
    def verdict(self) -> str:
        """PASS, MISS or n/a."""
        if self.passed is None:
            return "n/a"
        return "PASS" if self.passed else "MISS"


def _fmt(value: float, digits: int = 1) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def size_label(size: int) -> str:
    """64 -> '64 B', 4096 -> '4 KiB'."""
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


def render_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, rst: bool = False
) -> str:
    """A plain-text (or reST simple) table, numbers right-aligned.

    The reST table has the ``benchmark-table`` class (custom.css right-aligns its
    figures and keeps them on one line), and a lone ``-`` is escaped: reST would read it
    as a bullet list.
    """
    body = [[("\\-" if rst and cell == "-" else cell) for cell in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in body:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out: list[str] = []
        for i, cell in enumerate(cells):
            out.append(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]))
        return "  ".join(out).rstrip()

    if rst:
        rule = "  ".join("=" * w for w in widths)
        table = [rule, line(headers), rule, *(line(r) for r in body), rule]
        return "\n".join([".. rst-class:: benchmark-table", "", *table])
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in body)])


_COLUMNS: dict[str, Callable[[Row], str]] = {
    "case": lambda r: r.case,
    "size": lambda r: size_label(r.size),
    "prod": lambda r: str(r.producers),
    "items/s": lambda r: _fmt(r.items_per_s, 0),
    "MB/s": lambda r: _fmt(r.mb_per_s, 1),
    "writer calls": lambda r: f"{r.writer_calls:,}",
    "items/call": lambda r: _fmt(r.items_per_call, 1),
    "p50 us": lambda r: _fmt(r.p50_us, 0),
    "p99 us": lambda r: _fmt(r.p99_us, 0),
    "worst/best": lambda r: _fmt(r.worst_over_best, 2),
    "CPU/wall": lambda r: _fmt(r.cpu_share, 2),
    "items/CPU s": lambda r: _fmt(r.items_per_cpu_s, 0),
}
THROUGHPUT_COLUMNS = ("case", "size", "prod", "items/s", "MB/s", "writer calls", "items/call")
"""What each case did: throughput and batching."""
LATENCY_COLUMNS = (
    "case",
    "size",
    "prod",
    "p50 us",
    "p99 us",
    "worst/best",
    "CPU/wall",
    "items/CPU s",
)
"""How long items waited, and how noisy the run was."""
UNTIMED_COLUMNS = ("case", "size", "prod", "items/s", "writer calls", "items/call", "worst/best")
"""For the cases without a latency pass (file, scaling)."""


def throughput_table(
    rows: Sequence[Row], *, rst: bool = False, columns: Sequence[str] = THROUGHPUT_COLUMNS
) -> str:
    """The measured cases, one line each, with *columns* (a page-width table each)."""
    cells = [[_COLUMNS[c](r) for c in columns] for r in rows]
    return render_table(columns, cells, rst=rst)


def matrix_table(rows: Sequence[Row], size: int, *, rst: bool = False) -> str:
    """Thousands of items/s: one line per case, one column per producer count."""
    sel = [r for r in rows if r.size == size and r.group == "throughput"]
    producers = sorted({r.producers for r in sel})
    cases: list[str] = []
    for r in sel:
        if r.case not in cases:
            cases.append(r.case)
    index = {(r.case, r.producers): r for r in sel}
    headers = [f"k items/s, {size_label(size)}", *(f"{p} prod" for p in producers)]
    cells: list[list[str]] = []
    for case in cases:
        line = [case]
        for p in producers:
            found = index.get((case, p))
            line.append(_fmt(found.items_per_s / 1000, 0) if found else "-")
        cells.append(line)
    return render_table(headers, cells, rst=rst)


def blocked_table(results: Sequence[BlockedResult], *, rst: bool = False) -> str:
    """The blocked-tasks cases: time from the first close/cancel until every task ended.

    ``loop ms`` is the close/cancel loop alone (best repetition), before the tasks run.
    """
    headers = [
        "blocked tasks",
        "impl",
        "tasks",
        "best ms",
        "median ms",
        "worst/best",
        "us/task",
        "loop ms",
    ]
    cells = [
        [
            r.case,
            r.impl,
            f"{r.tasks:,}",
            _fmt(r.best * 1000, 1),
            _fmt(r.median * 1000, 1),
            _fmt(r.worst_over_best, 2),
            _fmt(r.best / r.tasks * 1e6, 1),
            _fmt(r.best_loop * 1000, 1),
        ]
        for r in results
    ]
    return render_table(headers, cells, rst=rst)


def targets_table(targets: Sequence[Target], *, rst: bool = False) -> str:
    """Each target with its measured value, the need and PASS/MISS."""
    headers = ["target", "measured", "need", "verdict", "by CPU time"]
    cells = [
        [
            f"{t.name}: {t.detail}",
            f"{_fmt(t.value, 2)}{t.unit}" if not math.isnan(t.value) else "-",
            t.need,
            t.verdict,
            f"{_fmt(t.cpu_value, 2)}{t.unit}" if not math.isnan(t.cpu_value) else "-",
        ]
        for t in targets
    ]
    return render_table(headers, cells, rst=rst)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write *payload* as indented JSON, NaN as null."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(value: Any) -> Any:
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
        if isinstance(value, list):
            return [clean(v) for v in value]  # pyright: ignore[reportUnknownVariableType]
        return value

    path.write_text(json.dumps(clean(payload), indent=1) + "\n")


def rows_as_dicts(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Rows for the JSON file."""
    return [asdict(r) for r in rows]


def update_docs_page(page: Path, text: str) -> bool:
    """Replace what lies between the two marker comments of *page*; False if none."""
    if not page.exists():
        return False
    content = page.read_text()
    start, end = content.find(MARK_START), content.find(MARK_END)
    if start < 0 or end < start:
        return False
    head = content[: start + len(MARK_START)]
    page.write_text(f"{head}\n\n{text.rstrip()}\n\n{content[end:]}")
    return True


def _times(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def full_report(
    rows: Sequence[Row],
    memory: Sequence[MemoryResult],
    startstop: dict[str, dict[str, float]],
    micro: dict[str, float],
    targets: Sequence[Target],
    skipped: dict[str, str],
    blocked: Sequence[BlockedResult] = (),
    served_ratios: Sequence[dict[str, Any]] = (),
    *,
    rst: bool = False,
) -> str:
    """The whole report: plain text for the terminal, or reST tables for the docs.

    *served_ratios* are the serve cases' ratios (``runner.serve_ratios``), shown under
    their table.
    """
    out: list[str] = []
    throughput = [r for r in rows if r.group == "throughput"]
    for size in sorted({r.size for r in throughput}):
        out += [matrix_table(throughput, size, rst=rst), ""]
    if throughput:
        out += [throughput_table(throughput, rst=rst), ""]
        out += [throughput_table(throughput, rst=rst, columns=LATENCY_COLUMNS), ""]
    for group in ("file", "scaling", "serve"):
        others = [r for r in rows if r.group == group]
        if others:
            out += [throughput_table(others, rst=rst, columns=UNTIMED_COLUMNS), ""]
    if served_ratios:
        headers = ["serve lines/s ratio", "cases", "wall clock", "by CPU time"]
        cells = [
            [r["ratio"], r["detail"], f"{r['wall']:.2f}x", _times(r["cpu"])] for r in served_ratios
        ]
        out += [render_table(headers, cells, rst=rst), ""]
    if blocked:
        out += [blocked_table(blocked, rst=rst), ""]
    if memory:
        headers = ["memory, 64 B items", "bytes/item (peak)", "payload object", "overhead"]
        cells = [
            [
                m.case,
                f"{m.peak_per_item:.1f}",
                f"{m.payload_bytes}",
                f"{m.overhead_per_item:.1f}",
            ]
            for m in memory
        ]
        out += [render_table(headers, cells, rst=rst), ""]
    if startstop:
        headers = ["start+stop cycle", "median ms", "p90 ms", "min ms", "cycles"]
        cells = [
            [
                name,
                f"{s['median_ms']:.3f}",
                f"{s['p90_ms']:.3f}",
                f"{s['min_ms']:.3f}",
                f"{int(s['cycles'])}",
            ]
            for name, s in startstop.items()
        ]
        out += [render_table(headers, cells, rst=rst), ""]
    if micro:
        headers = ["per item, no task switch", "ns"]
        cells = [[name, f"{ns:,.0f}"] for name, ns in micro.items()]
        out += [render_table(headers, cells, rst=rst), ""]
    for name, reason in skipped.items():
        out.append(f"skipped {name}: {reason}")
    if targets:
        passed = sum(1 for t in targets if t.passed)
        missed = sum(1 for t in targets if t.passed is False)
        out += [targets_table(targets, rst=rst), "", f"targets: {passed} PASS, {missed} MISS"]
    return "\n".join(out)


def published_header(meta: dict[str, Any]) -> str:
    """The line above the docs page's tables: the command, date, versions and load."""
    versions = meta["versions"]
    return (
        f"Measured with ``{meta['command']}`` on {meta['date']} "
        f"({meta['platform']}, {meta['cpus']} CPUs, Python "
        f"{versions['python']}, trio {versions['trio']}, anyio "
        f"{versions.get('anyio', '-')}, trio_aggregator at {meta['git']}; "
        f"{meta['wall_seconds']:.0f} s; load average {meta['load_average_before']} before, "
        f"{meta['load_average_after']} after)."
    )
