"""`ByteBudget` on its own: the ``buffer_max_bytes`` bound and its FIFO line."""

from __future__ import annotations

import pytest
import trio

from trio_aggregator import AggregatorClosedError
from trio_aggregator._budget import ByteBudget

from .conftest import settle


def test_try_reserve_takes_bytes_up_to_the_limit() -> None:
    budget = ByteBudget(10)
    assert budget.try_reserve(6)
    assert budget.try_reserve(4)
    assert budget.used == 10
    assert not budget.try_reserve(1)
    assert budget.used == 10
    budget.release(3)
    assert budget.try_reserve(3)
    assert budget.used == 10


def test_an_oversized_reservation_goes_alone_and_only_when_nothing_is_used() -> None:
    budget = ByteBudget(4)
    assert budget.try_reserve(1)
    assert not budget.try_reserve(9)
    budget.release(1)
    assert budget.try_reserve(9)
    assert budget.used == 9
    assert not budget.try_reserve(1)  # nothing joins it
    budget.release(9)
    assert budget.used == 0


async def test_reserve_returns_at_once_when_the_bytes_fit() -> None:
    budget = ByteBudget(10)
    await budget.reserve(7)
    assert budget.used == 7


async def test_reservations_waiting_in_line_go_in_order_and_release_wakes_them() -> None:
    budget = ByteBudget(10)
    assert budget.try_reserve(10)
    order: list[int] = []

    async def reserve(size: int) -> None:
        await budget.reserve(size)
        order.append(size)

    async with trio.open_nursery() as nursery:
        for size in (8, 1, 2):
            nursery.start_soon(reserve, size)
            await settle()
        budget.release(5)  # 5 used: 1 or 2 would fit, but 8 is first
        await settle()
        assert order == []
        assert not budget.try_reserve(1)  # it would fit, but may not pass the line
        budget.release(5)  # 0 used: 8, then 1 (9), then 2 does not fit (11)
        await settle()
        assert order == [8, 1]
        assert budget.used == 9
        budget.release(8)
        await settle()
    assert order == [8, 1, 2]
    assert budget.used == 3
    assert budget.try_reserve(7)  # the line is empty again


async def test_a_cancelled_reservation_leaves_the_line_to_the_next() -> None:
    budget = ByteBudget(4)
    assert budget.try_reserve(4)
    got: list[int] = []

    async def reserve(size: int, scope: trio.CancelScope) -> None:
        with scope:
            await budget.reserve(size)
            got.append(size)

    first, second = trio.CancelScope(), trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reserve, 3, first)
        await settle()
        nursery.start_soon(reserve, 2, second)
        await settle()
        first.cancel()
        await settle()
        assert got == []
        assert budget.used == 4
        budget.release(2)
    assert got == [2]
    assert budget.used == 4


async def test_close_fails_every_reservation_waiting_in_line() -> None:
    budget = ByteBudget(4)
    assert budget.try_reserve(4)
    errors: list[BaseException] = []

    async def reserve(size: int) -> None:
        try:
            await budget.reserve(size)
        except AggregatorClosedError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reserve, 1)  # holds the line, waits for room
        nursery.start_soon(reserve, 2)  # waits for the line itself
        await settle()
        budget.close()
    assert len(errors) == 2
    assert budget.used == 4
    with pytest.raises(AggregatorClosedError):
        await budget.reserve(0)  # even a reservation that fits, once closed
