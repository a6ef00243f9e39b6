"""`Handover`: what an input read reaches the outputs, or is counted lost (issue 11)."""

from __future__ import annotations

import trio
import trio.testing

from trio_aggregator._serve._handover import Handover
from trio_aggregator._serve._losses import Losses


async def test_a_write_that_is_not_held_hands_the_chunk_over() -> None:
    got: list[bytes] = []

    async def write(chunk: bytes) -> None:
        await trio.lowlevel.checkpoint()
        got.append(chunk)

    losses = Losses()
    handover = Handover(write, losses, grace=1.0)
    assert await handover.write(b"a\nb\n")
    assert got == [b"a\nb\n"]
    assert losses.snapshot().total_lines == 0
    assert handover.forced == 0


async def test_force_gives_waiting_writes_the_grace_then_counts_them_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def stuck(chunk: bytes) -> None:
        await trio.sleep_forever()

    losses = Losses()
    handover = Handover(stuck, losses, grace=2.0)
    results: list[tuple[bool, float]] = []

    async def one(chunk: bytes) -> None:
        results.append((await handover.write(chunk), trio.current_time()))

    with trio.fail_after(100):  # a deadline not applied fails here instead of hanging
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, b"1\n2\n")
            await trio.sleep(10)  # held by a full buffer, no deadline yet
            assert results == []
            assert handover.force() is False  # the first force: the grace begins
            nursery.start_soon(one, b"3\n")  # a write after it gets the same deadline
    assert results == [(False, 12.0), (False, 12.0)]
    snapshot = losses.snapshot()
    assert snapshot.lines["forced_shutdown"] == 3
    assert snapshot.bytes["forced_shutdown"] == 6


async def test_the_second_force_asks_for_everything_to_be_cancelled_and_counts_the_cut(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def stuck(chunk: bytes) -> None:
        await trio.sleep_forever()

    losses = Losses()
    handover = Handover(stuck, losses, grace=30.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handover.write, b"x\n")
        await trio.sleep(1)
        assert handover.force() is False
        assert handover.force() is True  # the caller cancels its nursery
        nursery.cancel_scope.cancel()
    assert handover.forced == 2
    assert losses.snapshot().lines["forced_shutdown"] == 1
