"""A writer that fails: retries, then a dead-letter file; and a write with a time limit.

``send_to_collector`` stands for a network client that raises on errors: here it
refuses any batch with a "poison" record in it. The aggregator retries a failing
batch 5 times (0.1 + 0.2 + 0.4 + 0.8 + 1.6 s), then hands it to ``dead_letter``,
which appends it to a spill file: every record ends up either at the collector or in
the spill file, once. Then ``write_within`` gives up on a write that finds no room
in time.

Run it: ``python examples/writer_errors.py`` (about 3 s; it writes in a temporary
directory). The aggregator logs the failures; the program checks what went where and
prints ``verified``.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from trio_aggregator import Aggregator, AggregatorConfig, FileSink, open_aggregator

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Writer = Callable[[bytes], Awaitable[None]]

RECORDS = [b"record %d%s\n" % (i, b" poison" if i == 700 else b"") for i in range(1000)]


class Collector:
    """A stand-in for a remote collector, which refuses batches with a poison record."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def send_to_collector(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()  # a real one would send over the network
        if b"poison" in data:
            raise ConnectionError("the collector refused the batch")
        self.received.append(data)


def retry_then_spill(send_to_collector: Writer, spill: FileSink) -> AggregatorConfig:
    async def dead_letter(data: bytes | list[bytes], exc: Exception) -> None:
        await spill.write(data)  # from a worker thread: the event loop never blocks

    return AggregatorConfig(
        writer=send_to_collector,  # an async def that raises on network errors
        buffer_size=10_000,
        batch_max_items=500,
        writer_retries=5,  # 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s of patience
        on_writer_error=dead_letter,
    )


async def write_within(agg: Aggregator, data: bytes, seconds: float) -> bool:
    with trio.move_on_after(seconds) as scope:
        await agg.write(data)
    # Cancelled while it waited: not accepted. Count it, log it, or try elsewhere.
    return not scope.cancelled_caught


async def main(directory: Path) -> list[str]:
    """Run both; return what went wrong (nothing, if all is well)."""
    problems: list[str] = []
    collector = Collector()
    spill = FileSink(directory / "undelivered.log")
    config = retry_then_spill(collector.send_to_collector, spill)
    async with (
        spill,
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config) as agg,
    ):
        for record in RECORDS:
            await agg.write(record)
    stats = agg.statistics()
    spilled = (directory / "undelivered.log").read_bytes().splitlines(keepends=True)
    delivered = b"".join(collector.received).splitlines(keepends=True)
    if sorted(spilled + delivered, key=RECORDS.index) != RECORDS:
        problems.append("a record is missing, or in both places")
    if RECORDS[700] not in spilled or stats.dropped_writer_error != len(spilled):
        problems.append(f"spilled {len(spilled)}, counted {stats.dropped_writer_error}")
    print(f"{len(delivered)} records delivered, {len(spilled)} spilled")

    held = trio.Event()

    async def slow_writer(data: bytes) -> None:
        await held.wait()

    config = AggregatorConfig(writer=slow_writer, buffer_size=1)
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config) as agg,
    ):
        accepted = [await write_within(agg, b"%d\n" % i, 0.2) for i in range(3)]
        held.set()
    if accepted != [True, True, False]:  # the writer holds one, the buffer one
        problems.append(f"write_within: {accepted}")
    return problems


if __name__ == "__main__":
    # The aggregator logs the writer's errors (rate-limited) and the drops: show them.
    logging.basicConfig(stream=sys.stdout, format="log: %(levelname)s %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        found = trio.run(main, Path(tmp))
    for problem in found:
        print(problem, file=sys.stderr)
    print("FAILED" if found else "verified")
    sys.exit(1 if found else 0)
