"""`AggregatorHandler`: a `logging.Handler` that hands each record to an aggregator.

Where the record is emitted decides how:

* on the aggregator's Trio thread, `Aggregator.write_nowait`: the event loop never
  blocks, so a record that finds no room is dropped and counted;
* on another thread, with ``when_full="block"``, `Aggregator.write_from_thread`: the
  thread waits for room;
* on another thread, with ``when_full="drop"``, the record is posted to the Trio run
  (`trio.lowlevel.TrioToken.run_sync_soon`) and the thread goes on at once; the event
  loop then writes it with `Aggregator.write_nowait`, or counts it dropped. At most
  `MAX_IN_FLIGHT` records per handler wait for the loop; beyond that they are dropped
  (and counted) at once.

`logging.Handler.handle` holds the handler's lock while `emit` runs. Here it does not:
a thread waiting for room under that lock would stop the Trio thread at the lock as
soon as a task logged, and the Trio thread is the one that makes room.
"""

from __future__ import annotations

import logging
import threading
from threading import get_ident
from typing import TYPE_CHECKING, Literal

import trio

from ._errors import AggregatorClosedError

if TYPE_CHECKING:
    from ._aggregator import Aggregator
    from ._lowlevel import TrioToken

OWN_LOGGER = "trio_aggregator"
MAX_IN_FLIGHT = 10_000
"""Records a drop-mode handler lets wait for the event loop, from all threads together."""


class AggregatorHandler(logging.Handler):
    """A `logging.Handler` that writes each formatted record, plus ``"\\n"``, to an aggregator.

    Attach it to any logger (the root logger included) from any thread. Records of the
    ``trio_aggregator`` logger itself are ignored, so that the aggregator's own error
    reports cannot feed back into it.

    Args:
        aggregator: the `Aggregator` to write to; it must be running for records to get
            in (records emitted before it starts or after it stopped are dropped and
            counted, never raised).
        when_full: what a thread other than the aggregator's Trio thread does when the
            buffer is full: ``"drop"`` (the default) never blocks it, the record is
            dropped and counted; ``"block"`` waits for room (`Aggregator.write_from_thread`).
            On the Trio thread a record that finds no room is always dropped and counted:
            the event loop never blocks.
        level: the handler's level, as for any `logging.Handler`.

    Raises:
        ValueError: *when_full* is neither ``"drop"`` nor ``"block"``.
    """

    def __init__(
        self,
        aggregator: Aggregator,
        *,
        when_full: Literal["drop", "block"] = "drop",
        level: int | str = logging.NOTSET,
    ) -> None:
        if when_full not in ("drop", "block"):
            raise ValueError(f"when_full must be 'drop' or 'block', not {when_full!r}")
        super().__init__(level)
        self._aggregator = aggregator
        self._when_full: Literal["drop", "block"] = when_full
        self._counts = threading.Lock()  # held only to count, never across a wait
        self._dropped = 0
        self._in_flight = 0

    @property
    def aggregator(self) -> Aggregator:
        """The aggregator the records go to."""
        return self._aggregator

    @property
    def when_full(self) -> Literal["drop", "block"]:
        """What a thread other than the Trio thread does when the buffer is full."""
        return self._when_full

    @property
    def dropped(self) -> int:
        """Records dropped so far: no room, not running, or failed to format or write.

        A record posted by a drop-mode thread is counted once the event loop has
        handled it, which is soon after `emit` returned.
        """
        return self._dropped

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter *record*, then `emit` it, without holding the handler's lock.

        `emit` needs no lock (the aggregator serialises the writes), and holding one
        while a thread waits for room could stop the Trio thread at that lock.
        """
        result = self.filter(record)
        if isinstance(result, logging.LogRecord):  # pyright: ignore[reportUnnecessaryIsInstance]
            record = result  # Python 3.12: a filter may return a replacement record
        if result:
            self.emit(record)
        return bool(result)

    def emit(self, record: logging.LogRecord) -> None:
        """Format *record* and hand it to the aggregator, or count it dropped.

        Never raises for a full buffer or a stopped aggregator (both are counted); other
        failures are counted and passed to `logging.Handler.handleError`, as the standard
        handlers do.
        """
        if str(record.name).partition(".")[0] == OWN_LOGGER:  # or a child of it
            return
        try:
            data = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            self._hand_over(data, record)
        except RecursionError:  # as the standard handlers do
            raise
        except Exception:
            self._count(dropped=1)
            self.handleError(record)

    # ------------------------------------------------------------ internals

    def _hand_over(self, data: bytes, record: logging.LogRecord) -> None:
        aggregator = self._aggregator
        run = aggregator._run  # pyright: ignore[reportPrivateUsage]  # one package
        if get_ident() == run.thread:
            self._write_nowait(data)
        elif self._when_full == "block":
            try:
                written = aggregator.write_from_thread(data)
            except (trio.WouldBlock, AggregatorClosedError):
                written = 0
            if not written:
                self._count(dropped=1)
        else:
            self._post(run.token, data, record)

    def _write_nowait(self, data: bytes) -> None:
        """On the Trio thread: in now, or dropped and counted."""
        try:
            written = self._aggregator.write_nowait(data)
        except (trio.WouldBlock, AggregatorClosedError):
            written = 0
        if not written:  # no room, or dropped by the aggregator's own when_full
            self._count(dropped=1)

    def _post(self, token: TrioToken | None, data: bytes, record: logging.LogRecord) -> None:
        """From another thread, without waiting: the event loop writes it soon."""
        with self._counts:
            if token is None or self._in_flight >= MAX_IN_FLIGHT:
                self._dropped += 1
                return
            self._in_flight += 1
        try:
            token.run_sync_soon(self._apply, data, record)
        except trio.RunFinishedError:
            self._count(dropped=1, landed=1)

    def _apply(self, data: bytes, record: logging.LogRecord) -> None:
        """On the Trio thread, for `_post`: nothing may escape a ``run_sync_soon`` call."""
        try:
            self._write_nowait(data)
        except Exception:
            self._count(dropped=1)
            self.handleError(record)
        finally:
            self._count(landed=1)

    def _count(self, *, dropped: int = 0, landed: int = 0) -> None:
        with self._counts:
            self._dropped += dropped
            self._in_flight -= landed
