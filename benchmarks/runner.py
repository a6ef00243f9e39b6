"""Command line of the benchmark suite: ``python -m benchmarks [--smoke] [options]``."""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import aggregator_cases as agg
from . import baselines, scaling, serve_cases
from ._common import CaseFn, CaseResult, Params, median, percentile, run_group
from .charts import draw_charts
from .micro import micro_costs
from .report import (
    MB,
    Row,
    Target,
    full_report,
    published_header,
    rows_as_dicts,
    size_label,
    update_docs_page,
    write_json,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
STATIC = ROOT / "docs" / "_static"
DOCS_PAGE = ROOT / "docs" / "performance.rst"


@dataclass(frozen=True)
class Case:
    """A named throughput case and what it needs to run."""

    name: str
    fn: CaseFn
    description: str
    needs: str = ""
    """``aggregator``, ``anyio`` or ``rsyslogd`` when the case needs that."""


THROUGHPUT_CASES: tuple[Case, ...] = (
    Case("trio_channel", baselines.trio_channel, "bare trio.open_memory_channel, per item"),
    Case(
        "trio_channel_drain",
        baselines.trio_channel_drain,
        "bare channel, consumer drains <= 256 buffered items and joins them",
    ),
    Case("agg_write", agg.agg_case(batch=1), "aggregator, await write, per item", "aggregator"),
    Case(
        "agg_write_b64",
        agg.agg_case(batch=64),
        "aggregator, await write, batch_max_items=64",
        "aggregator",
    ),
    Case(
        "agg_write_b256",
        agg.agg_case(batch=256),
        "aggregator, await write, batch_max_items=256",
        "aggregator",
    ),
    Case(
        "agg_nowait",
        agg.agg_case(nowait=True),
        "aggregator, write_nowait (await write on WouldBlock), per item",
        "aggregator",
    ),
    Case(
        "agg_nowait_b256",
        agg.agg_case(batch=256, nowait=True),
        "aggregator, write_nowait (await write on WouldBlock), batch_max_items=256",
        "aggregator",
    ),
    Case(
        "anyio_stream",
        baselines.anyio_stream,
        "anyio.create_memory_object_stream, trio backend",
        "anyio",
    ),
    Case("asyncio_queue", baselines.asyncio_queue, "asyncio.Queue, await put / await get"),
    Case(
        "logging_queue",
        baselines.logging_queue,
        "logging QueueHandler + QueueListener, producer threads",
    ),
)

FILE_CASES: tuple[Case, ...] = (
    Case("naive_file", baselines.naive_file, "trio.open_file + trio.Lock, await f.write per line"),
    Case(
        "agg_file_thread",
        agg.agg_file_case(batch=256, writer_thread=True),
        "aggregator, batch_max_items=256, writer_thread=True, unbuffered file",
        "aggregator",
    ),
    Case(
        "agg_file_inline",
        agg.agg_file_case(batch=256, writer_thread=False),
        "aggregator, batch_max_items=256, writer in the event loop, unbuffered file",
        "aggregator",
    ),
)


SERVE_CASES: tuple[Case, ...] = (
    Case(
        "serve_lines",
        serve_cases.serve_case("lines", octet=False),
        "serve --framing lines, newline-delimited input, loopback TCP",
        "aggregator",
    ),
    Case(
        "serve_newline",
        serve_cases.serve_case("auto", octet=False),
        "serve (default framing: auto), newline-delimited input",
        "aggregator",
    ),
    Case(
        "serve_octet",
        serve_cases.serve_case("auto", octet=True),
        "serve (default framing: auto), octet-counted input (RFC 6587)",
        "aggregator",
    ),
    Case(
        "serve_forward",
        serve_cases.forward_case("lines"),
        "serve --forward (no file) to a loopback reader process, newline input",
        "aggregator",
    ),
    Case(
        "serve_forward_octet",
        serve_cases.forward_case("octet-counted"),
        "serve --forward --forward-framing octet-counted, newline input",
        "aggregator",
    ),
    Case(
        "rsyslog_imtcp",
        serve_cases.rsyslog_imtcp,
        "rsyslogd imtcp -> omfile, the newline input of serve_newline",
        "rsyslogd",
    ),
)
"""``serve`` by input framing, and rsyslog on the same load.

Run at ``--serve-size`` (line size) and ``--serve-connections``."""

SERVE_GROUP = "serve"
"""``--cases serve`` selects every serve case."""

SCALING_CASES: tuple[Case, ...] = (
    Case(
        "scale_agg_sender_b256",
        scaling.agg_senders,
        "aggregator, batch_max_items=256, each producer: async with agg.sender() as s, "
        "await s.send",
        "aggregator",
    ),
    Case(
        "scale_trio_channel",
        scaling.trio_channel_clones,
        "bare channel, each producer: async with send.clone() as s, await s.send; per item",
    ),
    Case(
        "scale_trio_channel_drain",
        scaling.trio_channel_drain_clones,
        "the same, consumer drains <= 256 buffered items and joins them",
    ),
)
"""Many producers, a few items each: run at one size (64 B) and ``--scaling-producers``."""

BLOCKED_CASES: dict[str, str] = {
    "scale_close_senders": "close_senders",
    "scale_cancel_writes": "cancel_writes",
}
"""Case name on the command line -> `scaling.BLOCKED_CASES` key."""

BLOCKED_DESCRIPTIONS: dict[str, str] = {
    "scale_close_senders": "close N senders, each with a task blocked in send (full buffer): "
    "aggregator senders vs channel clones",
    "scale_cancel_writes": "cancel, in random order, N tasks blocked in agg.write / "
    "channel send (full buffer)",
}

SCALING_GROUP = "scaling"
"""``--cases scaling`` selects every scaling case."""


def _int_list(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        mult = 1
        if part.endswith("k"):
            part, mult = part[:-1], 1024
        value = int(part) * mult
        if value < 1:
            raise argparse.ArgumentTypeError(f"not a positive number: {part!r}")
        out.append(value)
    if not out:
        raise argparse.ArgumentTypeError("empty list")
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options; ``--smoke`` changes the defaults of the others."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="trio_aggregator against bare channels, asyncio, anyio, logging and a naive "
        "file writer, side by side in one run.",
    )
    p.add_argument("--smoke", action="store_true", help="tiny run that only checks the suite works")
    p.add_argument("--sizes", type=_int_list, help="item sizes in bytes (default 64,4k)")
    p.add_argument("--producers", type=_int_list, help="producer counts (default 1,10,100,1000)")
    p.add_argument("--file-producers", type=int, default=64, help="producers of the file case")
    p.add_argument("--buffer", type=int, default=1024, help="capacity of every bounded buffer")
    p.add_argument("--min-time", type=float, help="seconds per timed repetition (default 0.1)")
    p.add_argument("--repeat", type=int, help="timed repetitions, best kept (default 7)")
    p.add_argument("--items", type=int, help="fixed items per repetition (no calibration)")
    p.add_argument("--cases", help="comma-separated case names to run (default: all); see --list")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--no-latency", action="store_true", help="skip the latency passes")
    p.add_argument("--memory-items", type=int, help="items buffered for the memory measurement")
    p.add_argument("--cycles", type=int, help="start/stop cycles (default 2000)")
    p.add_argument(
        "--scaling-producers",
        type=int,
        help="producer tasks (and blocked tasks) of the scaling cases (default 10000)",
    )
    p.add_argument(
        "--scaling-items",
        type=int,
        default=4,
        help="items per producer, scaling throughput (default 4)",
    )
    p.add_argument(
        "--scaling-seed",
        type=int,
        default=1,
        help="seed of the random cancellation order (default 1)",
    )
    p.add_argument(
        "--serve-size", type=int, default=100, help="line size of the serve cases (default 100)"
    )
    p.add_argument(
        "--serve-connections",
        type=int,
        help="client connections of the serve cases (default 10)",
    )
    p.add_argument("--json", type=Path, help="JSON output (default benchmarks/results/latest.json)")
    p.add_argument(
        "--chart",
        type=Path,
        help="charts: DIR/NAME.png draws DIR/NAME-<question>.png, one per question "
        "(default benchmarks/results/latest.png)",
    )
    p.add_argument("--no-chart", action="store_true", help="draw no chart")
    p.add_argument("--rst", type=Path, help="also write the tables as reST to this file")
    p.add_argument(
        "--publish",
        action="store_true",
        help="also copy the JSON and charts to docs/_static/benchmarks{.json,-*.png} and the "
        "tables into docs/performance.rst (between its benchmark-results markers)",
    )
    args = p.parse_args(argv)
    smoke = args.smoke
    if smoke and args.publish:
        p.error("--publish needs a full run, not --smoke")
    if args.sizes is None:
        args.sizes = [64] if smoke else [64, 4096]
    if args.producers is None:
        args.producers = [1, 10] if smoke else [1, 10, 100, 1000]
    if args.min_time is None:
        args.min_time = 0.02 if smoke else 0.1
    if args.repeat is None:
        args.repeat = 1 if smoke else 7
    if args.items is None and smoke:
        args.items = 1000
    if args.memory_items is None:
        args.memory_items = 2_000 if smoke else 100_000
    if args.cycles is None:
        args.cycles = 30 if smoke else 2_000
    if args.serve_connections is None:
        args.serve_connections = 2 if smoke else 10
    if args.serve_size < 2 or args.serve_connections < 1:
        p.error("--serve-size must be >= 2 and --serve-connections positive")
    if args.scaling_producers is None:
        args.scaling_producers = 500 if smoke else 10_000
    if args.scaling_producers < 1 or args.scaling_items < 1:
        p.error("--scaling-producers and --scaling-items must be positive")
    if args.json is None:
        args.json = RESULTS / ("smoke.json" if smoke else "latest.json")
    if args.chart is None and not smoke:
        args.chart = RESULTS / "latest.png"
    if args.no_chart:
        args.chart = None
    return args


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _skip_reason(case: Case, agg_missing: str | None) -> str | None:
    if case.needs == "aggregator" and agg_missing:
        return f"trio_aggregator unavailable ({agg_missing})"
    if case.needs == "anyio" and not baselines.anyio_available():
        return "anyio not installed"
    if case.needs == "rsyslogd" and serve_cases.rsyslogd() is None:
        return "rsyslogd not installed"
    return None


def _rows(group: str, cases: Sequence[Case], params: Params, args: argparse.Namespace) -> list[Row]:
    latency = group == "throughput" and not args.no_latency
    fixed_items = args.items
    if group == SCALING_GROUP:  # a few items per producer, always: no calibration
        fixed_items = args.scaling_producers * args.scaling_items
    results = run_group(
        {c.name: c.fn for c in cases},
        params,
        min_time=args.min_time,
        repeat=args.repeat,
        fixed_items=fixed_items,
        latency=latency,
    )
    return [_row(group, name, params, res) for name, res in results.items()]


def _row(group: str, case: str, params: Params, res: CaseResult) -> Row:
    m = res.best
    return Row(
        group=group,
        case=case,
        size=params.size,
        producers=params.producers,
        items=m.items,
        elapsed=m.elapsed,
        items_per_s=m.items_per_s,
        mb_per_s=m.nbytes / m.elapsed / MB,
        writer_calls=m.writer_calls,
        items_per_call=m.items / m.writer_calls if m.writer_calls else math.nan,
        p50_us=res.p50_us,
        p99_us=res.p99_us,
        latency_samples=res.samples,
        reps_items_per_s=res.reps,
        items_per_cpu_s=res.best_cpu,
        cpu_share=m.cpu / m.elapsed if m.elapsed > 0 else math.nan,
    )


def _ratio(
    index: dict[tuple[str, int, int], Row], a: str, b: str, size: int, p: int, *, cpu: bool = False
) -> float:
    ra, rb = index.get((a, size, p)), index.get((b, size, p))
    if ra is None or rb is None:
        return math.nan
    if cpu:
        return ra.items_per_cpu_s / rb.items_per_cpu_s
    return ra.items_per_s / rb.items_per_s


#: Scaling throughput target: the per-item bar of T1. With a few items per producer the
#: per-producer costs (start a task, make and close a sender) dominate, so batching
#: cannot buy T2's 3x; but the aggregator should not fall behind a bare channel
#: whose producers each take a clone by more than T1 allows.
SCALING_PRODUCERS_NEED = 0.85
#: Blocked-tasks targets: aggregator seconds over bare-channel seconds, at most.
BLOCKED_NEED = 3.0


def compute_targets(
    rows: Sequence[Row],
    startstop: dict[str, dict[str, float]],
    memory: Sequence[agg.MemoryResult],
    file_producers: int,
    blocked: Sequence[scaling.BlockedResult] = (),
    scaling_producers: int = 0,
    scaling_items: int = 0,
) -> list[Target]:
    """The issue's targets as ratios inside this run."""
    index = {(r.case, r.size, r.producers): r for r in rows}
    sizes = sorted({r.size for r in rows if r.group == "throughput"})
    producers = sorted({r.producers for r in rows if r.group == "throughput"})
    out: list[Target] = []

    def ratio_target(name: str, a: str, b: str, size: int, p: int, need: float) -> None:
        value = _ratio(index, a, b, size, p)
        passed = None if math.isnan(value) else value >= need
        detail = f"{a} / {b}, {p} prod, {size_label(size)}"
        cpu = _ratio(index, a, b, size, p, cpu=True)
        out.append(Target(name, detail, value, "x", f">= {need:g}x", passed, cpu))

    for size in sizes:
        ratio_target("T1 per item", "agg_write", "trio_channel", size, 1, 0.85)
    for size in sizes:
        # The better of the two batched configurations (the user picks the batch size).
        candidates = [
            (_ratio(index, case, "trio_channel", size, 100), case)
            for case in ("agg_write_b64", "agg_write_b256")
        ]
        measured = [c for c in candidates if not math.isnan(c[0])]
        case = max(measured)[1] if measured else "agg_write_b256"
        ratio_target("T2 batched", case, "trio_channel", size, 100, 3.0)
    for size in sizes:
        for p in producers:
            ratio_target("T3 nowait", "agg_nowait_b256", "asyncio_queue", size, p, 1.25)
    for size in sorted({r.size for r in rows if r.group == "file"}):
        ratio_target("T4 file", "agg_file_thread", "naive_file", size, file_producers, 20.0)
    for key, detail in (
        ("open_aggregator", "async with open_aggregator(...) cycle, median"),
        ("aggregator_start_stop", "Aggregator start()+stop() cycle, median"),
    ):
        value = startstop.get(key, {}).get("median_ms", math.nan)
        passed = None if math.isnan(value) else value < 0.3
        out.append(Target("T5 start+stop", detail, value, " ms", "< 0.3 ms", passed))
    for mem in memory:
        if mem.case != "aggregator":
            continue
        value = mem.overhead_per_item
        out.append(
            Target(
                "T6 memory",
                f"peak bytes per buffered {size_label(mem.size)} item beyond the payload",
                value,
                " B",
                "<= 100 B",
                value <= 100,
            )
        )
    if scaling_producers:
        out += scaling_targets(rows, blocked, scaling_producers, scaling_items)
    return out


#: The serve ratios, lines/s of case A over case B's in the same run: octet-counted input
#: and forwarding (lines or octet-counted, no file) against newline input written to a
#: file (all with the default framing), the default framing against ``--framing lines``
#: on newline input, and serve against rsyslog imtcp on the same load.
SERVE_RATIOS = (
    ("octet-counted / newline input", "serve_octet", "serve_newline"),
    ("forwarded / newline input", "serve_forward", "serve_newline"),
    ("forwarded octet-counted / newline input", "serve_forward_octet", "serve_newline"),
    ("framing auto / lines, newline input", "serve_newline", "serve_lines"),
    ("serve / rsyslog imtcp, newline input", "serve_newline", "rsyslog_imtcp"),
)


def serve_ratios(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The `SERVE_RATIOS` measured (wall clock; by CPU time when both ran in this process)."""
    index = {(r.case, r.size, r.producers): r for r in rows if r.group == SERVE_GROUP}
    out: list[dict[str, Any]] = []
    for size, producers in sorted({(size, p) for _, size, p in index}):
        for label, a, b in SERVE_RATIOS:
            value = _ratio(index, a, b, size, producers)
            if math.isnan(value):
                continue
            cpu = math.nan if "rsyslog" in b else _ratio(index, a, b, size, producers, cpu=True)
            detail = f"{a} / {b}, {producers} conns, {size_label(size)} lines"
            out.append({"ratio": label, "detail": detail, "wall": value, "cpu": cpu})
    return out


def scaling_targets(
    rows: Sequence[Row],
    blocked: Sequence[scaling.BlockedResult],
    producers: int,
    items: int,
) -> list[Target]:
    """The scaling targets: the many-producers throughput ratio and two time ratios."""
    index = {(r.case, r.size, r.producers): r for r in rows if r.group == SCALING_GROUP}
    a, b = "scale_agg_sender_b256", "scale_trio_channel"
    value = _ratio(index, a, b, scaling.ITEM_SIZE, producers)
    cpu = _ratio(index, a, b, scaling.ITEM_SIZE, producers, cpu=True)
    out = [
        Target(
            "scaling",
            f"{producers:,} producers x {items} items, {a} / {b} items/s",
            value,
            "x",
            f">= {SCALING_PRODUCERS_NEED:g}x",
            None if math.isnan(value) else value >= SCALING_PRODUCERS_NEED,
            cpu,
        )
    ]
    found = {(r.case, r.impl): r for r in blocked}
    for case, what in (
        ("close_senders", f"close {producers:,} blocked senders"),
        ("cancel_writes", f"cancel {producers:,} blocked writes in random order"),
    ):
        ra, rb = found.get((case, "aggregator")), found.get((case, "trio_channel"))
        if ra is None or rb is None:
            value = cpu = math.nan
        else:
            value, cpu = ra.best / rb.best, ra.best_cpu / rb.best_cpu
        out.append(
            Target(
                "scaling",
                f"{what}, aggregator time / bare channel's",
                value,
                "x",
                f"<= {BLOCKED_NEED:g}x",
                None if math.isnan(value) else value <= BLOCKED_NEED,
                cpu,
            )
        )
    return out


def _git_state() -> str:
    """``<short commit>`` of the checkout, ``+dirty`` when the package has local changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "trio_aggregator"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("trio", "trio-aggregator", "anyio", "attrs", "matplotlib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; return the exit status (0 even when targets are missed)."""
    args = parse_args(argv)
    if args.list:
        for case in (*THROUGHPUT_CASES, *FILE_CASES):
            print(f"{case.name:24} {case.description}")
        print(f"{'memory':24} tracemalloc bytes per buffered item (aggregator and baselines)")
        print(f"{'startstop':24} open_aggregator / Aggregator start+stop cycle times")
        print(f"{'micro':24} ns per item of each step, without task switches")
        for case in SERVE_CASES:
            print(f"{case.name:24} {case.description}")
        print(f"{SERVE_GROUP:24} all the serve cases")
        for case in SCALING_CASES:
            print(f"{case.name:24} {case.description}")
        for name, description in BLOCKED_DESCRIPTIONS.items():
            print(f"{name:24} {description}")
        print(f"{SCALING_GROUP:24} all the scale_* cases (N = --scaling-producers)")
        return 0
    wanted = None if args.cases is None else {c.strip() for c in args.cases.split(",")}
    scaling_names = {c.name for c in SCALING_CASES} | set(BLOCKED_CASES)
    if wanted is not None and SCALING_GROUP in wanted:
        wanted = (wanted - {SCALING_GROUP}) | scaling_names
    serve_names = {c.name for c in SERVE_CASES}
    if wanted is not None and SERVE_GROUP in wanted:
        wanted = (wanted - {SERVE_GROUP}) | serve_names
    known = (
        {c.name for c in (*THROUGHPUT_CASES, *FILE_CASES)}
        | {"memory", "startstop", "micro"}
        | scaling_names
        | serve_names
    )
    if wanted is not None and not wanted <= known:
        print(f"unknown case(s): {', '.join(sorted(wanted - known))}", file=sys.stderr)
        return 2

    def selected(name: str) -> bool:
        return wanted is None or name in wanted

    agg_missing = agg.available()  # imports trio_aggregator: the code measured is this one
    git_state = _git_state()
    if agg_missing:
        _log(f"note: aggregator cases skipped: {agg_missing}")
    started = time.perf_counter()
    load_before = _loadavg()
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="trio-aggregator-bench-") as workdir:
        groups: list[tuple[str, tuple[Case, ...], list[int], list[int]]] = [
            ("throughput", THROUGHPUT_CASES, args.sizes, args.producers),
            ("file", FILE_CASES, args.sizes, [args.file_producers]),
            (SCALING_GROUP, SCALING_CASES, [scaling.ITEM_SIZE], [args.scaling_producers]),
            (SERVE_GROUP, SERVE_CASES, [args.serve_size], [args.serve_connections]),
        ]
        for group, all_cases, sizes, producer_counts in groups:
            cases: list[Case] = []
            for case in all_cases:
                if not selected(case.name):
                    continue
                reason = _skip_reason(case, agg_missing)
                if reason:
                    skipped[case.name] = reason
                else:
                    cases.append(case)
            if not cases:
                continue
            for size in sizes:
                for producers in producer_counts:
                    params = Params(
                        size=size,
                        producers=producers,
                        items=0,
                        buffer=args.buffer,
                        workdir=workdir,
                    )
                    for row in _rows(group, cases, params, args):
                        rows.append(row)
                        _log(
                            f"{row.case:24} {size_label(size):>6} {producers:5} prod "
                            f"{row.items_per_s:13,.0f} items/s  p99 {row.p99_us:9,.0f} us"
                        )

    memory: list[agg.MemoryResult] = []
    if selected("memory"):
        fills = [
            ("aggregator", agg.memory_aggregator),
            ("trio_channel", agg.memory_trio_channel),
            ("asyncio_queue", agg.memory_asyncio_queue),
            ("logging_queue", agg.memory_logging_queue),
        ]
        for name, fill in fills:
            if name == "aggregator" and agg_missing:
                skipped["memory/aggregator"] = f"trio_aggregator unavailable ({agg_missing})"
                continue
            mem = fill(args.memory_items, 64)
            memory.append(mem)
            _log(f"memory {name:18} {mem.overhead_per_item:8.1f} B overhead per buffered item")

    startstop: dict[str, dict[str, float]] = {}
    if selected("startstop"):
        cycle_fns = [
            ("open_aggregator", agg.startstop_open_aggregator),
            ("aggregator_start_stop", agg.startstop_aggregator),
            ("trio_task_baseline", agg.startstop_trio_task),
        ]
        for name, cycle in cycle_fns:
            if name != "trio_task_baseline" and agg_missing:
                skipped[f"startstop/{name}"] = f"trio_aggregator unavailable ({agg_missing})"
                continue
            times = cycle(args.cycles)
            startstop[name] = {
                "cycles": float(len(times)),
                "median_ms": median(times) * 1000,
                "p90_ms": percentile(times, 0.9) * 1000,
                "min_ms": min(times) * 1000,
            }
            _log(f"startstop {name:22} median {startstop[name]['median_ms']:.3f} ms")

    blocked: list[scaling.BlockedResult] = []
    blocked_cases = [key for name, key in BLOCKED_CASES.items() if selected(name)]
    if blocked_cases and agg_missing:
        for key in blocked_cases:
            skipped[f"scale_{key}"] = f"trio_aggregator unavailable ({agg_missing})"
    elif blocked_cases:
        blocked = scaling.run_blocked(
            blocked_cases,
            tasks=args.scaling_producers,
            buffer=args.buffer,
            seed=args.scaling_seed,
            repeat=args.repeat,
        )
        for res in blocked:
            _log(
                f"{res.case} {res.impl:12} {res.tasks:6} tasks  best {res.best * 1000:9.1f} ms"
                f"  median {res.median * 1000:9.1f} ms"
            )

    micro: dict[str, float] = {}
    if selected("micro"):
        micro = micro_costs(
            n=2_000 if args.smoke else 100_000,
            rounds=1 if args.smoke else 5,
            aggregator=not agg_missing,
        )
        _log("micro: " + ", ".join(f"{k} {v:.0f} ns" for k, v in micro.items()))

    scaling_ran = bool(blocked) or any(r.group == SCALING_GROUP for r in rows)
    targets = compute_targets(
        rows,
        startstop,
        memory,
        args.file_producers,
        blocked,
        args.scaling_producers if scaling_ran or wanted is None else 0,
        args.scaling_items,
    )
    wall = time.perf_counter() - started
    load_after = _loadavg()
    command = "python -m benchmarks" + (" " + " ".join(sys.argv[1:]) if argv is None else "")
    print(
        f"\n{command}  ({wall:.1f} s, buffer {args.buffer}, best of {args.repeat}, "
        f"load average {load_before} before, {load_after} after)\n"
    )
    print(
        full_report(rows, memory, startstop, micro, targets, skipped, blocked, serve_ratios(rows))
    )
    if args.rst is not None:
        args.rst.parent.mkdir(parents=True, exist_ok=True)
        args.rst.write_text(
            full_report(
                rows,
                memory,
                startstop,
                micro,
                targets,
                skipped,
                blocked,
                serve_ratios(rows),
                rst=True,
            )
        )

    result: dict[str, Any] = {
        "meta": {
            "command": command.strip(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "versions": _versions(),
            "git": git_state,
            "smoke": args.smoke,
            "sizes": args.sizes,
            "producers": args.producers,
            "file_producers": args.file_producers,
            "buffer": args.buffer,
            "min_time": args.min_time,
            "repeat": args.repeat,
            "items": args.items,
            "wall_seconds": wall,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "scaling_producers": args.scaling_producers,
            "scaling_items": args.scaling_items,
            "scaling_seed": args.scaling_seed,
            "serve_size": args.serve_size,
            "serve_connections": args.serve_connections,
            "skipped": skipped,
            "cases": {
                **{c.name: c.description for c in (*THROUGHPUT_CASES, *FILE_CASES)},
                **{c.name: c.description for c in SCALING_CASES},
                **{c.name: c.description for c in SERVE_CASES},
                **BLOCKED_DESCRIPTIONS,
            },
        },
        "rows": rows_as_dicts(rows),
        "memory": [{**asdict(m), "overhead_per_item": m.overhead_per_item} for m in memory],
        "startstop": startstop,
        "blocked": [
            {
                **asdict(b),
                "best": b.best,
                "median": b.median,
                "worst_over_best": b.worst_over_best,
                "best_cpu": b.best_cpu,
                "best_loop": b.best_loop,
            }
            for b in blocked
        ],
        "micro_ns": micro,
        "serve_ratios": serve_ratios(rows),
        "targets": [{**asdict(t), "verdict": t.verdict} for t in targets],
    }
    write_json(args.json, result)
    print(f"\nJSON: {args.json}")
    charts: list[Path] = []
    if args.chart is not None:
        drawn = draw_charts(args.chart.parent, args.chart.stem, rows)
        if drawn is None:
            print("charts: skipped (matplotlib not installed)")
        for path in drawn or ():
            print(f"chart: {path}")
        charts = drawn or []
    if args.publish:
        STATIC.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.json, STATIC / "benchmarks.json")
        print(f"published: {STATIC / 'benchmarks.json'}")
        for path in charts:
            published = STATIC / path.name.replace(args.chart.stem, "benchmarks", 1)
            shutil.copyfile(path, published)
            print(f"published: {published}")
        tables = full_report(
            rows, memory, startstop, micro, targets, skipped, blocked, serve_ratios(rows), rst=True
        )
        if update_docs_page(DOCS_PAGE, published_header(result["meta"]) + "\n\n" + tables):
            print(f"published: tables in {DOCS_PAGE}")
    return 0
