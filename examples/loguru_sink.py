"""loguru into one file through an aggregator, from Trio tasks and worker threads.

The sink is a callable. loguru calls it in the thread that logs, *holding loguru's
own lock*, so the sink must never wait for the event loop: a thread waiting there
while a task on the Trio thread logs (and so waits for that lock) would stop the
event loop for good. The sink therefore goes through an `AggregatorHandler` in
``"drop"`` mode: on the Trio thread a record goes in with `Aggregator.write_nowait`,
from another thread it is posted to the event loop without waiting; a record that
finds no room is dropped and counted in ``handler.dropped``, never lost silently.

Run it: ``python examples/loguru_sink.py`` (needs loguru). It checks the file and
exits 0 if every record is written or counted, and each source's records are in
order.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import trio
import trio.lowlevel
from loguru import logger

from trio_aggregator import (
    AggregatorConfig,
    AggregatorHandler,
    FileSink,
    open_aggregator,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from loguru import Message

TASKS = 3
THREADS = 2
PER_SOURCE = 100


def aggregator_sink(handler: AggregatorHandler) -> Callable[[Message], None]:
    """A loguru sink callable that hands each formatted message to *handler*."""

    def sink(message: Message) -> None:
        text = str(message).rstrip("\n")  # the handler adds the newline back
        handler.handle(logging.makeLogRecord({"name": "loguru", "msg": text}))

    return sink


async def task(n: int) -> None:
    for i in range(PER_SOURCE):
        logger.info("task-{} {}", n, i)
        await trio.lowlevel.checkpoint()


def worker(n: int) -> None:
    for i in range(PER_SOURCE):
        logger.info("thread-{} {}", n, i)


async def main(path: Path) -> tuple[int, int]:
    sink = FileSink(path)
    config = AggregatorConfig(writer=sink.write, buffer_size=1000, batch_max_items=64)
    async with (
        sink,
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config) as agg,
    ):
        handler = AggregatorHandler(agg)  # when_full="drop": never blocks
        logger.remove()
        sink_id = logger.add(aggregator_sink(handler), format="{level} {message}")
        try:
            async with trio.open_nursery() as producers:
                for n in range(TASKS):
                    producers.start_soon(task, n)
                for n in range(THREADS):
                    producers.start_soon(trio.to_thread.run_sync, worker, n)
            await agg.flush()
        finally:
            logger.remove(sink_id)
    return (TASKS + THREADS) * PER_SOURCE, handler.dropped


def check(path: Path, sent: int, dropped: int) -> None:
    lines = path.read_text().splitlines()
    assert len(lines) + dropped == sent, (len(lines), dropped, sent)
    assert all(line.startswith("INFO ") for line in lines)
    sources = {line.split()[1] for line in lines}
    for source in sources:
        numbers = [int(line.split()[2]) for line in lines if line.split()[1] == source]
        assert numbers == sorted(numbers), f"{source}: out of order"
    print(f"loguru: {len(lines)} lines from {len(sources)} sources, {dropped} dropped")
    print("verified")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "app.log"
        sent, dropped = trio.run(main, out)
        try:
            check(out, sent, dropped)
        except AssertionError as exc:
            print(f"FAILED: {exc}")
            sys.exit(1)
