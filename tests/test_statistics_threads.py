"""`Aggregator.statistics` from another thread is a consistent snapshot (issue 11, item 7).

A thread reads statistics in a loop while Trio tasks write, with a 1 µs switch interval
so that the reader often runs while the Trio thread is in the middle of an update. Every
write has the same size, so each byte count must be that size times its item count.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

import pytest
import trio

from trio_aggregator import (
    Aggregator,
    AggregatorConfig,
    _ledger,
    connect_aggregator,
    open_aggregator,
)
from trio_aggregator._ledger import Ledger

if TYPE_CHECKING:
    from collections.abc import Iterator

    from trio_aggregator import AggregatorStatistics

SIZE = 10
ITEM = b"0123456789"
BATCH = 4


def broken_invariants(s: AggregatorStatistics) -> list[str]:
    """What is wrong with snapshot *s* (nothing, for a consistent one)."""
    accepted_drops = s.dropped_oldest + s.dropped_drain_timeout + s.dropped_writer_error
    in_flight = s.items_accepted - s.items_written - accepted_drops - s.nb_processing
    checks = {
        "dropped is the sum of dropped_*": s.dropped
        == s.dropped_full + s.dropped_oldest + s.dropped_drain_timeout + s.dropped_writer_error,
        "peak >= processing": s.peak_nb_processing >= s.nb_processing,
        "size_processing": s.size_processing == SIZE * s.nb_processing,
        "size_waiting": s.size_waiting == SIZE * s.nb_waiting,
        "bytes_written": s.bytes_written == SIZE * s.items_written,
        "accepted = written + dropped + processing + in flight": 0 <= in_flight <= BATCH,
        "levels are not negative": min(s.nb_processing, s.nb_waiting) >= 0,
    }
    return [name for name, ok in checks.items() if not ok]


@pytest.fixture
def fast_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


class Reader(threading.Thread):
    """Reads `Aggregator.statistics` in a loop until told to stop; keeps what was wrong."""

    def __init__(self, aggregator: Aggregator) -> None:
        super().__init__(daemon=True)
        self.aggregator = aggregator
        self.halt = threading.Event()
        self.reads = 0
        self.broken: list[list[str]] = []

    def run(self) -> None:
        while not self.halt.is_set():
            wrong = broken_invariants(self.aggregator.statistics())
            self.reads += 1
            if wrong:
                self.broken.append(wrong)


@pytest.mark.usefixtures("fast_switching")
@pytest.mark.parametrize("when_full", ["block", "drop_oldest"])
async def test_statistics_from_another_thread_are_consistent(when_full: str) -> None:
    def writer(data: bytes) -> None:
        pass

    config = AggregatorConfig(
        writer=writer,
        buffer_size=8,
        batch_max_items=BATCH,
        when_full=when_full,  # type: ignore[arg-type]
    )

    reads_wanted = 200

    async def produce(agg: Aggregator, reader: Reader, count: int) -> None:
        # At least *count* writes, and on until the reader has read enough times: a slow
        # machine makes the test longer, never weaker.
        n = 0
        while n < count or reader.reads < reads_wanted:
            n += 1
            if n % 3:
                await agg.write(ITEM)
            else:
                try:
                    agg.write_nowait(ITEM)
                except trio.WouldBlock:
                    await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery, open_aggregator(nursery, config) as agg:
        reader = Reader(agg)
        reader.start()
        try:
            with trio.fail_after(30):
                async with trio.open_nursery() as producers:
                    for _ in range(4):
                        producers.start_soon(produce, agg, reader, 10000)
        finally:
            reader.halt.set()
            reader.join(10)
    assert not reader.is_alive()
    assert reader.reads >= reads_wanted
    assert not reader.broken, f"{len(reader.broken)} of {reader.reads} reads: {reader.broken[:3]}"


def read_in_a_thread(aggregator: Aggregator) -> AggregatorStatistics:
    out: list[AggregatorStatistics] = []
    thread = threading.Thread(target=lambda: out.append(aggregator.statistics()), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return out[0]


async def test_a_reader_thread_gets_the_copy_the_trio_thread_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From another thread, the copy is made in the Trio thread: the write path pays nothing."""
    copied_in: list[int] = []
    real_copy = Ledger._copy

    def copy(self: Ledger, *args: Any) -> AggregatorStatistics:
        copied_in.append(threading.get_ident())
        return real_copy(self, *args)

    monkeypatch.setattr(Ledger, "_copy", copy)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, config()) as agg:
        await agg.write(ITEM)
        await agg.flush()
        stats = await trio.to_thread.run_sync(agg.statistics)
        assert stats.items_written == 1
        assert copied_in == [threading.get_ident()]  # this (the Trio) thread
        assert agg.statistics().items_written == 1  # the Trio thread copies directly
        assert copied_in == [threading.get_ident()] * 2


def config() -> AggregatorConfig:
    return AggregatorConfig(writer=lambda data: None, buffer_size=8)


def test_a_reader_thread_after_the_trio_run_is_over_copies_directly() -> None:
    async def main() -> Aggregator:
        async with trio.open_nursery() as nursery, open_aggregator(nursery, config()) as agg:
            await agg.write(ITEM)
        return agg

    agg = trio.run(main)  # that run is over: nothing changes the counts any more
    stats = read_in_a_thread(agg)
    assert (stats.items_accepted, stats.items_written, stats.is_running) == (1, 1, False)


def test_a_reader_thread_before_the_first_start_copies_directly() -> None:
    assert read_in_a_thread(Aggregator(config())).items_accepted == 0


async def test_a_stopped_aggregator_in_a_live_run_answers_a_thread() -> None:
    async with trio.open_nursery() as nursery:
        agg = await connect_aggregator(nursery, config())
        await agg.write(ITEM)
        await agg.aclose()
        stats = await trio.to_thread.run_sync(agg.statistics)
    assert (stats.items_written, stats.is_running) == (1, False)


async def test_a_reader_thread_waits_for_a_blocked_trio_thread_only_so_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sync writer or callback blocking the Trio thread does not block a reader for ever."""
    monkeypatch.setattr(_ledger, "SNAPSHOT_PATIENCE", 0.05)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, config()) as agg:
        await agg.write(ITEM)
        await agg.flush()
        # Blocks the Trio thread until the reader has its copy: it must not wait for us.
        stats = read_in_a_thread(agg)
    assert stats.items_written == 1


def test_a_reader_thread_running_its_own_trio_loop_gets_a_copy() -> None:
    """The reader may be another Trio thread: it waits for the copy, it is not refused."""

    async def main() -> None:
        async with trio.open_nursery() as nursery, open_aggregator(nursery, config()) as agg:
            await agg.write(ITEM)
            await agg.flush()
            got: list[AggregatorStatistics] = []
            await trio.to_thread.run_sync(lambda: got.append(trio.run(read, agg)))
            assert got[0].items_written == 1

    async def read(agg: Aggregator) -> AggregatorStatistics:
        await trio.lowlevel.checkpoint()
        return agg.statistics()

    trio.run(main)


async def test_a_copy_that_fails_raises_in_the_reader_not_in_the_trio_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: Ledger, *args: Any) -> AggregatorStatistics:
        raise RuntimeError("cannot copy")

    async with trio.open_nursery() as nursery, open_aggregator(nursery, config()) as agg:
        monkeypatch.setattr(Ledger, "_copy", broken)
        with pytest.raises(RuntimeError, match="cannot copy"):
            await trio.to_thread.run_sync(agg.statistics)
        monkeypatch.undo()
        await agg.write(ITEM)  # the run goes on
    assert agg.statistics().items_written == 1
