"""The aggregator against a model, under random configs and operations (issue 11, part 4).

Each example is one `trio.run` on a mock clock: producer tasks (one per producer, so
each has an order) carry out the commands the driver hands them (``write``,
``write_nowait``, a sender's ``send``, closing the sender, a write cancelled while it
waits), while the driver interleaves ``flush``, ``stop``, ``start``, ``restart``,
writer failures and the passing of time. Some writes share one bytes object between
producers (legal, and the cause of a past bug), 1-byte ones included.

Checked: accepted = written + dropped by reason; every item written was accepted, at
most once, and each producer's items are written in its order; a flush returns only
once everything accepted before it is settled; the writer is never called twice at once.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_aggregator import Aggregator, AggregatorClosedError, AggregatorConfig

PRODUCERS = 3
EXAMPLES = int(os.environ.get("TRIO_AGGREGATOR_MODEL_EXAMPLES", "400"))
"""Examples per run: 400 keeps the default run to a few seconds; raise it for a long hunt."""
SHARED = (b"shared-object\n", b"\n")  # the same objects, written by several producers
POISON = b":" + b"x" * 7 + b"\n"
"""The writer fails every call with an item of size 7 in it (and all calls while failing)."""

configs = st.fixed_dictionaries(
    {
        "buffer_size": st.integers(0, 4),
        "when_full": st.sampled_from(["block", "drop_newest", "drop_oldest", "raise"]),
        "batch_max_items": st.integers(1, 4),
        "batch_max_bytes": st.none() | st.integers(3, 30),
        "buffer_max_bytes": st.none() | st.integers(4, 40),
        "batch_join": st.booleans(),
        "writer_retries": st.integers(0, 1),
        "writer_retry_backoff": st.sampled_from([0.0, 0.02]),
        "drain_timeout": st.sampled_from([100.0, 0.015]),
        "batch_linger": st.sampled_from([0.0, 0.005]),
    }
)
producer_commands = st.sampled_from(
    ["write", "write", "nowait", "send", "send", "close_sender", "cancel"]
)
command = st.tuples(
    st.just("cmd"),
    st.integers(0, PRODUCERS - 1),
    producer_commands,
    st.integers(0, 9),  # < 2: a shared object; 7: the writer fails
    st.booleans(),  # let the producers run now (else commands pile up, then go in a burst)
)
others = st.one_of(
    st.tuples(st.sampled_from(["flush", "flush", "stop", "start", "restart", "fail", "heal"])),
    st.tuples(st.just("sleep"), st.sampled_from([0.0, 0.003, 0.03])),
)
operations = st.tuples(
    st.lists(command, min_size=10, max_size=50),
    st.lists(st.tuples(st.integers(0, 50), others), max_size=10),  # (before command n, op)
).map(lambda plan: merge(*plan))


def merge(commands: list[tuple[Any, ...]], others: list[tuple[int, Any]]) -> list[Any]:
    """The commands, with each other operation put before the command it names."""
    ops: list[Any] = []
    for n, cmd in enumerate(commands):
        ops += [op for at, op in others if at == n]
        ops.append(cmd)
    return ops + [op for at, op in others if at >= len(commands)]


class Model:
    """What the producers saw accepted, what the writer got, and checks on the way."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.failing = False
        self.in_writer = False
        self.accepted: list[list[bytes]] = [[] for _ in range(PRODUCERS)]
        self.accepted_shared: Counter[bytes] = Counter()
        self.dropped_full = 0
        self.written: list[bytes] = []
        self.dead: list[bytes] = []
        self.serial = 0

    def item(self, producer: int, size: int) -> bytes:
        if size < len(SHARED):
            return SHARED[size]
        self.serial += 1
        head = b"%d:%d:" % (producer, self.serial)
        return head + b"x" * size + b"\n"

    def note(self, producer: int, item: bytes, result: int) -> None:
        if result == 0:
            self.dropped_full += 1
        elif item in SHARED:
            self.accepted_shared[item] += 1
        else:
            self.accepted[producer].append(item)

    async def writer(self, data: Any) -> None:
        assert not self.in_writer, "two writer calls at once"
        self.in_writer = True
        try:
            if self.delay:
                await trio.sleep(self.delay)
            if self.failing or any(item.endswith(POISON) for item in split(data)):
                raise OSError("the writer fails")
            self.written += split(data)
        finally:
            self.in_writer = False

    def dead_letter(self, data: Any, exc: Exception) -> None:
        self.dead += split(data)

    def settled_count(self) -> int:
        return len(self.written) + len(self.dead)

    def total_accepted(self) -> int:
        return sum(map(len, self.accepted)) + sum(self.accepted_shared.values())


def split(data: Any) -> list[bytes]:
    if isinstance(data, list):
        return list(data)
    return bytes(data).splitlines(keepends=True)


