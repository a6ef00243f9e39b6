"""The baselines: what a program would use instead of trio_aggregator.

* ``trio_channel``: ``trio.open_memory_channel``, one clone per producer task, one
  consumer task calling the writer per item (the Trio limit of this design);
* ``trio_channel_drain``: the same, but the consumer drains what is already
  buffered with ``receive_nowait`` (up to 256 items) and calls the writer once
  with the joined bytes: the Trio limit of a batching design;
* ``anyio_stream``: ``anyio.create_memory_object_stream`` under the trio backend;
* ``asyncio_queue``: ``asyncio.Queue`` in its own ``asyncio.run``, ``await put`` /
  ``await get`` (``put`` and ``get`` do not yield unless they must wait);
* ``logging_queue``: stdlib ``QueueHandler`` + ``QueueListener``; producers are
  threads calling ``logger.info`` (``str`` payloads), the listener thread's
  handler is the writer;
* ``naive_file``: 64 producer tasks writing lines to one ``trio.open_file`` file,
  one ``await f.write(line)`` per line under a ``trio.Lock``.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import queue
import threading
from typing import TYPE_CHECKING, Any

import trio

from ._common import (
    SAMPLE_EVERY,
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
    stamped_str,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

try:
    import anyio
except ImportError:  # pragma: no cover - anyio is installed by the nox bench session
    anyio = None  # type: ignore[assignment]

DRAIN_MAX = 256


async def produce(
    send: Callable[[bytes], Awaitable[object]], per: int, filler: bytes, latency: bool
) -> None:
    """The producer loop every async case shares: *per* awaited sends of *filler*."""
    if latency:
        for j in range(per):
            await send(stamped(filler) if j % SAMPLE_EVERY == 0 else filler)
    else:
        for _ in range(per):
            await send(filler)


# -- trio memory channel ------------------------------------------------------------------


def _run_trio_channel(
    params: Params, consumer: Callable[[trio.MemoryReceiveChannel[bytes], Sink], Awaitable[None]]
) -> Measurement:
    """Producers ``await send`` into clones of one memory channel; *consumer* empties it.

    The two channel cases differ only in their consumer, which gets the receive
    channel and the writer.
    """
    sink = make_sink(params)
    filler = payload(params.size)

    async def producer(send: trio.MemorySendChannel[bytes]) -> None:
        async with send:
            await produce(send.send, params.per_producer, filler, params.latency)

    async def main() -> Span:
        send, recv = trio.open_memory_channel[bytes](params.buffer)
        clones = [send.clone() for _ in range(params.producers)]
        send.close()
        t0 = clock()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer, recv, sink)
            for clone in clones:
                nursery.start_soon(producer, clone)
        return since(t0)

    return measurement(params, sink, trio.run(main))


async def consume_per_item(recv: trio.MemoryReceiveChannel[bytes], writer: Sink) -> None:
    """The ``trio_channel`` consumer: one writer call per item."""
    async with recv:
        async for item in recv:
            writer(item)


async def consume_drain(recv: trio.MemoryReceiveChannel[bytes], writer: Sink) -> None:
    """The ``trio_channel_drain`` consumer: drain what is buffered (<= 256), join, write once."""
    receive_nowait = recv.receive_nowait
    async with recv:
        while True:
            try:
                first = await recv.receive()
            except trio.EndOfChannel:
                return
            batch = [first]
            while len(batch) < DRAIN_MAX:
                try:
                    batch.append(receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            writer(b"".join(batch))


def trio_channel(params: Params) -> Measurement:
    """Bare ``trio.open_memory_channel``: per-item consumer."""
    return _run_trio_channel(params, consume_per_item)


def trio_channel_drain(params: Params) -> Measurement:
    """Bare ``trio.open_memory_channel`` whose consumer drains and joins what is buffered."""
    return _run_trio_channel(params, consume_drain)


# -- anyio memory object stream ------------------------------------------------------------


def anyio_available() -> bool:
    """Whether the anyio case can run (the nox bench session installs anyio)."""
    return anyio is not None


def anyio_stream(params: Params) -> Measurement:
    """``anyio.create_memory_object_stream`` under the trio backend: per-item consumer."""
    assert anyio is not None
    sink = make_sink(params)
    filler = payload(params.size)

    async def consumer(recv: Any) -> None:
        writer = sink
        async with recv:
            async for item in recv:
                writer(item)

    async def producer(send: Any) -> None:
        async with send:
            await produce(send.send, params.per_producer, filler, params.latency)

    async def main() -> Span:
        assert anyio is not None
        send, recv = anyio.create_memory_object_stream[bytes](params.buffer)
        clones = [send.clone() for _ in range(params.producers)]
        send.close()
        t0 = clock()
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer, recv)
            for clone in clones:
                tg.start_soon(producer, clone)
        return since(t0)

    return measurement(params, sink, anyio.run(main, backend="trio"))


# -- asyncio.Queue ------------------------------------------------------------------------


def asyncio_queue(params: Params) -> Measurement:
    """``asyncio.Queue(maxsize=buffer)`` producers/consumer in its own event loop."""
    sink = make_sink(params)
    filler = payload(params.size)
    total = params.items

    async def consumer(q: asyncio.Queue[bytes]) -> None:
        writer = sink
        get = q.get
        for _ in range(total):
            writer(await get())

    async def main() -> Span:
        q: asyncio.Queue[bytes] = asyncio.Queue(maxsize=params.buffer)
        t0 = clock()
        tasks = [
            asyncio.create_task(produce(q.put, params.per_producer, filler, params.latency))
            for _ in range(params.producers)
        ]
        await consumer(q)
        await asyncio.gather(*tasks)
        return since(t0)

    return measurement(params, sink, asyncio.run(main()))


# -- logging QueueHandler + QueueListener -------------------------------------------------


class _SinkHandler(logging.Handler):
    """The listener-side handler: hands each record's (already formatted) message to a sink."""

    def __init__(self, sink: Any, total: int) -> None:
        super().__init__()
        self.sink = sink
        self.total = total
        self.count = 0
        self.done = threading.Event()

    def handle(self, record: logging.LogRecord) -> bool:
        # Skip Handler.handle's filter and lock: only the listener thread calls this.
        self.sink(record.msg)
        self.count += 1
        if self.count == self.total:
            self.done.set()
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() overrides
        self.sink(record.msg)


