from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

from trio_aggregator import AggregatorConfig


class Recorder:
    """A writer that records every call, and can be told to block or fail."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.running = 0
        self.max_running = 0
        self.gate: trio.Event | None = None
        self.fail_on: Callable[[Any], bool] = lambda data: False

    @property
    def data(self) -> bytes:
        return b"".join(c if isinstance(c, bytes) else b"".join(c) for c in self.calls)

    async def __call__(self, data: Any) -> None:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await trio.lowlevel.checkpoint()
            if self.fail_on(data):
                raise OSError(f"cannot write {data!r}")
            self.calls.append(data)
        finally:
            self.running -= 1


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def config_for(writer: Callable[[Any], object], **kwargs: Any) -> AggregatorConfig:
    return AggregatorConfig(writer=writer, **kwargs)
