"""A service that stops on SIGINT or SIGTERM, and loses nothing it accepted.

The producers run until a signal comes; then the nursery is cancelled, and the
aggregator, which runs in it, still writes out everything it had accepted before it
stops. It prints how many lines it wrote.

Run it: ``python examples/graceful_shutdown.py --output ticks.log``, then Ctrl+C.
"""

from __future__ import annotations

import argparse
import itertools
import signal

import trio

from trio_aggregator import Aggregator, AggregatorConfig, FileSink, open_aggregator


async def serve(agg: Aggregator) -> None:
    """The producers: here, one that writes a line every 10 ms."""
    async with agg.sender() as sender:
        for i in itertools.count():
            await sender.send(f"tick {i}\n".encode())
            await trio.sleep(0.01)


async def main(output: str) -> None:
    sink = FileSink(output)
    config = AggregatorConfig(writer=sink.write, buffer_size=1000, batch_max_items=64)
    async with (
        sink,
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config) as agg,
    ):
        nursery.start_soon(serve, agg)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            print("running: stop it with Ctrl+C or SIGTERM", flush=True)
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()
    # Cancelled, open_aggregator still wrote out its buffer; the sink closed the file.
    s = agg.statistics()
    print(f"stopped: {s.items_written} lines written, {s.dropped} dropped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="Write ticks to a file until a signal."
    )
    parser.add_argument("--output", default="ticks.log", help="the file to append to")
    trio.run(main, parser.parse_args().output)
