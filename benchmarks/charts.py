"""The performance page's charts: one PNG per question, readable at page width.

Each chart answers one question with a few series. The aggregator's series are solid,
thick and coloured (Okabe-Ito colours, distinct for colour-blind readers too); the
baselines are grey, thin and dashed or dotted. The figures are 7.4 inches wide at 100
dpi of layout, the width of the docs' text column (about 740 px), and saved at twice
that resolution for sharp screens: a font of N points is about 1.4 N px on the page, so
the smallest text (10 pt) is about 14 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .report import Row, size_label

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

WIDTH_IN = 7.4  # inches: the docs' text column at 100 px per inch
DPI = 200  # twice the layout resolution, for sharp screens


@dataclass(frozen=True)
class Series:
    """How one case is drawn, in every chart it appears in."""

    label: str
    ours: bool
    color: str
    marker: str
    linestyle: str = "-"


SERIES: dict[str, Series] = {
    # trio_aggregator: solid, saturated.
    "agg_write": Series("aggregator, await write", True, "#0072B2", "o"),
    "agg_write_b64": Series("aggregator, batches of up to 64", True, "#009E73", "s"),
    "agg_write_b256": Series("aggregator, batches of up to 256", True, "#D55E00", "^"),
    "agg_nowait": Series("aggregator, write_nowait", True, "#CC79A7", "D"),
    "agg_nowait_b256": Series("aggregator, write_nowait, batches of 256", True, "#E69F00", "v"),
    "agg_file_thread": Series("aggregator, writer in a thread", True, "#0072B2", ""),
    "agg_file_inline": Series("aggregator, writer in the event loop", True, "#D55E00", ""),
    # Baselines: grey, dashed or dotted (at most one dark and one light per chart).
    "trio_channel": Series("trio memory channel (baseline)", False, "#333333", "o", "--"),
    "trio_channel_drain": Series(
        "trio channel, batching by hand (baseline)", False, "#999999", "s", ":"
    ),
    "anyio_stream": Series("anyio memory stream (baseline)", False, "#999999", "^", ":"),
    "asyncio_queue": Series("asyncio.Queue (baseline)", False, "#333333", "x", "--"),
    "logging_queue": Series("logging QueueHandler (baseline)", False, "#999999", "+", ":"),
    "naive_file": Series("trio.open_file + Lock (baseline)", False, "#999999", ""),
}


@dataclass(frozen=True)
class LineChart:
    """items/s against producers for a few cases at one item size."""

    name: str
    title: str
    cases: tuple[str, ...]
    size: int = 64


LINE_CHARTS = (
    LineChart(
        "per-item",
        "One writer call per item: the aggregator and a bare Trio channel",
        ("trio_channel", "anyio_stream", "agg_write"),
    ),
    LineChart(
        "batching",
        "Batching: the aggregator and a hand-written batching consumer",
        ("trio_channel", "trio_channel_drain", "agg_write_b64", "agg_write_b256"),
    ),
    LineChart(
        "nowait",
        "Producers that yield only when the buffer is full: the aggregator and asyncio",
        ("asyncio_queue", "logging_queue", "agg_nowait", "agg_nowait_b256"),
    ),
)
FILE_CASES = ("naive_file", "agg_file_thread", "agg_file_inline")
CHART_NAMES = (*(c.name for c in LINE_CHARTS), "file")


def _pyplot() -> Any:
    """matplotlib.pyplot with the Agg backend and the page's font sizes, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    plt.rcParams.update(
        {
            "font.size": 10.5,
            "axes.titlesize": 11,
            "axes.labelsize": 10.5,
            "xtick.labelsize": 10,
            "ytick.labelsize": 10,
            "legend.fontsize": 10,
        }
    )
    return plt


def _thousands(value: float, _pos: object = None) -> str:
    """1200000 -> '1.2M', 123456 -> '123k', 6590 -> '6.6k', 0 -> '0'."""
    if not value:
        return "0"
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    return f"{value / 1000:,.1f}k" if abs(value) < 10_000 else f"{value / 1000:,.0f}k"


def _line_chart(plt: Any, path: Path, chart: LineChart, rows: Sequence[Row]) -> bool:
    sel = [r for r in rows if r.group == "throughput" and r.size == chart.size]
    cases = [c for c in chart.cases if any(r.case == c for r in sel)]
    if not cases:
        return False
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.4), layout="constrained")
    for case in cases:
        style = SERIES[case]
        pts = sorted((r.producers, r.items_per_s) for r in sel if r.case == case)
        ax.plot(
            [p for p, _ in pts],
            [v for _, v in pts],
            label=style.label,
            color=style.color,
            linestyle=style.linestyle,
            marker=style.marker,
            linewidth=2.6 if style.ours else 1.6,
            markersize=6 if style.ours else 5,
            zorder=3 if style.ours else 2,
        )
    producers = sorted({r.producers for r in sel})
    ax.set_xscale("log")
    ax.set_xticks(producers, [f"{p:,}" for p in producers])
    ax.minorticks_off()
    ax.set_xlabel("producer tasks")
    ax.set_ylabel(f"items/s ({size_label(chart.size)} items)")
    ax.yaxis.set_major_formatter(_thousands)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.set_title(chart.title, loc="left")
    fig.legend(loc="outside lower center", ncol=2, frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    _save(plt, fig, path)
    return True


def _file_chart(plt: Any, path: Path, rows: Sequence[Row]) -> bool:
    sel = [r for r in rows if r.group == "file"]
    cases = [c for c in FILE_CASES if any(r.case == c for r in sel)]
    if not cases:
        return False
    sizes = sorted({r.size for r in sel})
    index = {(r.case, r.size): r.items_per_s for r in sel}
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 3.6), layout="constrained")
    height = 0.8 / len(cases)
    for i, case in enumerate(cases):
        style = SERIES[case]
        ys = [s + i * height for s in range(len(sizes))]
        values = [index.get((case, size), math.nan) for size in sizes]
        bars = ax.barh(
            ys,
            values,
            height=height * 0.9,
            color=style.color,
            hatch="" if style.ours else "//",
            edgecolor="white" if style.ours else "#666666",
            label=style.label,
        )
        ax.bar_label(bars, labels=[_thousands(v) for v in values], padding=3, fontsize=10)
    ax.set_yticks([s + 0.4 - height / 2 for s in range(len(sizes))], [size_label(s) for s in sizes])
    ax.invert_yaxis()
    ax.set_xlabel("lines/s into one file")
    ax.xaxis.set_major_formatter(_thousands)
    ax.set_xlim(right=max(index.values()) * 1.15)
    producers = sel[0].producers
    ax.set_title(f"{producers} producer tasks write lines to one file", loc="left")
    fig.legend(loc="outside lower center", ncol=2, frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    _save(plt, fig, path)
    return True


def _save(plt: Any, fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def chart_path(directory: Path, prefix: str, name: str) -> Path:
    """Where the chart *name* goes: ``<directory>/<prefix>-<name>.png``."""
    return directory / f"{prefix}-{name}.png"


def draw_charts(directory: Path, prefix: str, rows: Sequence[Row]) -> list[Path] | None:
    """Draw every chart the *rows* have data for; None when matplotlib is not installed."""
    plt = _pyplot()
    if plt is None:
        return None
    drawn: list[Path] = []
    for chart in LINE_CHARTS:
        path = chart_path(directory, prefix, chart.name)
        if _line_chart(plt, path, chart, rows):
            drawn.append(path)
    path = chart_path(directory, prefix, "file")
    if _file_chart(plt, path, rows):
        drawn.append(path)
    return drawn