def logging_queue(params: Params) -> Measurement:
    """``QueueHandler`` + ``QueueListener`` on an unbounded ``queue.SimpleQueue``; thread producers.

    Payloads are ``str`` (a log message); each producer thread calls ``logger.info``.
    """
    sink = make_sink(params, text=True)
    filler = payload(params.size).decode()
    per = params.per_producer
    latency = params.latency
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    logger = logging.getLogger(f"trio_aggregator.bench.{id(q)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    qh = logging.handlers.QueueHandler(q)
    logger.addHandler(qh)
    handler = _SinkHandler(sink, params.items)
    listener = logging.handlers.QueueListener(q, handler)
    go = threading.Event()

    def producer() -> None:
        info = logger.info
        go.wait()
        if latency:
            for j in range(per):
                info(stamped_str(filler) if j % SAMPLE_EVERY == 0 else filler)
        else:
            for _ in range(per):
                info(filler)

    threads = [threading.Thread(target=producer, daemon=True) for _ in range(params.producers)]
    for t in threads:
        t.start()
    listener.start()
    try:
        t0 = clock()
        go.set()
        handler.done.wait()
        elapsed = since(t0)
        for t in threads:
            t.join()
    finally:
        listener.stop()
        logger.removeHandler(qh)
    return measurement(params, sink, elapsed)


# -- naive locked file writer --------------------------------------------------------------


def naive_file(params: Params) -> Measurement:
    """One ``trio.open_file`` file; each producer does ``async with lock: await f.write(line)``.

    The ``await f.write`` goes through a worker thread per line (that is what
    ``trio.open_file`` does). Timing ends after ``await f.flush()``.
    """
    line = payload(params.size, line=True)
    path = os.path.join(params.workdir, "naive.log")
    per = params.per_producer

    async def main() -> Span:
        async with await trio.open_file(path, "wb") as f:
            lock = trio.Lock()

            async def producer() -> None:
                for _ in range(per):
                    async with lock:
                        await f.write(line)

            t0 = clock()
            async with trio.open_nursery() as nursery:
                for _ in range(params.producers):
                    nursery.start_soon(producer)
            await f.flush()
            return since(t0)

    return file_measurement(params, path, trio.run(main), params.items, "naive_file")
