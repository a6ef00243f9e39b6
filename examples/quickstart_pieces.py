"""The quick start's other pieces, each a function, run one after the other and checked.

The quick start shows these functions one at a time (``literalinclude`` with
``:pyobject:``): another way to start an aggregator, batching into a file, a sender
per producer, flush, a monitor of the metrics, periodic callbacks. ``main`` runs
each and checks what it did; it prints ``verified`` when everything is as it should
be.

Run it: ``python examples/quickstart_pieces.py`` (it writes in a temporary
directory).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import trio

from trio_aggregator import (
    Aggregator,
    AggregatorConfig,
    AggregatorSender,
    FileSink,
    connect_aggregator,
    open_aggregator,
)


async def with_connect(nursery: trio.Nursery, config: AggregatorConfig) -> None:
    agg = await connect_aggregator(nursery, config)
    try:
        await agg.write(b"written through connect_aggregator\n")
    finally:
        await agg.aclose()


async def as_a_service(nursery: trio.Nursery, config: AggregatorConfig) -> Aggregator:
    agg = Aggregator(config)
    await nursery.start(agg.run)
    return agg


def batching_config(sink: FileSink) -> AggregatorConfig:
    return AggregatorConfig(
        writer=sink.write_blocking,  # a blocking write...
        writer_thread=True,  # ...so it runs in a worker thread
        buffer_size=10_000,
        batch_max_items=256,  # up to 256 items per call, of those already buffered
        batch_max_bytes=1 << 20,  # and at most 1 MiB
    )


async def producer(sender: AggregatorSender, name: str) -> None:
    async with sender:  # closes this sender (only) on the way out
        for i in range(1000):
            await sender.send(f"{name} {i}\n".encode())


async def run_producers(agg: Aggregator) -> None:
    async with trio.open_nursery() as producers:
        for name in ("alpha", "beta", "gamma"):
            producers.start_soon(producer, agg.sender(), name)


async def save(agg: Aggregator, record: bytes) -> None:
    await agg.write(record)
    await agg.flush()
    # The writer has returned for `record` (and for everything accepted before it).


async def monitor(agg: Aggregator, interval: float = 5.0) -> None:
    while True:
        s = agg.statistics()
        print(
            f"buffered {s.nb_processing}/{s.buffer_size} ({s.size_processing} B), "
            f"blocked writers {s.nb_waiting}, written {s.items_written} items "
            f"in {s.writer_calls} calls, errors {s.writer_errors}, dropped {s.dropped}"
        )
        await trio.sleep(interval)


def periodic_config(
    sink: FileSink, heartbeat: trio.Event, every: float = 1.0
) -> AggregatorConfig:
    return AggregatorConfig(
        writer=sink.write,
        buffer_size=1000,
        sync_fn=sink.sync,  # fsync between two writes, never beside one
        sync_interval=every,
        async_fn=heartbeat.set,  # beside the writer, under a limiter
        async_interval=every,
    )


async def main(directory: Path) -> list[str]:
    """Run each piece; return what went wrong (nothing, if all is well)."""
    problems: list[str] = []
    lines: list[bytes] = []
    async with trio.open_nursery() as nursery:
        await with_connect(
            nursery, AggregatorConfig(writer=lines.append, buffer_size=10)
        )
        if lines != [b"written through connect_aggregator\n"]:
            problems.append(f"connect_aggregator: {lines}")

        agg = await as_a_service(
            nursery, AggregatorConfig(writer=lines.append, buffer_size=10)
        )
        await save(agg, b"saved\n")
        if lines[-1] != b"saved\n":
            problems.append("flush returned before the writer had the record")
        nursery.start_soon(monitor, agg)
        await agg.aclose()
        nursery.cancel_scope.cancel()  # the monitor

    sink = FileSink(directory / "batched.log")
    async with sink, trio.open_nursery() as nursery:
        async with open_aggregator(nursery, batching_config(sink)) as agg:
            await run_producers(agg)
        stats = agg.statistics()
    text = (directory / "batched.log").read_text().splitlines()
    for name in ("alpha", "beta", "gamma"):
        if [line for line in text if line.startswith(f"{name} ")] != [
            f"{name} {i}" for i in range(1000)
        ]:
            problems.append(f"{name}'s lines are not all there, in order")
    if stats.writer_calls >= stats.items_written:
        problems.append(f"no batching: {stats.writer_calls} calls")

    sink = FileSink(directory / "synced.log")
    heartbeat = trio.Event()
    config = periodic_config(sink, heartbeat, every=0.05)
    async with (
        sink,
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config) as agg,
    ):
        await agg.write(b"one line\n")
        with trio.fail_after(10):
            await heartbeat.wait()  # async_fn ran
            while agg.statistics().sync_runs < 2:  # noqa: ASYNC110 (a count, no event)
                await trio.sleep(0.01)
    if (directory / "synced.log").read_bytes() != b"one line\n":
        problems.append("the periodic example's file is wrong")
    return problems


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        found = trio.run(main, Path(tmp))
    for problem in found:
        print(problem, file=sys.stderr)
    print("FAILED" if found else "verified")
    sys.exit(1 if found else 0)
