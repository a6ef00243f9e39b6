"""Property tests: whatever the producers, sizes and buffer, nothing is lost, reordered or split."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_aggregator import Aggregator, AggregatorConfig, open_aggregator

producers_st = st.lists(
    st.lists(st.integers(min_value=1, max_value=300), max_size=25), min_size=1, max_size=8
)


def _message(producer: int, index: int, size: int) -> bytes:
    head = b"%d:%d:" % (producer, index)
    return head + b"x" * max(0, size - len(head))


def _split(item: bytes) -> tuple[int, int]:
    producer, index, _ = item.split(b":", 2)
    return int(producer), int(index)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    producers=producers_st,
    buffer_size=st.integers(min_value=0, max_value=6),
    writer_yields=st.booleans(),
    use_senders=st.booleans(),
    stop_early=st.booleans(),
)
async def test_output_is_the_inputs_with_per_producer_order(
    producers: list[list[int]],
    buffer_size: int,
    writer_yields: bool,
    use_senders: bool,
    stop_early: bool,
) -> None:
    received: list[bytes] = []
    aggregator: Aggregator | None = None
    in_writer = False

    async def writer(data: bytes) -> None:
        nonlocal in_writer
        assert not in_writer
        assert aggregator is not None
        assert aggregator.nb_processing <= buffer_size
        in_writer = True
        if writer_yields:
            await trio.sleep(0)
        received.append(data)
        in_writer = False

    expected = {
        _message(p, i, size) for p, sizes in enumerate(producers) for i, size in enumerate(sizes)
    }

    async def produce(agg: Aggregator, producer: int, sizes: list[int]) -> None:
        if use_senders:
            async with agg.sender() as sender:
                for i, size in enumerate(sizes):
                    await sender.send(_message(producer, i, size))
        else:
            for i, size in enumerate(sizes):
                assert await agg.write(bytearray(_message(producer, i, size))) >= 1

    async with trio.open_nursery() as nursery:
        config = AggregatorConfig(writer=writer, buffer_size=buffer_size)
        async with open_aggregator(nursery, config) as agg:
            aggregator = agg
            async with trio.open_nursery() as producers_nursery:
                for p, sizes in enumerate(producers):
                    producers_nursery.start_soon(produce, agg, p, sizes)
            if not stop_early:
                await agg.flush()
                assert (agg.nb_processing, agg.nb_waiting) == (0, 0)
                assert (agg.size_processing, agg.size_waiting) == (0, 0)
    assert sorted(received) == sorted(expected)
    assert len(received) == len(expected)
    last: dict[int, int] = {}
    for item in received:
        producer, index = _split(item)
        assert index == last.get(producer, -1) + 1
        last[producer] = index
    stats = agg.statistics()
    assert stats.items_written == stats.items_accepted == len(expected)
    assert stats.bytes_written == sum(map(len, expected))
    assert stats.dropped == 0


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    producers=producers_st,
    buffer_size=st.integers(min_value=1, max_value=20),
    cancel_at=st.floats(min_value=0.0, max_value=3.0),
)
async def test_cancelled_nursery_still_delivers_every_accepted_write(
    autojump_clock: trio.testing.MockClock,
    producers: list[list[int]],
    buffer_size: int,
    cancel_at: float,
) -> None:
    received: list[bytes] = []
    accepted: list[bytes] = []

    async def writer(data: bytes) -> None:
        await trio.sleep(0.01)
        received.append(data)

    async def produce(agg: Aggregator, producer: int, sizes: list[int]) -> None:
        for i, size in enumerate(sizes):
            message = _message(producer, i, size)
            await agg.write(message)
            accepted.append(message)
            await trio.sleep(0.05)

    config = AggregatorConfig(writer=writer, buffer_size=buffer_size, drain_timeout=60)
    agg = Aggregator(config)
    with trio.move_on_after(cancel_at):
        async with trio.open_nursery() as nursery:
            await agg.start(nursery)
            for p, sizes in enumerate(producers):
                nursery.start_soon(produce, agg, p, sizes)
            await trio.sleep_forever()
    # Every write that returned was delivered, exactly once and in each producer's order.
    assert sorted(received) == sorted(accepted)
    assert [m for m in received if m in set(accepted)] == received
    for producer in range(len(producers)):
        mine = [_split(m)[1] for m in received if _split(m)[0] == producer]
        assert mine == list(range(len(mine)))
    assert not agg.is_running
    assert agg.statistics().items_accepted == len(received)
    assert agg.statistics().dropped == 0
