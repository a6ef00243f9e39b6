"""Reading lines from many connections at once: `LineCollector`.

How a connection is read (`LineCollector.handle`): bytes are received in chunks of up to
`RECEIVE_SIZE` and cut into lines by a splitter, as the `FramingRules` say (a
`FrameSplitter`, or a `LineSplitter` for ``framing="lines"``). All the complete lines of one
chunk are handed to the aggregator as one write, so they stay together and in order;
the aggregator never splits a write, so a line is never interleaved with another.

Records the server cuts: when the server closes a connection itself (idle timeout,
shutdown) in the middle of a line, that line is a *cut record*. With
``cut_records="mark"`` (the default) it is written with `CUT_MARK` and the reason
after it, so it never passes for a whole record; with ``"drop"`` it is dropped and
counted lost (``cut``). And whatever the kernel still holds for that connection is
read once, without waiting (at most `UNREAD_LIMIT` bytes), and counted lost
(``unread``), in lines, with the cut record it completes: the client sent it, the
server will not write it. Beyond that limit, and what sits in the client's own
buffers, cannot be known.

The collector's counters are its own; a connection's splitter counts for itself, and
`LineCollector.statistics` adds those of the open connections to what the closed ones
left in the totals.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
from typing import TYPE_CHECKING, Literal

import trio

from ._framing import SPLITTER_COUNTS as _SPLITTER_COUNTS
from ._framing import FramingRules, Splitter
from ._handover import Handover
from ._lines import DEFAULT_MAX_LINE_BYTES
from ._listeners import accept_queued, peer_address, reset_queued, unread_lines
from ._losses import Losses
from ._statistics import Counters, ServerStatistics

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = [
    "ACCEPT_RETRY_DELAY",
    "CUT_MARK",
    "RECEIVE_SIZE",
    "SHUTDOWN_IDLE",
    "UNREAD_LIMIT",
    "CutRecords",
    "LineCollector",
]

CutRecords = Literal["mark", "drop"]

CUT_MARK = b" [cut by trio-aggregator: "
"""What follows a cut record in ``mark`` mode, then the reason and ``]``."""

UNREAD_LIMIT = 4 * 1024 * 1024
"""The most bytes read, without waiting, from a connection the server cuts, to count them."""

RECEIVE_SIZE = 64 * 1024
"""The most bytes read from a connection at once."""

SHUTDOWN_IDLE = 0.2
"""Seconds without a new connection after which a listener is closed once stopping."""

QUEUED_LIMIT = 65536
"""The most connections still queued on a listener that it closes: counted, then reset."""

ACCEPT_RETRY_DELAY = 0.1
"""Seconds to wait before accepting again after running out of file descriptors or memory."""

ACCEPT_LOG_INTERVAL = 10.0
"""Seconds between two log lines about failing accepts (each failure is counted)."""

logger = logging.getLogger("trio_aggregator.serve")

_ACCEPT_CAPACITY_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EMFILE", "ENFILE", "ENOMEM", "ENOBUFS")
    if hasattr(errno, name)
)


class _Connection:
    __slots__ = ("line_started", "scope", "splitter")

    def __init__(self, splitter: Splitter) -> None:
        self.line_started = math.inf  # when the line being received began
        self.scope = trio.CancelScope()
        self.splitter = splitter


class LineCollector:
    """Reads lines from many connections and hands them, whole, to *write*.

    Args:
        write: Called with the complete lines of each chunk read (`Aggregator.write`).
        max_line_bytes: Longer lines are truncated (see the module docs).
        idle_timeout: Close a connection silent for this long (None: never).
        max_connections: Connections served at once (None: no limit).
        shutdown_idle: After `stop`, stop accepting once no connection came for this long.
        losses: Where lines read and not handed over are counted (default: a new one).
        abort_grace: After `abort`, the most seconds a chunk already read may still wait
            to be handed over (for room in the aggregator); then it is counted lost.
        cut_records: What to do with a line the server cuts: ``"mark"`` or ``"drop"``
            (see the module docs).
        line_timeout: Cut a line not finished this many seconds after its first byte
            came (None: no limit).
        max_per_address: Connections served at once from one IP address; more from it
            are closed at once, unread, and counted (None: no limit).
        framing: How records are framed (default: ``FramingRules()``, ``auto``); binary
            records rejected are counted lost (``binary``).
    """

    def __init__(
        self,
        write: Callable[[bytes], Awaitable[object]],
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        idle_timeout: float | None = None,
        max_connections: int | None = None,
        shutdown_idle: float = SHUTDOWN_IDLE,
        losses: Losses | None = None,
        abort_grace: float = 30.0,
        cut_records: CutRecords = "mark",
        line_timeout: float | None = None,
        max_per_address: int | None = None,
        framing: FramingRules | None = None,
    ) -> None:
        self._max_line_bytes = max_line_bytes
        self._idle_timeout = idle_timeout
        self._slots = trio.Semaphore(max_connections) if max_connections else None
        self._shutdown_idle = shutdown_idle
        self._counters = Counters()
        self.losses = Losses() if losses is None else losses
        self._handover = Handover(write, self.losses, abort_grace)
        self._connections: set[_Connection] = set()
        self._accept_scopes: set[trio.CancelScope] = set()
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self._grace_deadline = math.inf
        if cut_records not in ("mark", "drop"):
            raise ValueError(f"cut_records must be 'mark' or 'drop', not {cut_records!r}")
        self._cut_records = cut_records
        self._line_timeout = line_timeout
        self._max_per_address = max_per_address
        self._per_address: dict[str, int] = {}
        self._slot_scopes: set[trio.CancelScope] = set()
        self._accept_errors_unlogged = 0
        self._next_accept_log = -math.inf
        self._framing = FramingRules() if framing is None else framing

    @property
    def stopping(self) -> bool:
        """Whether `stop` was called."""
        return self._stopping

    def statistics(self) -> ServerStatistics:
        """A snapshot of the counters, the open connections' splitters included."""
        counts = {name: getattr(self._counters, name) for name in Counters.__slots__}
        for conn in list(self._connections):  # a copy: --metrics reads from its thread
            for name in _SPLITTER_COUNTS:
                counts[name] += getattr(conn.splitter, name)
        return ServerStatistics(**counts)

    def _close_connection(self, conn: _Connection) -> None:
        """Forget *conn*, keeping its splitter's counts in the totals."""
        self._connections.discard(conn)
        counters = self._counters
        counters.connections_open -= 1
        for name in _SPLITTER_COUNTS:
            setattr(counters, name, getattr(counters, name) + getattr(conn.splitter, name))

    def _receive_deadline(self, conn: _Connection) -> float:
        now = trio.current_time()
        deadline = now + self._idle_timeout if self._idle_timeout else math.inf
        if self._line_timeout is not None:
            deadline = min(deadline, conn.line_started + self._line_timeout)
        # Stopping: read until the client closes, within the grace; silence proves nothing
        # (its last lines may come after a TCP zero-window probe: 0.2 s, 0.4 s... later).
        return min(deadline, self._grace_deadline)

    async def _write(self, chunk: bytes) -> bool:
        """Hand *chunk* over; False if `abort`'s grace ran out first (it is counted lost)."""
        if not await self._handover.write(chunk):
            return False
        self._counters.lines += chunk.count(b"\n")
        self._counters.bytes_accepted += len(chunk)
        return True

    async def handle(self, stream: trio.abc.ReceiveStream) -> None:
        """Read *stream* until it ends, writing its lines; then close it."""
        counters = self._counters
        splitter = self._framing.splitter(
            self._max_line_bytes, functools.partial(self.losses.add_data, "binary")
        )
        conn = _Connection(splitter)
        self._connections.add(conn)
        counters.connections_open += 1
        counters.connections_total += 1
        counters.connections_peak = max(counters.connections_peak, counters.connections_open)
        try:
            cut = await self._read(conn, stream)
            chunk = splitter.finish() if cut is None else self._cut(splitter, stream, cut)
            if chunk:
                await self._write(chunk)
        finally:
            self._close_connection(conn)
            await trio.aclose_forcefully(stream)

    async def _read(self, conn: _Connection, stream: trio.abc.ReceiveStream) -> str | None:
        """Read and hand over *stream*'s lines; why the server cut it, or None if it ended."""
        counters = self._counters
        while True:
            data: bytes | bytearray = b""
            conn.scope = trio.CancelScope(deadline=self._receive_deadline(conn))
            with conn.scope:
                try:
                    data = await stream.receive_some(RECEIVE_SIZE)
                except trio.BrokenResourceError:
                    counters.resets += 1
                    return None
            if conn.scope.cancelled_caught:
                return self._why_cut(conn)
            if not data:
                return None
            counters.bytes_received += len(data)
            chunk = conn.splitter.feed(data)
            if not conn.splitter.pending_bytes:
                conn.line_started = math.inf
            elif chunk or conn.line_started == math.inf:
                conn.line_started = trio.current_time()
            if chunk and not await self._write(chunk):
                return "forced shutdown"

    def _why_cut(self, conn: _Connection) -> str:
        if self._stopping:
            return "shutdown"
        line_timeout = self._line_timeout
        if line_timeout is not None and trio.current_time() >= conn.line_started + line_timeout:
            self._counters.line_timeouts += 1
            return "line timeout"
        self._counters.idle_closed += 1
        return "idle timeout"

    def _cut(self, splitter: Splitter, stream: trio.abc.ReceiveStream, reason: str) -> bytes:
        """The server cuts *stream*: count what the kernel still holds; the record to write."""
        started, binary = splitter.pending_bytes > 0, splitter.binary_records
        record = splitter.take_pending()
        lines, nbytes = unread_lines(stream, RECEIVE_SIZE, UNREAD_LIMIT)
        if nbytes:
            self.losses.add("unread", lines, len(record) + nbytes)
            return b""
        if not record and (not started or splitter.binary_records != binary):
            return b""  # no record begun, or it was rejected as binary (counted lost)
        # A record begun, even one of which only the octet count came (its body b"").
        self._counters.cut_records += 1
        if self._cut_records == "drop":
            self.losses.add("cut", 1, len(record))
            return b""
        return record + CUT_MARK + reason.encode() + b"]\n"

    async def _serve_connection(
        self,
        stream: trio.abc.ReceiveStream,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        address = None if self._max_per_address is None else peer_address(stream)
        if address is not None and not self._admit(address, self._max_per_address):
            task_status.started()
            await trio.aclose_forcefully(stream)
            return
        try:
            await self._serve_admitted(stream, task_status)
        finally:
            if address is not None:
                self._per_address[address] -= 1
                if not self._per_address[address]:
                    del self._per_address[address]

    def _admit(self, address: str, limit: int | None) -> bool:
        """Count a connection from *address*; False if it has *limit* already."""
        count = self._per_address.get(address, 0)
        if limit is not None and count >= limit:
            self._counters.refused_per_address += 1
            return False
        self._per_address[address] = count + 1
        return True

    async def _serve_admitted(
        self, stream: trio.abc.ReceiveStream, task_status: trio.TaskStatus[None]
    ) -> None:
        slots = self._slots
        acquired = slots is None
        try:
            if slots is not None:
                with trio.CancelScope() as scope:
                    self._slot_scopes.add(scope)
                    if self._handover.forced:
                        scope.cancel()
                    await slots.acquire()
                    acquired = True
                self._slot_scopes.discard(scope)
        finally:
            if not acquired:  # aborted or cancelled while waiting for a slot
                self.losses.add("unread", *unread_lines(stream, RECEIVE_SIZE, UNREAD_LIMIT))
                await trio.aclose_forcefully(stream)
        task_status.started()
        if not acquired:
            return
        try:
            await self.handle(stream)
        finally:
            if slots is not None:
                slots.release()

    def _accept_deadline(self) -> float:
        if not self._stopping:
            return math.inf
        return min(trio.current_time() + self._shutdown_idle, self._grace_deadline)

    async def _accept(self, listener: trio.abc.Listener[trio.abc.Stream]) -> trio.abc.Stream | None:
        """The next connection; None once stopping and none came for ``shutdown_idle``."""
        while True:
            with trio.CancelScope(deadline=self._accept_deadline()) as scope:
                self._accept_scopes.add(scope)
                try:
                    return await listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                        raise
                    self._counters.accept_errors += 1
                    self._log_accept_error(exc)
                finally:
                    self._accept_scopes.discard(scope)
            if scope.cancelled_caught:
                return None
            await trio.sleep(ACCEPT_RETRY_DELAY)

    def _log_accept_error(self, exc: OSError) -> None:
        """Log a failing accept, at most once every `ACCEPT_LOG_INTERVAL` seconds."""
        self._accept_errors_unlogged += 1
        now = trio.current_time()
        if now < self._next_accept_log:
            return
        logger.warning(
            "accepting a connection failed: %s (%d time(s) since the last report);"
            " retrying every %g s",
            exc.strerror or exc,
            self._accept_errors_unlogged,
            ACCEPT_RETRY_DELAY,
        )
        self._accept_errors_unlogged = 0
        self._next_accept_log = now + ACCEPT_LOG_INTERVAL

    async def _accept_loop(
        self, listener: trio.abc.Listener[trio.abc.Stream], nursery: trio.Nursery
    ) -> None:
        try:
            while True:
                stream = await self._accept(listener)
                if stream is None and trio.current_time() < self._grace_deadline:
                    stream = accept_queued(listener)  # came as the idle wait ended
                if stream is None:
                    return
                # Waits for a free slot (max_connections) before accepting again.
                await nursery.start(self._serve_connection, stream)
        finally:
            # Closing the listener resets what is still queued: count it lost first.
            queued = reset_queued(listener, QUEUED_LIMIT, RECEIVE_SIZE, UNREAD_LIMIT)
            self.losses.add("unread", *queued)
            await trio.aclose_forcefully(listener)

    async def serve(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections on every listener and `handle` each one.

        Returns once `stop` was called and every connection has ended; the listeners are
        closed by then.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener, nursery)
                task_status.started()
        finally:
            self._nursery = None

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting; give connections at most *grace* seconds to finish.

        Connections the system has already queued are still accepted: a listener is
        closed once no connection came for ``shutdown_idle`` seconds. A connection is
        read until its client closes it, however long it is silent, within *grace*.
        Whatever is left when *grace* runs out is closed: a record it cuts is marked or
        dropped, and what the kernel still holds for it, or for a connection still
        queued on a listener, is counted lost (``unread``).
        """
        now = trio.current_time()
        self._grace_deadline = min(self._grace_deadline, now + grace)
        self._stopping = True
        accept_deadline = min(now + self._shutdown_idle, self._grace_deadline)
        for scope in self._accept_scopes:
            scope.deadline = min(scope.deadline, accept_deadline)
        for conn in self._connections:
            conn.scope.deadline = min(conn.scope.deadline, self._grace_deadline)

    def abort(self) -> None:
        """Stop at once: close every connection; what was read is still handed over.

        Connections are closed without reading more, and those waiting for a slot are
        dropped unread (what the kernel holds for them is counted lost); a chunk already
        read still waits for room in the aggregator, up to *abort_grace* seconds, then
        it is counted lost (``forced_shutdown``). A second call cancels everything at
        once (what was waiting is counted lost).
        """
        self.stop(0)
        if self._handover.force():
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
            return
        for scope in self._slot_scopes:
            scope.cancel()
