"""Scaling cases: many producers with a few items each, and many blocked tasks released at once.

* **many producers** (a throughput case, run by `run_group` like the others): *P*
  producer tasks (10,000 by default) each write a few items (4) of 64 B through their
  own sender, made inside the task: ``async with agg.sender() as s: await s.send(item)``
  into an aggregator with ``batch_max_items=256``; against a bare memory channel of
  which each producer takes a clone (``async with send.clone() as s``), drained per
  item (``trio_channel``'s consumer) or in batches (``trio_channel_drain``'s). The
  clock runs from spawning the producers until the writer has seen every item.

* **blocked tasks** (timed once per repetition, no items flow): the buffer is full
  (the aggregator's writer is held on an event with its first item, the bare channel
  has no consumer) and *P* tasks are blocked sending one more item each.

  - ``close_senders``: each task blocks in ``await sender.send(item)`` on its own
    sender (aggregator) or clone (channel); the clock runs from the first
    ``close()`` of the *P* senders, closed in the order they were made, until every
    task has ended with `trio.ClosedResourceError`.
  - ``cancel_writes``: each task blocks in ``await agg.write(item)`` (aggregator) or
    ``await send.send(item)`` on the one send channel, inside its own
    `trio.CancelScope`; the scopes are cancelled in a random order (seeded, the same
    for both) and the clock runs until every task has ended, cancelled.

  The time of the close/cancel loop alone (before the released tasks run) is kept too:
  it is where a close or a cancel costs more the more tasks are blocked.

Every case checks what happened (items and bytes at the writer, the outcome of every
task, the aggregator's `~trio_aggregator.Aggregator.statistics`) and raises
`AssertionError` when anything is off, so that a broken case reports no figure.
"""

from __future__ import annotations

import gc
import math
import random
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from ._common import (
    CaseFn,
    Measurement,
    Params,
    Sink,
    Span,
    clock,
    make_sink,
    measurement,
    payload,
    since,
)
from .baselines import consume_drain, consume_per_item, produce

if TYPE_CHECKING:
    from collections.abc import Awaitable

ITEM_SIZE = 64
"""Bytes per item in every scaling case."""
BATCH = 256
"""``batch_max_items`` of the aggregator in the many-producers case."""
BLOCKED_TIMEOUT = 120.0
"""Seconds a blocked-tasks case may take to block its tasks and release them all.

Past it the case fails (`trio.TooSlowError`) instead of hanging, e.g. when a close
leaves a task blocked.
"""


def _check(condition: bool, what: str) -> None:
    """Fail the case (no figure) when *condition* is false."""
    if not condition:
        raise AssertionError(what)


# -- many producers, a few items each ------------------------------------------------------


def agg_senders(params: Params) -> Measurement:
    """Each producer task: ``async with agg.sender() as s``, then ``await s.send(item)``."""
    from trio_aggregator import AggregatorConfig, open_aggregator

    sink = make_sink(params)
    filler = payload(params.size)
    config = AggregatorConfig(writer=sink, buffer_size=params.buffer, batch_max_items=BATCH)
    stats: list[Any] = []

    async def producer(agg: Any) -> None:
        async with agg.sender() as sender:
            await produce(sender.send, params.per_producer, filler, params.latency)

    async def main() -> Span:
        async with trio.open_nursery() as outer, open_aggregator(outer, config) as agg:
            t0 = clock()
            async with trio.open_nursery() as nursery:
                for _ in range(params.producers):
                    nursery.start_soon(producer, agg)
            await agg.flush()
            elapsed = since(t0)
            stats.append(agg.statistics())
            return elapsed

    elapsed = trio.run(main)
    st = stats[0]
    _check(st.items_accepted == params.items, f"accepted {st.items_accepted} of {params.items}")
    _check(st.items_written == params.items, f"written {st.items_written} of {params.items}")
    _check(st.bytes_written == params.items * params.size, f"bytes written {st.bytes_written}")
    _check(st.open_senders == 0, f"{st.open_senders} senders left open")
    _check(st.dropped == 0 and st.writer_errors == 0, "items dropped or writer errors")
    return measurement(params, sink, elapsed)


