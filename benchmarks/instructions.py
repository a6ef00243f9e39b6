"""Instructions per item of the write paths, counted by valgrind's callgrind.

Wall-clock figures of one write move by several per cent from run to run on a shared
machine; instruction counts do not. Each case runs twice under callgrind, with *n* and
with *2n* items, and the difference of the two totals, divided by *n*, is the cost of
one item: start-up, imports and the Trio run's own set-up cancel out. Run it as::

    python -m benchmarks.instructions                 # every case, n = 20000
    python -m benchmarks.instructions --cases write_nowait,trio_nowait --items 5000

``write_nowait``, ``send_nowait`` and ``trio_nowait`` run their loop inside
`functools.reduce`, so callgrind's inclusive count of ``functools_reduce`` is the loop
alone ("loop", about 600 instructions of it the loop and its lambda); "rest" is then
the receiver (or consumer) delivering each item, batch 1, to a no-op writer. The
``write``, ``send`` and ``trio_send`` cases ``await`` each write, so only their total
is given: it includes Trio's scheduler, and varies by a few hundred instructions with
*n* (garbage collections, dict resizes). Needs ``valgrind`` and a Python with symbols.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from functools import reduce
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

CASES = ("write_nowait", "send_nowait", "write", "send", "trio_nowait", "trio_send")
ITEM = b"x" * 63 + b"\n"


def _sink(data: object) -> None:
    pass


def _loop(n: int, fn: Callable[[bytes], object]) -> None:
    """``fn(ITEM)`` *n* times, from inside ``functools_reduce`` (so callgrind can tell it)."""
    reduce(lambda _acc, _i: fn(ITEM), range(n), None)


async def _aggregator(case: str, n: int) -> None:
    from trio_aggregator import AggregatorConfig, open_aggregator

    config = AggregatorConfig(writer=_sink, buffer_size=n + 16, batch_max_items=1)
    async with trio.open_nursery() as outer, open_aggregator(outer, config) as agg:
        await agg.write(ITEM)
        await agg.flush()
        if case == "write_nowait":
            _loop(n, agg.write_nowait)
        elif case == "send_nowait":
            _loop(n, agg.sender().send_nowait)
        else:
            write: Any = agg.write if case == "write" else agg.sender().send
            for _ in range(n):
                await write(ITEM)
        await agg.flush()


async def _trio(case: str, n: int) -> None:
    send, recv = trio.open_memory_channel[bytes](n + 16)

    async def consumer() -> None:
        async for item in recv:
            _sink(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.lowlevel.checkpoint()
        if case == "trio_nowait":
            _loop(n, send.send_nowait)
        else:
            for _ in range(n):
                await send.send(ITEM)
        send.close()


def _child(case: str, n: int) -> None:
    trio.run(_trio if case.startswith("trio") else _aggregator, case, n)


_COUNT = re.compile(r"^\s*([\d,]+)\s")


def _counts(n: int, case: str, workdir: str) -> tuple[int, int]:
    """(program total, inclusive count of functools_reduce) of one run under callgrind."""
    out = os.path.join(workdir, f"{case}.{n}.out")
    env = dict(os.environ, PYTHONHASHSEED="0")
    child = [sys.executable, "-m", "benchmarks.instructions", "--child", case, "--items", str(n)]
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *child],
        env=env,
        check=True,
        capture_output=True,
    )
    report = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--inclusive=yes", out],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    total = loop = 0
    for line in report.splitlines():
        match = _COUNT.match(line)
        if match is None:
            continue
        value = int(match.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in line:
            total = value
        elif ":functools_reduce " in line and not loop:
            loop = value
    return total, loop


def per_item(case: str, n: int) -> tuple[float, float]:
    """Instructions per item of *case*: (total, inside the timed loop; 0 if awaited)."""
    with tempfile.TemporaryDirectory() as workdir:
        total1, loop1 = _counts(n, case, workdir)
        total2, loop2 = _counts(2 * n, case, workdir)
    return (total2 - total1) / n, (loop2 - loop1) / n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    p.add_argument(
        "--cases", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES)
    )
    p.add_argument("--items", type=int, default=20_000, help="n (the runs have n and 2n items)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.child, args.items)
        return
    print(f"{'case':14} {'total/item':>11} {'loop/item':>10} {'rest/item':>10}  (n={args.items})")
    for case in args.cases.split(","):
        if case not in CASES:
            p.error(f"unknown case {case!r}")
        total, loop = per_item(case, args.items)
        print(f"{case:14} {total:11.0f} {loop:10.0f} {total - loop:10.0f}", flush=True)


if __name__ == "__main__":
    main()
