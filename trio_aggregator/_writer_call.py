"""`WriterCall`: one call of the writer, whatever its kind, with retries and dead letters."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, cast

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from ._config import AggregatorConfig
    from ._ledger import Ledger

Payload = bytes | list[bytes]
MAX_BACKOFF = 10.0
"""Seconds: the retry backoff doubles up to this."""


async def await_if_awaitable(result: object) -> None:
    """Await what a callback returned, if it is awaitable."""
    if result is not None and inspect.isawaitable(result):
        await result


class WriterCall:
    """Calls the writer of any kind, retries failed calls and applies ``on_writer_error``.

    The receiver calls a plain sync writer inline (its hot path) and this for the rest.
    """

    __slots__ = ("_config", "_ledger")

    def __init__(self, config: AggregatorConfig, ledger: Ledger) -> None:
        self._config = config
        self._ledger = ledger

    async def call(self, payload: Payload) -> None:
        """One call of the writer: in a worker thread, awaited, or inline.

        A worker thread cannot be cancelled: when a stop runs out of ``drain_timeout``,
        the receiver stops waiting for it (the batch is counted as dropped), and the
        thread finishes the call in the background. The writer lock makes the next call
        (a restart's) wait for it, so the writer is still never called twice at once.
        """
        config = self._config
        if config.writer_thread:
            await trio.to_thread.run_sync(self._call_locked, payload, abandon_on_cancel=True)
        elif config.writer_is_async:
            await cast("Awaitable[object]", config.writer(payload))
        else:
            await await_if_awaitable(config.writer(payload))

    def _call_locked(self, payload: Payload) -> None:
        with self._ledger.writer_lock:
            self._config.writer(payload)

    async def retry(self, payload: Payload, exc: Exception) -> Exception | None:
        """Record the failed call, then retry with backoff; None once one succeeds."""
        ledger = self._ledger
        retries = self._config.writer_retries
        backoff = min(self._config.writer_retry_backoff, MAX_BACKOFF)
        while True:
            ledger.writer_errors += 1
            ledger.errors.record(exc, "writer")
            if not retries:
                return exc
            retries -= 1
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            ledger.writer_calls += 1
            try:
                await self.call(payload)
            except Exception as again:
                exc = again
            else:
                return None

    async def dead_letter(self, payload: Payload, exc: Exception) -> None:
        """Apply ``on_writer_error`` to a payload whose writer calls all failed."""
        policy = self._config.on_writer_error
        if policy == "raise":
            raise exc
        if callable(policy):
            try:
                await await_if_awaitable(policy(payload, exc))
            except Exception as hook_exc:
                self._ledger.callback_errors += 1
                self._ledger.errors.record(hook_exc, "on_writer_error hook")
