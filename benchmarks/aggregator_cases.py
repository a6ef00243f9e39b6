"""The trio_aggregator cases: throughput, file lines, memory per buffered item, start/stop.

Throughput cases hand the same no-op `Sink` the baselines use to the aggregator as
its writer, start the aggregator outside the timed region, and stop the clock when
``await agg.flush()`` returns after the producers are done (everything written).

``write_nowait`` producers call ``agg.write_nowait(data)`` and, only when that
raises `trio.WouldBlock` (buffer full), fall back to ``await agg.write(data)``:
a producer therefore runs without yielding until the buffer fills, the same thing
``asyncio.Queue.put`` does when the queue has room.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import time
import tracemalloc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from ._common import (
    SAMPLE_EVERY,
    CaseFn,
    Measurement,
    Params,
    Sink,
    Span,
    clock,
    file_measurement,
    make_sink,
    measurement,
    payload,
    since,
    stamped,
)
from .baselines import produce

if TYPE_CHECKING:
    from collections.abc import Callable


def available() -> str | None:
    """None when trio_aggregator imports, else why not (its cases are then skipped)."""
    try:
        importlib.import_module("trio_aggregator")
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def produce_nowait(agg: Any, per: int, filler: bytes, latency: bool) -> None:
    """``write_nowait``, falling back to ``await write`` on `trio.WouldBlock`."""
    write_nowait = agg.write_nowait
    write = agg.write
    if latency:
        for j in range(per):
            data = stamped(filler) if j % SAMPLE_EVERY == 0 else filler
            try:
                write_nowait(data)
            except trio.WouldBlock:
                await write(data)
    else:
        for _ in range(per):
            try:
                write_nowait(filler)
            except trio.WouldBlock:
                await write(filler)


def agg_case(*, batch: int = 1, nowait: bool = False) -> CaseFn:
    """An aggregator throughput case: ``await write`` (or ``write_nowait``), *batch* items max."""

    def run(params: Params) -> Measurement:
        from trio_aggregator import AggregatorConfig, open_aggregator

        sink = make_sink(params)
        filler = payload(params.size)
        config = AggregatorConfig(writer=sink, buffer_size=params.buffer, batch_max_items=batch)

        async def main() -> Span:
            async with trio.open_nursery() as outer, open_aggregator(outer, config) as agg:
                t0 = clock()
                async with trio.open_nursery() as nursery:
                    for _ in range(params.producers):
                        if nowait:
                            nursery.start_soon(
                                produce_nowait, agg, params.per_producer, filler, params.latency
                            )
                        else:
                            nursery.start_soon(
                                produce, agg.write, params.per_producer, filler, params.latency
                            )
                await agg.flush()
                return since(t0)

        return measurement(params, sink, trio.run(main))

    return run


# -- file of lines -------------------------------------------------------------------------


class LineFileWriter:
    """A FileSink-like writer: an unbuffered file; each call writes all its bytes to the OS."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 - closed by close()
        self.calls = 0

    def __call__(self, data: bytes) -> None:
        self.calls += 1
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            view = view[written:]

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def agg_file_case(*, batch: int = 256, writer_thread: bool = True) -> CaseFn:
    """Lines from many producers to one file through an aggregator (``await write`` per line)."""

    def run(params: Params) -> Measurement:
        from trio_aggregator import AggregatorConfig, open_aggregator

        line = payload(params.size, line=True)
        path = os.path.join(params.workdir, "aggregated.log")
        writer = LineFileWriter(path)
        config = AggregatorConfig(
            writer=writer,
            buffer_size=params.buffer,
            batch_max_items=batch,
            writer_thread=writer_thread,
        )

        async def main() -> Span:
            async with trio.open_nursery() as outer, open_aggregator(outer, config) as agg:
                t0 = clock()
                async with trio.open_nursery() as nursery:
                    for _ in range(params.producers):
                        nursery.start_soon(produce, agg.write, params.per_producer, line, False)
                await agg.flush()
                return since(t0)

        try:
            elapsed = trio.run(main)
        finally:
            writer.close()
        return file_measurement(params, path, elapsed, writer.calls, "aggregator")

    return run


# -- memory per buffered item -------------------------------------------------------------


@dataclass
class MemoryResult:
    """Memory that *items* buffered payloads of *size* bytes took, per item (tracemalloc)."""

    case: str
    items: int
    size: int
    payload_bytes: int
    """``sys.getsizeof`` of one payload object (what the producer allocated)."""
    peak_per_item: float
    current_per_item: float

    @property
    def overhead_per_item(self) -> float:
        """Peak bytes per buffered item beyond the payload object itself."""
        return self.peak_per_item - self.payload_bytes


def _traced_fill(fill: Callable[[], None]) -> tuple[int, int]:
    """Run *fill* under tracemalloc; return (current, peak) bytes it left allocated."""
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fill()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    return current - base, peak - base


def _memory(case: str, items: int, size: int, current: int, peak: int) -> MemoryResult:
    return MemoryResult(
        case=case,
        items=items,
        size=size,
        payload_bytes=sys.getsizeof(payload(size)),
        peak_per_item=peak / items,
        current_per_item=current / items,
    )


