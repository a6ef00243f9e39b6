"""The standard `logging` module into one file, from Trio tasks and worker threads.

An `AggregatorHandler` on the root logger hands every record to the aggregator: from
the Trio thread without ever blocking the event loop, from other threads waiting for
room (``when_full="block"``). ``handler.dropped`` counts the records that did not
get in.

Run it: ``python examples/logging_handler.py`` (it writes in a temporary directory).
It checks that every record is in the file, whole, each source's in order, and
prints ``verified``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from trio_aggregator import (
    Aggregator,
    AggregatorConfig,
    AggregatorHandler,
    FileSink,
    open_aggregator,
)

if TYPE_CHECKING:
    from collections.abc import Generator

SOURCES = 3
RECORDS = 200
log = logging.getLogger("app")


@contextlib.contextmanager
def logging_to(agg: Aggregator) -> Generator[AggregatorHandler]:
    handler = AggregatorHandler(agg, when_full="block")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler  # tasks and threads log as usual
    finally:
        root.removeHandler(handler)


async def task(n: int) -> None:
    for i in range(RECORDS):
        log.info("task %d record %d", n, i)
        await trio.lowlevel.checkpoint()


def thread(n: int) -> None:
    for i in range(RECORDS):
        log.info("thread %d record %d", n, i)


async def main(path: Path) -> int:
    sink = FileSink(path)
    # Records logged on the Trio thread never wait: a buffer with no room drops them
    # (counted). Size the buffer for the bursts, and keep an eye on handler.dropped.
    config = AggregatorConfig(
        writer=sink.write, buffer_size=10_000, batch_max_items=256
    )
    async with (
        sink,
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config) as agg,
    ):
        with logging_to(agg) as handler:
            async with trio.open_nursery() as sources:
                for n in range(SOURCES):
                    sources.start_soon(task, n)
                    sources.start_soon(trio.to_thread.run_sync, thread, n)
    return handler.dropped


def check(text: str, dropped: int) -> list[str]:
    """What is wrong with the file (nothing, if all is well)."""
    by_source: dict[str, list[str]] = {}
    for line in text.splitlines():
        level, name, kind, n, _, i = line.split()
        if (level, name) != ("INFO", "app"):
            return [f"not a record of ours: {line!r}"]
        by_source.setdefault(f"{kind} {n}", []).append(i)
    expected = [str(i) for i in range(RECORDS)]
    wrong = [source for source, got in by_source.items() if got != expected]
    if len(by_source) != 2 * SOURCES or wrong or dropped:
        return [f"sources {sorted(by_source)}, out of order {wrong}, dropped {dropped}"]
    return []


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "app.log"
        dropped = trio.run(main, path)
        problems = check(path.read_text(), dropped)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{2 * SOURCES * RECORDS} records from {SOURCES} tasks and {SOURCES} threads")
    print("FAILED" if problems else "verified")
    sys.exit(1 if problems else 0)