def _channel_clones(
    consumer: Callable[[trio.MemoryReceiveChannel[bytes], Sink], Awaitable[None]],
) -> CaseFn:
    """Each producer task clones the send channel as its first step, like ``agg.sender()``.

    The last producer to clone closes the original, so the consumer sees the end of
    the channel once every producer has closed its clone.
    """

    def run(params: Params) -> Measurement:
        sink = make_sink(params)
        filler = payload(params.size)

        async def main() -> Span:
            send, recv = trio.open_memory_channel[bytes](params.buffer)
            cloned = 0

            async def producer() -> None:
                nonlocal cloned
                clone = send.clone()
                cloned += 1
                if cloned == params.producers:
                    send.close()
                async with clone:
                    await produce(clone.send, params.per_producer, filler, params.latency)

            t0 = clock()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consumer, recv, sink)
                for _ in range(params.producers):
                    nursery.start_soon(producer)
            elapsed = since(t0)
            _check(cloned == params.producers, f"{cloned} clones of {params.producers}")
            return elapsed

        return measurement(params, sink, trio.run(main))

    return run


trio_channel_clones = _channel_clones(consume_per_item)
trio_channel_drain_clones = _channel_clones(consume_drain)


# -- blocked tasks -------------------------------------------------------------------------


class _Gate:
    """An async writer that holds its first call until `release` is set, counting bytes."""

    def __init__(self) -> None:
        self.entered = trio.Event()
        self.release = trio.Event()
        self.nbytes = 0

    async def __call__(self, data: bytes) -> None:
        self.entered.set()
        await self.release.wait()
        self.nbytes += len(data)


async def _fill_aggregator(agg: Any, gate: _Gate, buffer: int, item: bytes) -> int:
    """Hold the writer on a first item, then fill the buffer; return the items accepted."""
    await agg.write(item)
    await gate.entered.wait()
    for _ in range(buffer):
        agg.write_nowait(item)
    try:
        agg.write_nowait(item)
    except trio.WouldBlock:
        pass
    else:
        raise AssertionError("the aggregator's buffer is not full")
    st = agg.statistics()
    _check(st.nb_processing == buffer, f"{st.nb_processing} buffered, expected {buffer}")
    return buffer + 1


async def _drain_aggregator(agg: Any, gate: _Gate, accepted: int) -> None:
    """Release the writer, flush, and check that exactly the *accepted* items got through."""
    gate.release.set()
    await agg.flush()
    st = agg.statistics()
    _check(st.items_accepted == accepted, f"accepted {st.items_accepted}, expected {accepted}")
    _check(st.items_written == accepted, f"written {st.items_written}, expected {accepted}")
    _check(gate.nbytes == accepted * ITEM_SIZE, f"writer got {gate.nbytes} bytes")
    _check(st.nb_waiting == 0 and st.open_senders == 0, "writes still waiting or senders open")


def _fill_channel(send: trio.MemorySendChannel[bytes], buffer: int, item: bytes) -> None:
    for _ in range(buffer):
        send.send_nowait(item)
    try:
        send.send_nowait(item)
    except trio.WouldBlock:
        pass
    else:
        raise AssertionError("the channel's buffer is not full")


def _drain_channel(recv: trio.MemoryReceiveChannel[bytes], buffer: int) -> None:
    """Check that the channel holds exactly *buffer* items and no blocked sender is left."""
    st = recv.statistics()
    _check(st.tasks_waiting_send == 0, f"{st.tasks_waiting_send} senders still waiting")
    got = 0
    while True:
        try:
            recv.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            break
        got += 1
    recv.close()
    _check(got == buffer, f"{got} items in the channel, expected {buffer}")


async def _send_until_closed(sender: Any, item: bytes, outcomes: Counter[str]) -> None:
    """Block in ``send``, until the closer closes *sender* (no ``async with``: it does)."""
    try:
        await sender.send(item)
    except trio.ClosedResourceError as exc:
        # Its subclass AggregatorClosedError would say the aggregator stopped: not this case.
        name = type(exc).__name__
        outcomes[name if name == "AggregatorClosedError" else "closed"] += 1
    else:
        outcomes["sent"] += 1


async def _send_until_cancelled(
    send: Callable[[bytes], Awaitable[object]],
    item: bytes,
    scope: trio.CancelScope,
    outcomes: Counter[str],
) -> None:
    with scope:
        await send(item)
    outcomes["cancelled" if scope.cancelled_caught else "sent"] += 1


