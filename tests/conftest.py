from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trio_aggregator import Aggregator, AggregatorConfig, FileSink, open_aggregator

Payload = bytes | list[bytes]


class Recorder:
    """An async writer that records each call (a copy of a list) and the time it ended.

    With a *gate*, every call waits for it first; without one, with *checkpoint*, every
    call checkpoints once. With a *delay*, every call then sleeps that long (in mock time
    under ``autojump_clock``). A call whose data `fail_on` accepts raises `OSError`
    instead of being recorded. `running` and `max_running` count concurrent calls.
    """

    def __init__(
        self, *, gate: trio.Event | None = None, delay: float = 0.0, checkpoint: bool = False
    ) -> None:
        self.calls: list[Payload] = []
        self.times: list[float] = []
        self.gate = gate
        self.delay = delay
        self.checkpoint = checkpoint
        self.running = 0
        self.max_running = 0
        self.fail_on: Callable[[Any], bool] = lambda data: False

    async def __call__(self, data: Payload) -> None:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            elif self.checkpoint:
                await trio.lowlevel.checkpoint()
            if self.delay:
                await trio.sleep(self.delay)
            if self.fail_on(data):
                raise OSError(f"cannot write {data!r}")
            self.calls.append(list(data) if isinstance(data, list) else data)
            self.times.append(trio.current_time())
        finally:
            self.running -= 1

    def items(self) -> list[bytes]:
        """The written items, for writers fed newline-terminated items or lists."""
        return flatten(self.calls)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder(checkpoint=True)


def flatten(calls: Sequence[Payload]) -> list[bytes]:
    """The items of *calls*: a list's items, and a `bytes` call cut into lines."""
    out: list[bytes] = []
    for call in calls:
        if isinstance(call, bytes):
            out.extend(call.splitlines(keepends=True))
        else:
            out.extend(call)
    return out


def config(writer: Callable[[Any], object], **kwargs: Any) -> AggregatorConfig:
    return AggregatorConfig(writer=writer, **kwargs)


async def settle() -> None:
    """Let every task run until all are blocked (the receiver parks)."""
    await trio.testing.wait_all_tasks_blocked()


class Gated:
    """An aggregator whose writer, a `Recorder`, waits at a gate until `release`.

    `busy` hands one item to the parked receiver: the writer is then stuck on it, so what
    is written next stays buffered, and a full buffer shows the ``when_full`` policy.
    """

    def __init__(self, agg: Aggregator, writer: Recorder, nursery: trio.Nursery) -> None:
        self.agg = agg
        self.writer = writer
        self.nursery = nursery
        """The nursery the aggregator runs in, for the test's own tasks."""
        self._gate = trio.Event()
        writer.gate = self._gate

    async def busy(self, item: bytes = b"a") -> None:
        """Shut the gate (again, after a `release`) and hand *item* to the parked receiver:
        the writer is stuck on it, and the buffer is empty."""
        if self._gate.is_set():
            self._gate = self.writer.gate = trio.Event()
        await settle()
        assert await self.agg.write(item) == len(item)
        await settle()
        assert self.agg.nb_processing == 0

    def fill(self, *items: bytes) -> None:
        """`write_nowait` each of *items*; each must be accepted whole."""
        for item in items:
            assert self.agg.write_nowait(item) == len(item)

    def release(self) -> None:
        """Open the gate: the writer call waiting at it, and every later one, go through."""
        self._gate.set()


@asynccontextmanager
async def gated_aggregator(**kwargs: Any) -> AsyncIterator[Gated]:
    """`open_aggregator` with *kwargs* as its config and a gated writer, in a nursery of
    its own. The gate starts shut; on exit it is opened, so the closing drain goes through.
    """
    writer = Recorder()
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config(writer, **kwargs)) as agg,
    ):
        gated = Gated(agg, writer, nursery)
        try:
            yield gated
        finally:
            gated.release()


def fail_first_file_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the first `FileSink` write fail with ENOSPC (28); the later ones go through."""
    real = FileSink.write_blocking
    calls = 0

    def first_write_fails(self: FileSink, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(28, "No space left on device")
        real(self, data)

    monkeypatch.setattr(FileSink, "write_blocking", first_write_fails)
