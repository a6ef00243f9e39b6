"""Turning results into a printed table, target verdicts, JSON and a PNG chart."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from .scaling import BlockedResult

MB = 1_000_000


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
    """A plain-text (or reST simple) table, numbers right-aligned."""
    body = [list(r) for r in rows]
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
        return "\n".join([rule, line(headers), rule, *(line(r) for r in body), rule])
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in body)])


def throughput_table(rows: Sequence[Row], *, rst: bool = False) -> str:
    """Every measured case: items/s, MB/s, writer calls, latency, noise."""
    headers = [
        "case",
        "size",
        "prod",
        "items/s",
        "MB/s",
        "writer calls",
        "items/call",
        "p50 us",
        "p99 us",
        "worst/best",
        "CPU/wall",
        "items/CPU s",
    ]
    cells = [
        [
            r.case,
            size_label(r.size),
            str(r.producers),
            _fmt(r.items_per_s, 0),
            _fmt(r.mb_per_s, 1),
            f"{r.writer_calls:,}",
            _fmt(r.items_per_call, 1),
            _fmt(r.p50_us, 0),
            _fmt(r.p99_us, 0),
            _fmt(r.worst_over_best, 2),
            _fmt(r.cpu_share, 2),
            _fmt(r.items_per_cpu_s, 0),
        ]
        for r in rows
    ]
    return render_table(headers, cells, rst=rst)


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
        "CPU ms",
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
            _fmt(r.best_cpu * 1000, 1),
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


def draw_chart(path: Path, rows: Sequence[Row], title: str) -> bool:
    """Draw items/s against producers per case (one panel per size) plus the file case.

    Returns False (and draws nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False

    sizes = sorted({r.size for r in rows if r.group == "throughput"})
    file_rows = [r for r in rows if r.group == "file"]
    panels = len(sizes) + (1 if file_rows else 0)
    if panels == 0:
        return False
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 5.4), squeeze=False)
    styles = {
        "trio_channel": ("black", "-", "o"),
        "trio_channel_drain": ("gray", "--", "o"),
        "agg_write": ("tab:blue", "-", "s"),
        "agg_write_b64": ("tab:blue", "--", "^"),
        "agg_write_b256": ("tab:blue", ":", "v"),
        "agg_nowait": ("tab:green", "-", "s"),
        "agg_nowait_b256": ("tab:green", ":", "v"),
        "anyio_stream": ("tab:purple", "-", "d"),
        "asyncio_queue": ("tab:orange", "-", "x"),
        "logging_queue": ("tab:red", "-", "+"),
    }
    for ax, size in zip(axes[0], sizes, strict=False):
        sel = [r for r in rows if r.group == "throughput" and r.size == size]
        cases: list[str] = []
        for r in sel:
            if r.case not in cases:
                cases.append(r.case)
        for case in cases:
            pts = sorted((r.producers, r.items_per_s) for r in sel if r.case == case)
            color, ls, marker = styles.get(case, ("tab:brown", "-", "."))
            ax.plot(
                [p for p, _ in pts],
                [v for _, v in pts],
                label=case,
                color=color,
                linestyle=ls,
                marker=marker,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("producers")
        ax.set_ylabel("items/s")
        ax.set_title(f"{size_label(size)} items, no-op writer")
        ax.grid(True, which="both", alpha=0.3)
    if sizes:
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(  # pyright: ignore[reportUnknownMemberType]
            handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False
        )
    if file_rows:
        ax = axes[0][panels - 1]
        short = {
            "naive_file": "naive",
            "agg_file_thread": "agg thread",
            "agg_file_inline": "agg inline",
        }
        labels = [f"{short.get(r.case, r.case)}\n{size_label(r.size)}" for r in file_rows]
        values = [r.items_per_s for r in file_rows]
        colors = ["tab:red" if r.case.startswith("naive") else "tab:blue" for r in file_rows]
        ax.bar(range(len(values)), values, color=colors)
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("lines/s")
        ax.set_title(f"file of lines, {file_rows[0].producers} producers")
        ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.suptitle(title, fontsize=10)  # pyright: ignore[reportUnknownMemberType]
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)  # pyright: ignore[reportUnknownMemberType]
    plt.close(fig)
    return True
