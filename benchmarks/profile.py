"""Run one benchmark case long enough to profile it, and summarise py-spy's output.

Profile a case with py-spy (``pip install py-spy``)::

    py-spy record --nonblocking --rate 500 --format raw -o prof.txt -- \\
        python -m benchmarks.profile agg_write --producers 1 --size 64 --items 300000
    python -m benchmarks.profile --summarize prof.txt --within unrolled_run

The summary lists, per function (all lines of a function added up), the share of
samples spent in the function itself ("self") and in it plus what it called
("inclusive"). ``--pyinstrument`` profiles in-process instead, if pyinstrument
is installed.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from typing import TYPE_CHECKING

from ._common import Params

if TYPE_CHECKING:
    from collections.abc import Sequence

_LINE = re.compile(r"\s*\(([^()]*?)(?::\d+)?\)$")


def _function(frame: str) -> str:
    """``name (path/to/file.py:123)`` -> ``name (file.py)``."""
    match = _LINE.search(frame)
    if not match:
        return frame
    name = frame[: match.start()].strip()
    path = match.group(1)
    parts = path.replace("\\", "/").split("/")
    short = "/".join(parts[-2:])
    return f"{name} ({short})"


def summarize(path: str, top: int = 25, within: str | None = None) -> str:
    """Self and inclusive sample shares per function of a py-spy ``--format raw`` file.

    With *within*, only the samples whose stack has a function whose name contains
    that text count (``unrolled_run`` keeps the event loop and leaves imports out).
    """
    self_count: collections.Counter[str] = collections.Counter()
    incl_count: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as f:
        for raw in f:
            stack, _, count = raw.rstrip().rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = [_function(fr) for fr in stack.split(";")]
            if within is not None and not any(within in fr for fr in frames):
                continue
            total += n
            self_count[frames[-1]] += n
            for fr in set(frames):
                incl_count[fr] += n
    lines = [f"{total} samples" + (f" with {within!r} on the stack" if within else "")]
    for title, counter in (("self", self_count), ("inclusive", incl_count)):
        lines.append(f"--- {title}")
        for fr, n in counter.most_common(top):
            lines.append(f"{100 * n / max(total, 1):5.1f}%  {fr}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a case once (or summarise a py-spy file)."""
    from .runner import FILE_CASES, THROUGHPUT_CASES

    cases = {c.name: c for c in (*THROUGHPUT_CASES, *FILE_CASES)}
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    p.add_argument("case", nargs="?", choices=sorted(cases))
    p.add_argument("--producers", "-p", type=int, default=1)
    p.add_argument("--size", "-s", type=int, default=64)
    p.add_argument("--items", "-n", type=int, default=200_000)
    p.add_argument("--buffer", type=int, default=1024)
    p.add_argument("--pyinstrument", action="store_true", help="profile in-process")
    p.add_argument("--summarize", metavar="RAW", help="summarise a py-spy --format raw file")
    p.add_argument("--top", type=int, default=25, help="functions listed")
    p.add_argument("--within", help="count only samples with this function on the stack")
    args = p.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize, args.top, args.within))
        return 0
    if args.case is None:
        p.error("a case is needed (or --summarize)")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="trio-aggregator-profile-") as workdir:
        items = max(1, args.items // args.producers) * args.producers
        params = Params(
            size=args.size,
            producers=args.producers,
            items=items,
            buffer=args.buffer,
            workdir=workdir,
        )
        fn = cases[args.case].fn
        if args.pyinstrument:
            from pyinstrument import Profiler  # pyright: ignore[reportMissingImports]

            profiler = Profiler(interval=0.0005)  # pyright: ignore[reportUnknownVariableType]
            profiler.start()  # pyright: ignore[reportUnknownMemberType]
            m = fn(params)
            profiler.stop()  # pyright: ignore[reportUnknownMemberType]
            print(profiler.output_text(unicode=True, show_all=False))  # pyright: ignore
        else:
            m = fn(params)
    print(
        f"{args.case}: {m.items:,} items, {args.producers} producers, {args.size} B: "
        f"{m.items_per_s:,.0f} items/s, {m.writer_calls:,} writer calls",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
