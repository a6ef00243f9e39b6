from __future__ import annotations

import trio

from trio_aggregator import Aggregator, AggregatorConfig, FileSink, open_aggregator


async def producer(agg: Aggregator, name: str) -> None:
    async with agg.sender() as sender:  # one sender per producer task
        for i in range(3):
            await sender.send(f"{name}: line {i}\n".encode())


async def main() -> None:
    sink = FileSink("out.log")  # writes from a worker thread: never blocks the loop
    config = AggregatorConfig(
        writer=sink.write,
        buffer_size=1000,
        batch_max_items=64,  # one file write for up to 64 buffered lines
        sync_fn=sink.sync,  # fsync every second, never in the middle of a write
        sync_interval=1.0,
    )
    async with (
        sink,
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config) as agg,
        trio.open_nursery() as producers,
    ):
        for name in ("alpha", "beta", "gamma"):
            producers.start_soon(producer, agg, name)
    # The producers finished, then open_aggregator delivered every accepted write
    # to the file, then the sink closed it.


trio.run(main)