async def produce(
    model: Model, agg: Aggregator, me: int, commands: trio.MemoryReceiveChannel[tuple[str, int]]
) -> None:
    sender = None
    async for command, size in commands:
        item = model.item(me, size)
        try:
            if command == "write":
                model.note(me, item, await agg.write(item))
            elif command == "nowait":
                model.note(me, item, agg.write_nowait(item))
            elif command == "send" and agg.config.when_full in ("block", "raise"):
                # (send returns nothing: under the drop policies the model could not tell
                # a drop; drop_oldest drops the new write when nothing can be evicted)
                if sender is None:
                    sender = agg.sender()
                await sender.send(item)
                model.note(me, item, len(item))
            elif command == "close_sender" and sender is not None:
                await sender.aclose()
                sender = None
            elif command == "cancel":
                with trio.move_on_after(0.001):
                    model.note(me, item, await agg.write(item))
        except (trio.WouldBlock, AggregatorClosedError, trio.ClosedResourceError):
            if command == "send" and sender is not None:
                sender = None  # closed with its run: the next send opens a new one


async def drive(
    model: Model, agg: Aggregator, nursery: trio.Nursery, ops: list[tuple[Any, ...]]
) -> None:
    channels = [trio.open_memory_channel[tuple[str, int]](1000) for _ in range(PRODUCERS)]
    async with trio.open_nursery() as producers:
        for me, (_, receive) in enumerate(channels):
            producers.start_soon(produce, model, agg, me, receive)
        for op in ops:
            if op[0] == "cmd":
                channels[op[1]][0].send_nowait((op[2], op[3]))
                if op[4]:
                    await trio.lowlevel.checkpoint()
            elif op[0] == "sleep":
                await trio.sleep(op[1])
            else:
                await lifecycle(model, agg, nursery, op[0])
        for send, _ in channels:
            send.close()
    await agg.aclose()


async def lifecycle(model: Model, agg: Aggregator, nursery: trio.Nursery, op: str) -> None:
    if op == "fail":
        model.failing = True
    elif op == "heal":
        model.failing = False
    elif op == "flush" and agg.is_running:
        before = model.total_accepted()
        await agg.flush()
        s = agg.statistics()
        settled = s.items_written + s.dropped_oldest + s.dropped_writer_error
        assert settled + s.dropped_drain_timeout >= before
    elif op == "stop":
        await agg.stop()
    elif op == "start" and not agg.is_running:
        await agg.start(nursery)
    elif op == "restart":
        await agg.restart(nursery)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(config=configs, delay=st.sampled_from([0.0, 0.01]), ops=operations)
async def test_the_aggregator_keeps_the_model(
    autojump_clock: trio.testing.MockClock,
    config: dict[str, Any],
    delay: float,
    ops: list[tuple[Any, ...]],
) -> None:
    if config["when_full"] == "drop_oldest" and config["buffer_size"] < 1:
        config["buffer_size"] = 1
    model = Model(delay)
    agg = Aggregator(
        AggregatorConfig(writer=model.writer, on_writer_error=model.dead_letter, **config)
    )
    with trio.fail_after(1000):  # mock time: a hang fails at once
        async with trio.open_nursery() as nursery:
            await agg.start(nursery)
            await drive(model, agg, nursery, ops)
    check(model, agg)


def check(model: Model, agg: Aggregator) -> None:
    s = agg.statistics()
    assert not agg.is_running
    assert (s.nb_processing, s.nb_waiting, s.size_processing, s.size_waiting) == (0, 0, 0, 0)
    # Counts: accepted = written + dropped by reason.
    assert s.items_accepted == model.total_accepted()
    assert s.items_written == len(model.written)
    assert s.bytes_written == sum(map(len, model.written))
    assert s.dropped_full == model.dropped_full
    assert s.dropped_writer_error == len(model.dead)
    assert s.items_accepted == (
        s.items_written + s.dropped_oldest + s.dropped_writer_error + s.dropped_drain_timeout
    )
    assert s.dropped == s.dropped_full + s.dropped_oldest + s.dropped_writer_error + (
        s.dropped_drain_timeout
    )
    # Items: each written (or dead-lettered) item was accepted, once, in its producer's order.
    delivered = model.written + model.dead
    shared = Counter(item for item in delivered if item in SHARED)
    assert all(shared[item] <= model.accepted_shared[item] for item in shared)
    own = [item for item in model.written if item not in SHARED]
    assert len(own) == len(set(own))
    for me in range(PRODUCERS):
        mine = [item for item in own if item.startswith(b"%d:" % me)]
        assert mine == [item for item in model.accepted[me] if item in set(mine)]
    if not (s.dropped_oldest or s.dropped_drain_timeout):  # nothing lost unaccounted
        assert sorted(delivered) == sorted(
            [*(i for items in model.accepted for i in items), *model.accepted_shared.elements()]
        )