def _expect_all(outcomes: Counter[str], key: str, n: int) -> None:
    _check(outcomes == Counter({key: n}), f"expected {n} {key}, got {dict(outcomes)}")


@dataclass(frozen=True)
class Release:
    """The timing of one blocked-tasks repetition."""

    wall: float
    """Seconds from the first close/cancel until every task has ended (the figure)."""
    cpu: float
    """CPU seconds of the process over the same interval."""
    loop: float
    """Seconds of the close/cancel loop alone, before the released tasks run."""


async def _block_then_release(
    n: int,
    start: Callable[[trio.Nursery], None],
    count_blocked: Callable[[], int],
    release: Callable[[], None],
) -> Release:
    """Start the tasks, wait until all *n* are blocked, then time *release* until all ended.

    Fails (`trio.TooSlowError`) after `BLOCKED_TIMEOUT` rather than hang.
    """
    with trio.fail_after(BLOCKED_TIMEOUT):
        async with trio.open_nursery() as nursery:
            start(nursery)
            await trio.testing.wait_all_tasks_blocked()
            blocked = count_blocked()
            _check(blocked == n, f"{blocked} tasks blocked, expected {n}")
            t0 = clock()
            release()
            loop = since(t0)[0]
        wall, cpu = since(t0)
    return Release(wall, cpu, loop)


def agg_close_senders(n: int, buffer: int, seed: int) -> Release:
    """Close *n* senders, each with a task blocked in ``send``; time until all tasks ended."""
    del seed  # closed in the order they were made
    from trio_aggregator import AggregatorConfig, open_aggregator

    item = payload(ITEM_SIZE)

    async def main() -> Release:
        gate = _Gate()
        config = AggregatorConfig(writer=gate, buffer_size=buffer)
        outcomes: Counter[str] = Counter()
        async with trio.open_nursery() as outer, open_aggregator(outer, config) as agg:
            try:
                accepted = await _fill_aggregator(agg, gate, buffer, item)
                senders = [agg.sender() for _ in range(n)]
                opened = agg.statistics().open_senders
                _check(opened == n, f"{opened} senders open, expected {n}")

                def start(nursery: trio.Nursery) -> None:
                    for sender in senders:
                        nursery.start_soon(_send_until_closed, sender, item, outcomes)

                def release() -> None:
                    for sender in senders:
                        sender.close()

                elapsed = await _block_then_release(
                    n, start, lambda: agg.statistics().nb_waiting, release
                )
                _expect_all(outcomes, "closed", n)
                await _drain_aggregator(agg, gate, accepted)
            finally:
                gate.release.set()  # never leave the final drain waiting on a failed case
        return elapsed

    return trio.run(main)


def channel_close_senders(n: int, buffer: int, seed: int) -> Release:
    """Close *n* clones of a full channel, each with a task blocked in ``send``."""
    del seed
    item = payload(ITEM_SIZE)

    async def main() -> Release:
        outcomes: Counter[str] = Counter()
        send, recv = trio.open_memory_channel[bytes](buffer)
        _fill_channel(send, buffer, item)
        clones = [send.clone() for _ in range(n)]
        send.close()

        def start(nursery: trio.Nursery) -> None:
            for clone in clones:
                nursery.start_soon(_send_until_closed, clone, item, outcomes)

        def release() -> None:
            for clone in clones:
                clone.close()

        elapsed = await _block_then_release(
            n, start, lambda: recv.statistics().tasks_waiting_send, release
        )
        _expect_all(outcomes, "closed", n)
        _check(recv.statistics().open_send_channels == 0, "send channels left open")
        _drain_channel(recv, buffer)
        return elapsed

    return trio.run(main)