def memory_aggregator(items: int, size: int) -> MemoryResult:
    """Fill an aggregator whose writer is blocked on its first item with *items* fresh payloads."""
    from trio_aggregator import AggregatorConfig, open_aggregator

    template = bytearray(payload(size))
    result: list[tuple[int, int]] = []

    async def main() -> None:
        release = trio.Event()
        entered = trio.Event()

        async def writer(_data: bytes) -> None:
            entered.set()
            await release.wait()

        config = AggregatorConfig(writer=writer, buffer_size=items + 16, drain_timeout=60.0)
        async with trio.open_nursery() as outer, open_aggregator(outer, config) as agg:
            await agg.write(b"first")
            await entered.wait()
            write_nowait = agg.write_nowait

            def fill() -> None:
                for _ in range(items):
                    write_nowait(bytes(template))

            result.append(_traced_fill(fill))
            release.set()

    trio.run(main)
    current, peak = result[0]
    return _memory("aggregator", items, size, current, peak)


def memory_trio_channel(items: int, size: int) -> MemoryResult:
    """The same fill into a bare ``trio.open_memory_channel`` (no consumer)."""
    template = bytearray(payload(size))
    send, recv = trio.open_memory_channel[bytes](items + 16)

    def fill() -> None:
        send_nowait = send.send_nowait
        for _ in range(items):
            send_nowait(bytes(template))

    current, peak = _traced_fill(fill)
    send.close()
    recv.close()
    return _memory("trio_channel", items, size, current, peak)


def memory_asyncio_queue(items: int, size: int) -> MemoryResult:
    """The same fill into an ``asyncio.Queue`` (no consumer)."""
    import asyncio

    template = bytearray(payload(size))
    result: list[tuple[int, int]] = []

    async def main() -> None:
        q: asyncio.Queue[bytes] = asyncio.Queue(maxsize=items + 16)
        put_nowait = q.put_nowait

        def fill() -> None:
            for _ in range(items):
                put_nowait(bytes(template))

        result.append(_traced_fill(fill))

    asyncio.run(main())
    current, peak = result[0]
    return _memory("asyncio_queue", items, size, current, peak)


def memory_logging_queue(items: int, size: int) -> MemoryResult:
    """The same fill into a ``QueueHandler`` whose listener is not started (``str`` payloads)."""
    import logging
    import logging.handlers
    import queue

    template = bytearray(payload(size))
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    logger = logging.getLogger(f"trio_aggregator.bench.memory.{id(q)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.handlers.QueueHandler(q)
    logger.addHandler(handler)

    def fill() -> None:
        info = logger.info
        for _ in range(items):
            info(template.decode())

    try:
        current, peak = _traced_fill(fill)
    finally:
        logger.removeHandler(handler)
    result = _memory("logging_queue", items, size, current, peak)
    result.payload_bytes = sys.getsizeof(payload(size).decode())
    return result


# -- start/stop cycles ---------------------------------------------------------------------


def startstop_open_aggregator(cycles: int) -> list[float]:
    """Seconds per ``async with open_aggregator(nursery, config): pass`` cycle."""
    from trio_aggregator import AggregatorConfig, open_aggregator

    config = AggregatorConfig(writer=Sink())

    async def main() -> list[float]:
        times: list[float] = []
        async with trio.open_nursery() as nursery:
            for _ in range(cycles):
                t0 = time.perf_counter()
                async with open_aggregator(nursery, config):
                    pass
                times.append(time.perf_counter() - t0)
        return times

    return trio.run(main)


def startstop_aggregator(cycles: int) -> list[float]:
    """Seconds per ``await agg.start(nursery); await agg.stop()`` on one `Aggregator`.

    If the aggregator refuses a second start, a fresh one is built per cycle
    (outside the timed region).
    """
    from trio_aggregator import Aggregator, AggregatorConfig

    config = AggregatorConfig(writer=Sink())

    async def main() -> list[float]:
        times: list[float] = []
        agg = Aggregator(config)
        reuse = True
        async with trio.open_nursery() as nursery:
            for _ in range(cycles):
                if not reuse:
                    agg = Aggregator(config)
                t0 = time.perf_counter()
                try:
                    await agg.start(nursery)
                except Exception:
                    if not reuse:
                        raise
                    reuse = False
                    agg = Aggregator(config)
                    t0 = time.perf_counter()
                    await agg.start(nursery)
                await agg.stop()
                times.append(time.perf_counter() - t0)
        return times

    return trio.run(main)


def startstop_trio_task(cycles: int) -> list[float]:
    """Baseline: open a memory channel, start a consumer task, close it and wait for its end."""

    async def consumer(recv: trio.MemoryReceiveChannel[bytes], done: trio.Event) -> None:
        async with recv:
            async for _ in recv:
                pass
        done.set()

    async def main() -> list[float]:
        times: list[float] = []
        async with trio.open_nursery() as nursery:
            for _ in range(cycles):
                t0 = time.perf_counter()
                send, recv = trio.open_memory_channel[bytes](1)
                done = trio.Event()
                nursery.start_soon(consumer, recv, done)
                await send.aclose()
                await done.wait()
                times.append(time.perf_counter() - t0)
        return times

    return trio.run(main)
