"""``print``-style output from worker threads, through the aggregator, line by line.

Blocking work runs in `trio.to_thread` workers; each reports progress with `say`, a
`print`-like function that builds the whole line first and hands it to
`Aggregator.write_from_thread` (one write per line, so lines from different threads
never interleave, and each thread's lines keep their order). The thread waits if the
buffer is full; the event loop never does.

Run it: ``python examples/thread_print.py``. It checks the output and exits 0 if
every line arrived whole and in order.
"""

from __future__ import annotations

import hashlib
import sys

import trio

from trio_aggregator import Aggregator, AggregatorConfig, open_aggregator

WORKERS = 4
STEPS = 50


def say(agg: Aggregator, *values: object, sep: str = " ", end: str = "\n") -> None:
    """Like `print`, to the aggregator, from any thread but the Trio thread."""
    agg.write_from_thread((sep.join(map(str, values)) + end).encode())


def work(agg: Aggregator, n: int) -> None:
    """Blocking work (hashing), reporting each step."""
    digest = b"%d" % n
    for step in range(STEPS):
        digest = hashlib.sha256(digest).digest()
        say(agg, f"worker {n}", "step", step, digest.hex()[:12])
    say(agg, f"worker {n}", "done")


async def main() -> list[bytes]:
    lines: list[bytes] = []
    config = AggregatorConfig(writer=lines.append, buffer_size=8)  # small: threads wait
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config) as agg,
        trio.open_nursery() as workers,
    ):
        for n in range(WORKERS):
            workers.start_soon(trio.to_thread.run_sync, work, agg, n)
    return lines


def check(lines: list[bytes]) -> None:
    assert len(lines) == WORKERS * (STEPS + 1), len(lines)
    for n in range(WORKERS):
        mine = [
            line.decode().split()
            for line in lines
            if line.startswith(b"worker %d " % n)
        ]
        assert [words[3] for words in mine[:-1]] == [str(step) for step in range(STEPS)]
        assert mine[-1] == ["worker", str(n), "done"]
    sys.stdout.write(b"".join(lines[:3]).decode())
    print(f"thread_print: {len(lines)} lines from {WORKERS} worker threads, in order")
    print("verified")


if __name__ == "__main__":
    try:
        check(trio.run(main))
    except AssertionError as exc:
        print(f"FAILED: {exc}")
        sys.exit(1)