def _random_order(n: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def _cancel_in(scopes: list[trio.CancelScope], order: list[int]) -> Callable[[], None]:
    def release() -> None:
        for i in order:
            scopes[i].cancel()

    return release


def agg_cancel_writes(n: int, buffer: int, seed: int) -> Release:
    """Cancel, in a seeded random order, *n* tasks blocked in ``await agg.write(item)``."""
    from trio_aggregator import AggregatorConfig, open_aggregator

    item = payload(ITEM_SIZE)
    order = _random_order(n, seed)

    async def main() -> Release:
        gate = _Gate()
        config = AggregatorConfig(writer=gate, buffer_size=buffer)
        outcomes: Counter[str] = Counter()
        scopes = [trio.CancelScope() for _ in range(n)]
        async with trio.open_nursery() as outer, open_aggregator(outer, config) as agg:
            try:
                accepted = await _fill_aggregator(agg, gate, buffer, item)

                def start(nursery: trio.Nursery) -> None:
                    for scope in scopes:
                        nursery.start_soon(_send_until_cancelled, agg.write, item, scope, outcomes)

                elapsed = await _block_then_release(
                    n, start, lambda: agg.statistics().nb_waiting, _cancel_in(scopes, order)
                )
                _expect_all(outcomes, "cancelled", n)
                await _drain_aggregator(agg, gate, accepted)
            finally:
                gate.release.set()
        return elapsed

    return trio.run(main)


def channel_cancel_sends(n: int, buffer: int, seed: int) -> Release:
    """Cancel, in the same order, *n* tasks blocked in ``await send.send(item)`` (one channel)."""
    item = payload(ITEM_SIZE)
    order = _random_order(n, seed)

    async def main() -> Release:
        outcomes: Counter[str] = Counter()
        scopes = [trio.CancelScope() for _ in range(n)]
        send, recv = trio.open_memory_channel[bytes](buffer)
        _fill_channel(send, buffer, item)

        def start(nursery: trio.Nursery) -> None:
            for scope in scopes:
                nursery.start_soon(_send_until_cancelled, send.send, item, scope, outcomes)

        elapsed = await _block_then_release(
            n, start, lambda: recv.statistics().tasks_waiting_send, _cancel_in(scopes, order)
        )
        _expect_all(outcomes, "cancelled", n)
        send.close()
        _drain_channel(recv, buffer)
        return elapsed

    return trio.run(main)


BlockedFn = Callable[[int, int, int], Release]

BLOCKED_CASES: dict[str, tuple[tuple[str, BlockedFn], tuple[str, BlockedFn]]] = {
    "close_senders": (
        ("aggregator", agg_close_senders),
        ("trio_channel", channel_close_senders),
    ),
    "cancel_writes": (
        ("aggregator", agg_cancel_writes),
        ("trio_channel", channel_cancel_sends),
    ),
}
"""For each blocked-tasks case: the aggregator's function and the bare channel's."""


@dataclass
class BlockedResult:
    """The timed repetitions of one blocked-tasks case on one implementation."""

    case: str
    impl: str
    tasks: int
    seconds: list[float] = field(default_factory=list[float])
    cpu_seconds: list[float] = field(default_factory=list[float])
    loop_seconds: list[float] = field(default_factory=list[float])
    """The close/cancel loop alone, per repetition."""

    @property
    def best(self) -> float:
        """The fastest repetition, wall clock."""
        return min(self.seconds) if self.seconds else math.nan

    @property
    def median(self) -> float:
        """The median repetition, wall clock."""
        return statistics.median(self.seconds) if self.seconds else math.nan

    @property
    def worst_over_best(self) -> float:
        """Speed of the slowest repetition over the fastest's (<= 1, as in the other tables)."""
        return min(self.seconds) / max(self.seconds) if self.seconds else math.nan

    @property
    def best_loop(self) -> float:
        """The fastest close/cancel loop over the repetitions."""
        return min(self.loop_seconds) if self.loop_seconds else math.nan

    @property
    def best_cpu(self) -> float:
        """The least CPU time of the process over the repetitions."""
        return min(self.cpu_seconds) if self.cpu_seconds else math.nan


def run_blocked(
    cases: list[str], tasks: int, buffer: int, seed: int, repeat: int
) -> list[BlockedResult]:
    """Run the blocked-tasks *cases*, aggregator and channel interleaved, *repeat* rounds."""
    results: dict[tuple[str, str], BlockedResult] = {}
    for _ in range(max(1, repeat)):
        for case in cases:
            for impl, fn in BLOCKED_CASES[case]:
                result = results.setdefault((case, impl), BlockedResult(case, impl, tasks))
                gc.collect()
                timing = fn(tasks, buffer, seed)
                result.seconds.append(timing.wall)
                result.cpu_seconds.append(timing.cpu)
                result.loop_seconds.append(timing.loop)
    return list(results.values())
