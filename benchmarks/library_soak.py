"""Soak the library: 1,000 producers, 1,000,000 items, one aggregator, bounded memory.

Run with ``python -m benchmarks.library_soak`` (``nox -s stress`` runs it after the serve
soak). Each producer task sends its numbered items through its own sender into one
aggregator with a bounded buffer; the writer checks every item as it comes: each
producer's items exactly once, in order. RSS is sampled every 0.1 s from a thread.

The same run is made twice, each in a fresh process: with ``--items``, then with 10
times as many. Memory bounded by the buffer means the RSS does not grow with the item
count: the second run's peak must stay within `RSS_SLACK_KIB` of the first's
(``--no-tenfold`` skips the second run).
Exit status 0 only if both runs lost, duplicated and reordered nothing, and the RSS
did not grow.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from trio_aggregator import AggregatorConfig, open_aggregator

if TYPE_CHECKING:
    from trio_aggregator import Aggregator

HEADER = struct.Struct(">II")  # producer, sequence number
RSS_SLACK_KIB = 8 * 1024
"""How much more the larger run's RSS peak may be (allocator noise), in KiB."""


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0  # pragma: no cover - not Linux


class Checker:
    """The writer: checks each producer's sequence numbers as the items come."""

    def __init__(self, producers: int) -> None:
        self.expected = [0] * producers
        self.items = 0
        self.calls = 0
        self.duplicates = 0
        self.gaps = 0

    def __call__(self, batch: list[bytes]) -> None:
        self.calls += 1
        self.items += len(batch)
        expected = self.expected
        for item in batch:
            producer, seq = HEADER.unpack_from(item)
            want = expected[producer]
            if seq != want:
                if seq < want:
                    self.duplicates += 1  # seen already, or out of order
                    continue
                self.gaps += 1  # items missing before this one
            expected[producer] = seq + 1


def sample_rss(samples: list[tuple[float, int]], stop: threading.Event) -> None:
    started = time.monotonic()
    while not stop.wait(0.1):
        samples.append((time.monotonic() - started, rss_kib()))


async def produce(agg: Aggregator, producer: int, count: int, pad: bytes) -> None:
    async with agg.sender() as sender:
        for seq in range(count):
            await sender.send(HEADER.pack(producer, seq) + pad)


def child(producers: int, items: int, buffer: int, item_bytes: int) -> dict[str, Any]:
    """One run in this process: the figures, as a dict."""
    per_producer = items // producers
    checker = Checker(producers)
    config = AggregatorConfig(
        writer=checker, buffer_size=buffer, batch_max_items=256, batch_join=False
    )
    pad = b"x" * (item_bytes - HEADER.size)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(samples, stop), daemon=True)
    rss_before = rss_kib()

    async def main() -> dict[str, int]:
        async with trio.open_nursery() as outer:
            async with open_aggregator(outer, config) as agg, trio.open_nursery() as nursery:
                for producer in range(producers):
                    nursery.start_soon(produce, agg, producer, per_producer, pad)
            stats = agg.statistics()
        return {
            "accepted": stats.items_accepted,
            "written": stats.items_written,
            "dropped": stats.dropped,
            "peak_buffered": stats.peak_nb_processing,
        }

    sampler.start()
    started = time.monotonic()
    counts = trio.run(main)
    seconds = time.monotonic() - started
    stop.set()
    sampler.join()
    sent = per_producer * producers
    missing = sum(per_producer - got for got in checker.expected)
    values = [v for _, v in samples] or [rss_kib()]
    steady = [v for t, v in samples if t >= seconds / 2] or values
    return {
        "producers": producers,
        "items": sent,
        "buffer": buffer,
        "seconds": round(seconds, 2),
        "written_checked": checker.items,
        "writer_calls": checker.calls,
        "missing": missing,
        "duplicates": checker.duplicates,
        "gaps": checker.gaps,
        **counts,
        "rss_before_kib": rss_before,
        "rss_peak_kib": max(values),
        "rss_steady_kib": int(statistics.median(steady)),
    }


def problems_of(run: dict[str, Any]) -> list[str]:
    items = run["items"]
    problems = [
        f"{key} {run[key]}" for key in ("missing", "duplicates", "gaps", "dropped") if run[key]
    ]
    for key in ("accepted", "written", "written_checked"):
        if run[key] != items:
            problems.append(f"{key} {run[key]:,} of {items:,} items")
    return problems


def describe(run: dict[str, Any]) -> str:
    return (
        f"{run['producers']:,} producers x {run['items']:,} items, buffer {run['buffer']:,}:"
        f" {run['seconds']} s, {run['written_checked']:,} checked in {run['writer_calls']:,}"
        f" writer calls, missing {run['missing']}, duplicates {run['duplicates']},"
        f" out of order {run['gaps']}, dropped {run['dropped']},"
        f" peak buffered {run['peak_buffered']:,};"
        f" RSS before {run['rss_before_kib'] / 1024:.1f} MiB,"
        f" peak {run['rss_peak_kib'] / 1024:.1f} MiB,"
        f" steady {run['rss_steady_kib'] / 1024:.1f} MiB"
    )


def run_child(args: argparse.Namespace, items: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.library_soak", "--child", "--items", str(items)]
    argv += ["--producers", str(args.producers), "--buffer", str(args.buffer)]
    argv += ["--item-bytes", str(args.item_bytes)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--producers", type=int, default=1000)
    parser.add_argument("--items", type=int, default=1_000_000, help="in all (default 1e6)")
    parser.add_argument("--buffer", type=int, default=1024, help="buffer_size (default 1024)")
    parser.add_argument("--item-bytes", type=int, default=100, help="each item's size")
    parser.add_argument("--no-tenfold", action="store_true", help="skip the run with 10x the items")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.producers, args.items, args.buffer, args.item_bytes)))
        return 0
    started = time.monotonic()
    runs = [run_child(args, args.items)]
    if not args.no_tenfold:
        runs.append(run_child(args, args.items * 10))
    failed = False
    for run in runs:
        print(describe(run), flush=True)
        for problem in problems_of(run):
            print(f"  PROBLEM: {problem}")
            failed = True
    if len(runs) == 1:
        return 1 if failed else 0
    small, large = runs
    growth = large["rss_peak_kib"] - small["rss_peak_kib"]
    print(
        f"RSS peak with 10x the items: {growth / 1024:+.1f} MiB"
        f" (allowed: +{RSS_SLACK_KIB / 1024:.0f} MiB); total {time.monotonic() - started:.1f} s"
    )
    if growth > RSS_SLACK_KIB:
        print("  PROBLEM: the RSS grows with the item count")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
