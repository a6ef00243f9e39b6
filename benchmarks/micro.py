"""Per-item costs without task switches: where the time of one item goes.

Each figure is nanoseconds per item, best of a few rounds, measured inside one task
so that no scheduling is involved (except ``trio checkpoint``, which is the cost of
one pass through Trio's scheduler, the price every ``await`` that yields pays):

* ``trio send_nowait`` / ``trio receive_nowait``: the bare memory channel;
* ``asyncio put_nowait`` / ``asyncio get_nowait``: ``asyncio.Queue``;
* ``aggregator write_nowait``: into a started aggregator, in a loop that never
  yields (so its receiver cannot run meanwhile);
* ``aggregator receiver, batch 1`` / ``batch 256``: then the receiver delivering all
  of them to the no-op writer (``await flush()`` time divided by the items);
* ``trio checkpoint`` / ``asyncio sleep(0)``: one yield to the event loop.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import TYPE_CHECKING

import trio

from ._common import Sink, payload

if TYPE_CHECKING:
    from collections.abc import Callable


def _best(rounds: int, fn: Callable[[], float]) -> float:
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        best = min(best, fn())
    return best


def _put_then_get(
    n: int, item: bytes, put: Callable[[bytes], object], get: Callable[[], object]
) -> tuple[float, float]:
    """Seconds per item of *n* calls of ``put(item)``, then of *n* calls of ``get()``."""
    t0 = time.perf_counter()
    for _ in range(n):
        put(item)
    t1 = time.perf_counter()
    for _ in range(n):
        get()
    t2 = time.perf_counter()
    return (t1 - t0) / n, (t2 - t1) / n


def _trio_channel(n: int, item: bytes) -> tuple[float, float]:
    send, recv = trio.open_memory_channel[bytes](n + 1)
    return _put_then_get(n, item, send.send_nowait, recv.receive_nowait)


def _asyncio_queue(n: int, item: bytes) -> tuple[float, float]:
    async def main() -> tuple[float, float]:
        q: asyncio.Queue[bytes] = asyncio.Queue(maxsize=n + 1)
        return _put_then_get(n, item, q.put_nowait, q.get_nowait)

    return asyncio.run(main())


def _aggregator(n: int, item: bytes, batch: int) -> tuple[float, float]:
    from trio_aggregator import AggregatorConfig, open_aggregator

    config = AggregatorConfig(writer=Sink(), buffer_size=n + 16, batch_max_items=batch)

    async def main() -> tuple[float, float]:
        async with trio.open_nursery() as outer, open_aggregator(outer, config) as agg:
            await agg.write(item)
            await agg.flush()  # the receiver is now parked, waiting for items
            write_nowait = agg.write_nowait
            # No checkpoint in this loop: the receiver cannot run until flush() below.
            t0 = time.perf_counter()
            for _ in range(n):
                write_nowait(item)
            t1 = time.perf_counter()
            await agg.flush()
            t2 = time.perf_counter()
        return (t1 - t0) / n, (t2 - t1) / n

    return trio.run(main)


def _trio_checkpoint(n: int) -> float:
    async def main() -> float:
        checkpoint = trio.lowlevel.checkpoint
        t0 = time.perf_counter()
        for _ in range(n):
            await checkpoint()
        return (time.perf_counter() - t0) / n

    return trio.run(main)


def _asyncio_sleep0(n: int) -> float:
    async def main() -> float:
        sleep = asyncio.sleep
        t0 = time.perf_counter()
        for _ in range(n):
            await sleep(0)
        return (time.perf_counter() - t0) / n

    return asyncio.run(main())


def micro_costs(n: int = 100_000, rounds: int = 5, *, aggregator: bool = True) -> dict[str, float]:
    """Nanoseconds per item of each operation (see the module docs)."""
    item = payload(64)
    out: dict[str, float] = {}

    def pair(names: tuple[str, str], fn: Callable[[], tuple[float, float]]) -> None:
        results = [fn() for _ in range(rounds)]
        out[names[0]] = min(r[0] for r in results) * 1e9
        out[names[1]] = min(r[1] for r in results) * 1e9

    pair(("trio send_nowait", "trio receive_nowait"), lambda: _trio_channel(n, item))
    pair(("asyncio put_nowait", "asyncio get_nowait"), lambda: _asyncio_queue(n, item))
    if aggregator:
        pair(
            ("aggregator write_nowait", "aggregator receiver, batch 1"),
            lambda: _aggregator(n, item, 1),
        )
        results = [_aggregator(n, item, 256) for _ in range(rounds)]
        out["aggregator receiver, batch 256"] = min(r[1] for r in results) * 1e9
    out["trio checkpoint"] = _best(rounds, lambda: _trio_checkpoint(n)) * 1e9
    out["asyncio sleep(0)"] = _best(rounds, lambda: _asyncio_sleep0(n)) * 1e9
    return out
