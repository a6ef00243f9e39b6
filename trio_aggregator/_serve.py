"""The line collector behind ``trio-aggregator serve``.

Many clients connect over TCP or a Unix socket and send newline-delimited records; every
complete line goes, whole, into one output through one `Aggregator`.

How a connection is read (`LineCollector.handle`): bytes are received in chunks of up to
`RECEIVE_SIZE` and cut into lines by a `LineSplitter`. All the complete lines of one
chunk are handed to the aggregator as one write, so they stay together and in order;
the aggregator never splits a write, so a line is never interleaved with another.

Over-long lines: a line longer than ``max_line_bytes`` (newline not counted) is
**truncated**. Its first ``max_line_bytes`` bytes are written at once, as one line
ending in a newline, and the rest, up to the next newline, is read and discarded. Both
are counted (`ServerStatistics.lines_truncated`, `ServerStatistics.bytes_discarded`).
So a client that never sends a newline costs at most ``max_line_bytes`` of memory.
A final line without a newline, when a client disconnects, is kept (a newline is added).

Memory bound: at most ``max_line_bytes + RECEIVE_SIZE`` per connection while it is
read, ``max_connections`` connections, and ``buffer`` writes of at most that size in
the aggregator. A full buffer blocks the connections' readers, and so, through TCP flow
control, the clients: nothing is dropped.

Shutdown (`LineServer.shutdown`, SIGINT or SIGTERM): the listeners stop accepting as
soon as no new connection has come for `SHUTDOWN_IDLE` seconds (so the connections the
system had already queued are served, not reset); each connection is read until its
client closes it, or it has been silent for `SHUTDOWN_IDLE` seconds (what it sent before
is read, not lost), or ``shutdown_timeout`` passes. Then the aggregator drains, the
file is fsynced and closed, and a summary is printed. A second signal closes every
connection at once.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import stat
import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, TextIO

import attrs
import trio

from ._aggregator import Aggregator, connect_aggregator
from ._config import AggregatorConfig
from ._sinks import FileSink, RotatingFileSink

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from ._statistics import AggregatorStatistics

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_OUTPUT",
    "DEFAULT_TCP",
    "LineCollector",
    "LineServer",
    "LineSplitter",
    "ServeError",
    "ServeOptions",
    "ServeSummary",
    "ServerStatistics",
    "format_address",
    "parse_tcp_address",
    "run_server",
]

DEFAULT_TCP = "127.0.0.1:5140"
"""Where ``serve`` listens when given neither ``--tcp`` nor ``--unix``."""

DEFAULT_OUTPUT = "aggregated.log"
DEFAULT_MAX_LINE_BYTES = 64 * 1024
RECEIVE_SIZE = 64 * 1024
"""The most bytes read from a connection at once."""

SHUTDOWN_IDLE = 0.2
"""Seconds of silence after which a connection is closed once shutdown has begun."""

ACCEPT_RETRY_DELAY = 0.1
"""Seconds to wait before accepting again after running out of file descriptors or memory."""

_ACCEPT_CAPACITY_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EMFILE", "ENFILE", "ENOMEM", "ENOBUFS")
    if hasattr(errno, name)
)

BATCH_MAX_ITEMS = 128
BATCH_MAX_BYTES = 1024 * 1024
ROTATE_CHECK_INTERVAL = 1.0
"""Seconds between rotation checks when fsync is off (``--fsync-interval 0``)."""


class ServeError(Exception):
    """The server cannot start (output not writable, address in use, ...): one clear line."""


def parse_tcp_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6HOST]:PORT`` for IPv6) as ``(host, port)``.

    Raises:
        ValueError: The text is not of that form, or the port is not in 0..65535.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, as [{host}]:{port_text}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number in 0..65535, got {port_text!r}")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """The inverse of `parse_tcp_address`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _positive_or_none(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, (int, float)) or not value > 0):
        raise ValueError(f"{attr.name} must be > 0 (or None), not {value!r}")


def _positive(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{attr.name} must be > 0, not {value!r}")


def _non_negative(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{attr.name} must be >= 0, not {value!r}")


@attrs.frozen(kw_only=True)
class ServeOptions:
    """What ``trio-aggregator serve`` is told on its command line."""

    tcp: tuple[tuple[str, int], ...] = ()
    """TCP addresses to listen on, as ``(host, port)``; port 0 picks a free port."""

    unix: tuple[str, ...] = ()
    """Unix socket paths to listen on."""

    output: str = DEFAULT_OUTPUT
    """The file to append to, or ``"-"`` for standard output."""

    rotate_bytes: int | None = attrs.field(default=None, validator=_positive_or_none)
    """Rotate the output when it reaches this size (None: never)."""

    backups: int = attrs.field(default=5, validator=_positive)
    """Rotated files kept, with ``rotate_bytes``."""

    buffer: int = attrs.field(default=256, validator=_positive)
    """Capacity of the aggregator's buffer, in writes (each: the lines of one chunk read)."""

    fsync_interval: float = attrs.field(default=1.0, validator=_non_negative)
    """Seconds between fsyncs of the output; 0 turns periodic fsync off."""

    max_line_bytes: int = attrs.field(default=DEFAULT_MAX_LINE_BYTES, validator=_positive)
    """Longer lines are truncated to this many bytes (the newline not counted)."""

    max_connections: int | None = attrs.field(default=1024, validator=_positive_or_none)
    """Connections served at once; more wait in the listen backlog (None: no limit)."""

    idle_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Close a connection silent for this many seconds (None: never)."""

    shutdown_timeout: float = attrs.field(default=5.0, validator=_non_negative)
    """At shutdown, the most seconds given to clients to finish sending."""

    shutdown_idle: float = attrs.field(default=SHUTDOWN_IDLE, validator=_non_negative)
    """At shutdown, close a listener or connection silent for this many seconds."""

    drain_timeout: float = attrs.field(default=30.0, validator=_non_negative)
    """At shutdown, the most seconds given to the aggregator to write what it holds."""

    quiet: bool = False
    """No status line."""

    status_interval: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Seconds between status lines (None: 1 on a terminal, 10 otherwise)."""

    announce: bool = True
    """Print the ``listening on`` lines first and a summary at the end, on stderr."""

    def __attrs_post_init__(self) -> None:
        if not self.tcp and not self.unix:
            raise ValueError("give at least one TCP address or Unix socket path")
        if self.output == "-" and self.rotate_bytes is not None:
            raise ValueError("rotation needs a file output, not standard output")


@attrs.frozen(kw_only=True)
class ServerStatistics:
    """Counters of a `LineCollector` (a snapshot)."""

    connections_open: int
    connections_total: int
    connections_peak: int
    lines: int
    """Lines handed to the aggregator (truncated and final partial lines included)."""
    bytes_received: int
    lines_truncated: int
    bytes_discarded: int
    """Bytes of over-long lines thrown away (past ``max_line_bytes``)."""
    partial_lines: int
    """Final lines without a newline, kept at disconnect."""
    idle_closed: int
    resets: int
    """Connections that ended with an error (reset by the peer...)."""
    accept_errors: int


class _Counters:
    """The mutable totals a `LineCollector` and its `LineSplitter` objects update."""

    __slots__ = (
        "accept_errors",
        "bytes_discarded",
        "bytes_received",
        "connections_open",
        "connections_peak",
        "connections_total",
        "idle_closed",
        "lines",
        "lines_truncated",
        "partial_lines",
        "resets",
    )

    def __init__(self) -> None:
        self.accept_errors = self.bytes_discarded = 0
        self.bytes_received = self.connections_open = self.connections_peak = 0
        self.connections_total = self.idle_closed = self.lines = self.lines_truncated = 0
        self.partial_lines = self.resets = 0


class LineSplitter:
    """Cuts one connection's bytes into whole lines, in bounded memory.

    `feed` returns the complete lines found so far (each ending in ``\\n``) as one
    `bytes`; a line longer than *max_line_bytes* is truncated as the module docs say.
    `finish` returns the last, unterminated line, with a newline added.
    """

    __slots__ = ("_counters", "_discarding", "_max", "_pending")

    def __init__(self, max_line_bytes: int, counters: _Counters | None = None) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be >= 1, not {max_line_bytes}")
        self._max = max_line_bytes
        self._pending = bytearray()
        self._discarding = False
        self._counters = counters if counters is not None else _Counters()

    @property
    def pending_bytes(self) -> int:
        """Bytes of the line being received (never more than *max_line_bytes*)."""
        return len(self._pending)

    @property
    def statistics(self) -> _Counters:
        """The counters this splitter updates (``lines_truncated``, ``bytes_discarded``...)."""
        return self._counters

    def feed(self, data: bytes | bytearray) -> bytes:
        """The complete lines that *data* finishes, joined; ``b""`` if none."""
        if not isinstance(data, bytes):
            data = bytes(data)
        pending = self._pending
        if not self._discarding and len(data) <= self._max:
            # Fast path: only the line that *pending* starts can be too long.
            first = data.find(b"\n")
            if first < 0:
                if len(pending) + len(data) <= self._max:
                    pending += data
                    return b""
            elif len(pending) + first <= self._max:
                last = data.rfind(b"\n")
                out = bytes(pending) + data[: last + 1] if pending else data[: last + 1]
                self._pending = bytearray(data[last + 1 :])
                return out
        return self._feed_slow(data)

    def _feed_slow(self, data: bytes) -> bytes:
        counters = self._counters
        pending = self._pending
        out = bytearray()
        pos = 0
        size = len(data)
        while pos < size:
            newline = data.find(b"\n", pos)
            if self._discarding:
                if newline < 0:
                    counters.bytes_discarded += size - pos
                    break
                counters.bytes_discarded += newline - pos
                self._discarding = False
                pos = newline + 1
                continue
            end = size if newline < 0 else newline
            room = self._max - len(pending)
            if end - pos > room:
                out += pending
                out += data[pos : pos + room]
                out += b"\n"
                pending.clear()
                counters.lines_truncated += 1
                self._discarding = True
                pos += room
                continue
            if newline < 0:
                pending += data[pos:]
                break
            if pending:
                out += pending
                pending.clear()
            out += data[pos : newline + 1]
            pos = newline + 1
        return bytes(out)

    def finish(self) -> bytes:
        """The final line if it had no newline (with one added); ``b""`` otherwise."""
        self._discarding = False
        if not self._pending:
            return b""
        line = bytes(self._pending) + b"\n"
        self._pending.clear()
        self._counters.partial_lines += 1
        return line


class _Connection:
    __slots__ = ("scope",)

    def __init__(self) -> None:
        self.scope = trio.CancelScope()


class LineCollector:
    """Reads lines from many connections and hands them, whole, to *write*.

    Args:
        write: Called with the complete lines of each chunk read (`Aggregator.write`).
        max_line_bytes: Longer lines are truncated (see the module docs).
        idle_timeout: Close a connection silent for this long (None: never).
        max_connections: Connections served at once (None: no limit).
        shutdown_idle: After `stop`, close a connection silent for this long.
    """

    def __init__(
        self,
        write: Callable[[bytes], Awaitable[object]],
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        idle_timeout: float | None = None,
        max_connections: int | None = None,
        shutdown_idle: float = SHUTDOWN_IDLE,
    ) -> None:
        self._write_fn = write
        self._max_line_bytes = max_line_bytes
        self._idle_timeout = idle_timeout
        self._slots = trio.Semaphore(max_connections) if max_connections else None
        self._shutdown_idle = shutdown_idle
        self._counters = _Counters()
        self._connections: set[_Connection] = set()
        self._accept_scopes: set[trio.CancelScope] = set()
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self._grace_deadline = math.inf

    @property
    def stopping(self) -> bool:
        """Whether `stop` was called."""
        return self._stopping

    def statistics(self) -> ServerStatistics:
        """A snapshot of the counters."""
        c = self._counters
        return ServerStatistics(**{name: getattr(c, name) for name in _Counters.__slots__})

    def _receive_deadline(self) -> float:
        now = trio.current_time()
        deadline = now + self._idle_timeout if self._idle_timeout else math.inf
        if self._stopping:
            deadline = min(deadline, now + self._shutdown_idle, self._grace_deadline)
        return deadline

    async def _write(self, chunk: bytes) -> None:
        await self._write_fn(chunk)
        self._counters.lines += chunk.count(b"\n")

    async def handle(self, stream: trio.abc.ReceiveStream) -> None:
        """Read *stream* until it ends, writing its lines; then close it."""
        counters = self._counters
        conn = _Connection()
        self._connections.add(conn)
        counters.connections_open += 1
        counters.connections_total += 1
        counters.connections_peak = max(counters.connections_peak, counters.connections_open)
        splitter = LineSplitter(self._max_line_bytes, counters)
        try:
            while True:
                data: bytes | bytearray = b""
                conn.scope = trio.CancelScope(deadline=self._receive_deadline())
                with conn.scope:
                    try:
                        data = await stream.receive_some(RECEIVE_SIZE)
                    except trio.BrokenResourceError:
                        counters.resets += 1
                        break
                if conn.scope.cancelled_caught:
                    if not self._stopping:
                        counters.idle_closed += 1
                    break
                if not data:
                    break
                counters.bytes_received += len(data)
                chunk = splitter.feed(data)
                if chunk:
                    await self._write(chunk)
            chunk = splitter.finish()
            if chunk:
                await self._write(chunk)
        finally:
            self._connections.discard(conn)
            counters.connections_open -= 1
            await trio.aclose_forcefully(stream)

    async def _serve_connection(
        self,
        stream: trio.abc.ReceiveStream,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        slots = self._slots
        acquired = slots is None
        try:
            if slots is not None:
                await slots.acquire()
                acquired = True
        finally:
            if not acquired:  # cancelled while waiting for a slot
                await trio.aclose_forcefully(stream)
        task_status.started()
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
                finally:
                    self._accept_scopes.discard(scope)
            if scope.cancelled_caught:
                return None
            await trio.sleep(ACCEPT_RETRY_DELAY)

    async def _accept_loop(
        self, listener: trio.abc.Listener[trio.abc.Stream], nursery: trio.Nursery
    ) -> None:
        try:
            while True:
                stream = await self._accept(listener)
                if stream is None:
                    return
                # Waits for a free slot (max_connections) before accepting again.
                await nursery.start(self._serve_connection, stream)
        finally:
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
        closed as soon as its client closes it, or it has been silent for
        ``shutdown_idle`` seconds. Whatever is left when *grace* runs out is closed.
        """
        now = trio.current_time()
        self._grace_deadline = min(self._grace_deadline, now + grace)
        self._stopping = True
        deadline = min(now + self._shutdown_idle, self._grace_deadline)
        for scope in (*self._accept_scopes, *(conn.scope for conn in self._connections)):
            scope.deadline = min(scope.deadline, deadline)

    def abort(self) -> None:
        """Stop at once: cancel every connection, even one waiting to write."""
        self.stop(0)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()


@attrs.frozen(kw_only=True)
class ServeSummary:
    """What a `LineServer` did, once it has finished."""

    seconds: float
    output: str
    server: ServerStatistics
    aggregator: AggregatorStatistics
    rotations: int
    final_errors: tuple[str, ...] = ()
    """Problems met while closing the output (a failed final fsync...)."""

    @property
    def ok(self) -> bool:
        """Whether every line received was written: no writer error, drop or failed fsync."""
        agg = self.aggregator
        return not (agg.writer_errors or agg.callback_errors or agg.dropped or self.final_errors)

    def throughput_rows(self) -> list[tuple[str, str]]:
        """The ``lines/s``, ``MB/s``, ``writer calls`` and ``peak buffer`` rows."""
        agg = self.aggregator
        seconds = max(self.seconds, 1e-9)
        return [
            ("lines/s", f"{self.server.lines / seconds:,.0f}"),
            ("MB/s", f"{agg.bytes_written / seconds / 1e6:,.1f}"),
            ("writer calls", f"{agg.writer_calls:,}"),
            ("peak buffer", f"{agg.peak_nb_processing:,} / {agg.buffer_size:,} writes"),
        ]

    def rows(self) -> list[tuple[str, str]]:
        """The summary as ``(label, value)`` rows."""
        s, agg = self.server, self.aggregator
        rows = [
            ("seconds", f"{self.seconds:.2f}"),
            ("connections", f"{s.connections_total:,} (peak {s.connections_peak:,} at once)"),
            ("lines", f"{s.lines:,}"),
            ("bytes received", f"{s.bytes_received:,}"),
            ("bytes written", f"{agg.bytes_written:,}"),
            *self.throughput_rows(),
            ("truncated lines", f"{s.lines_truncated:,} ({s.bytes_discarded:,} bytes discarded)"),
            ("partial lines", f"{s.partial_lines:,} (kept at disconnect)"),
            ("idle closed", f"{s.idle_closed:,}"),
            ("resets", f"{s.resets:,}"),
            ("errors", f"{agg.writer_errors + agg.callback_errors + s.accept_errors:,}"),
            ("dropped", f"{agg.dropped:,}"),
            ("output", self.output + (f" ({self.rotations} rotations)" if self.rotations else "")),
        ]
        rows.extend(("error", message) for message in self.final_errors)
        return rows


def format_table(rows: Sequence[tuple[str, str]], indent: str = "  ") -> str:
    """Rows of ``(label, value)`` as aligned text, one row a line."""
    width = max((len(label) for label, _ in rows), default=0)
    return "\n".join(f"{indent}{label:<{width}}  {value}" for label, value in rows)


async def _open_unix_listener(path: str) -> trio.SocketListener:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        try:
            await sock.bind(path)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or not await _is_stale_socket(path):
                raise
            os.unlink(path)
            await sock.bind(path)
        sock.listen(trio.socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def _is_stale_socket(path: str) -> bool:
    """Whether *path* is a Unix socket that nobody listens on any more."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except OSError:  # pragma: no cover - it was there a moment ago
        return False
    probe = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    with probe:
        try:
            await probe.connect(path)
        except ConnectionRefusedError:
            return True
        except OSError:  # pragma: no cover - unusual: not ours to remove
            return False
    return False


def _tcp_listener_address(listener: trio.SocketListener) -> tuple[str, int]:
    name: tuple[str, int] = listener.socket.getsockname()[:2]
    return name[0], name[1]


class LineServer:
    """One run of ``trio-aggregator serve``: output, listeners, aggregator, collector.

    Start it with ``server = await nursery.start(run_server, options)`` (or
    ``await nursery.start(LineServer(options).run)``), connect to `addresses`, then
    `shutdown`; `run` returns the exit code. Startup problems raise `ServeError`.

    Args:
        options: What to serve and how.
        stderr: Where messages, the status line and the summary go.
    """

    def __init__(self, options: ServeOptions, *, stderr: TextIO | None = None) -> None:
        self.options = options
        self._stderr = stderr
        self._aggregator: Aggregator | None = None
        self.collector = LineCollector(
            self._write,
            max_line_bytes=options.max_line_bytes,
            idle_timeout=options.idle_timeout,
            max_connections=options.max_connections,
            shutdown_idle=options.shutdown_idle,
        )
        self.tcp_addresses: list[tuple[str, int]] = []
        self.unix_paths: list[str] = []
        self.summary: ServeSummary | None = None
        self.exit_code: int | None = None
        self._shutdown_requested = False
        self._force = False
        self._finished = trio.Event()
        self._status_shown = False

    @property
    def stderr(self) -> TextIO:
        """Where messages go (standard error unless told otherwise)."""
        return self._stderr if self._stderr is not None else sys.stderr

    @property
    def aggregator(self) -> Aggregator | None:
        """The aggregator, while the server runs."""
        return self._aggregator

    @property
    def addresses(self) -> list[str]:
        """Every address listened on, as printed: ``HOST:PORT`` or ``unix:PATH``."""
        tcp = [format_address(host, port) for host, port in self.tcp_addresses]
        return tcp + [f"unix:{path}" for path in self.unix_paths]

    def message(self, text: str) -> None:
        """Print one line on stderr (clearing the status line first if it is shown)."""
        self._clear_status()
        print(f"trio-aggregator: {text}", file=self.stderr, flush=True)

    async def _write(self, chunk: bytes) -> None:
        assert self._aggregator is not None
        await self._aggregator.write(chunk)

    def shutdown(self, *, force: bool = False) -> None:
        """Begin a graceful shutdown (see the module docs); *force* closes connections now."""
        self._shutdown_requested = True
        self._force = self._force or force
        self.collector.stop(self.options.shutdown_timeout)
        if self._force:
            self.collector.abort()

    async def wait_finished(self) -> None:
        """Return once `run` has finished (drained, closed, summary printed)."""
        await self._finished.wait()

    # ------------------------------------------------------------------ setup

    def _open_sink(self) -> FileSink:
        opts = self.options
        if opts.output == "-":
            return FileSink._from_fd(1, "<stdout>")  # pyright: ignore[reportPrivateUsage]
        try:
            if opts.rotate_bytes is not None:
                return RotatingFileSink(opts.output, opts.rotate_bytes, opts.backups)
            return FileSink(opts.output)
        except OSError as exc:
            raise ServeError(
                f"cannot open output {opts.output!r} for appending: {exc.strerror or exc}"
            ) from None

    async def _open_listeners(self, stack: ExitStack) -> list[trio.SocketListener]:
        listeners: list[trio.SocketListener] = []
        for host, port in self.options.tcp:
            try:
                opened = await trio.open_tcp_listeners(port, host=host)
            except OSError as exc:
                raise ServeError(
                    f"cannot listen on {format_address(host, port)}: {exc.strerror or exc}"
                ) from None
            for listener in opened:
                stack.callback(listener.socket.close)
                listeners.append(listener)
                self.tcp_addresses.append(_tcp_listener_address(listener))
        for path in self.options.unix:
            try:
                listener = await _open_unix_listener(path)
            except OSError as exc:
                raise ServeError(f"cannot listen on unix:{path}: {exc.strerror or exc}") from None
            stack.callback(listener.socket.close)
            stack.callback(_unlink_if_same, path, os.stat(path).st_ino)
            listeners.append(listener)
            self.unix_paths.append(path)
        return listeners

    def _aggregator_config(self, sink: FileSink) -> AggregatorConfig:
        opts = self.options
        sync_fn: Callable[[], Awaitable[object]] | None = None
        interval = opts.fsync_interval
        if isinstance(sink, RotatingFileSink):
            if interval > 0:
                sync_fn = sink.sync
            else:
                sync_fn, interval = sink.rotate_if_needed, ROTATE_CHECK_INTERVAL
        elif opts.output != "-" and interval > 0:
            sync_fn = sink.sync
        return AggregatorConfig(
            writer=sink.write,
            buffer_size=opts.buffer,
            sync_fn=sync_fn,
            sync_interval=interval if sync_fn is not None else 0.0,
            batch_max_items=BATCH_MAX_ITEMS,
            batch_max_bytes=BATCH_MAX_BYTES,
            drain_timeout=opts.drain_timeout,
        )

    # ------------------------------------------------------------------ running

    async def run(
        self,
        *,
        handle_signals: bool = False,
        task_status: trio.TaskStatus[LineServer] = trio.TASK_STATUS_IGNORED,
    ) -> int:
        """Serve until `shutdown` (or SIGINT/SIGTERM with *handle_signals*); the exit code.

        0 when every line received was written; 1 when some were lost (writer errors,
        drops) or the final fsync failed.

        Raises:
            ServeError: The output cannot be opened or an address cannot be listened on.
        """
        try:
            with ExitStack() as stack:
                sink = self._open_sink()
                stack.callback(sink.close)
                listeners = await self._open_listeners(stack)
                if self.options.announce:
                    for address in self.addresses:
                        self.message(f"listening on {address}")
                if handle_signals:
                    receiver = stack.enter_context(
                        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
                    )
                else:
                    receiver = None
                started = trio.current_time()
                await self._serve(sink, listeners, receiver, task_status)
                final_errors = await self._close_sink(sink)
                self._clear_status()
                assert self._aggregator is not None
                summary = self.summary = ServeSummary(
                    seconds=trio.current_time() - started,
                    output=self.options.output if self.options.output != "-" else "<stdout>",
                    server=self.collector.statistics(),
                    aggregator=self._aggregator.statistics(),
                    rotations=sink.rotations if isinstance(sink, RotatingFileSink) else 0,
                    final_errors=final_errors,
                )
            self.exit_code = 0 if summary.ok else 1
            if self.options.announce:
                print(
                    f"trio-aggregator: summary\n{format_table(summary.rows())}",
                    file=self.stderr,
                    flush=True,
                )
            return self.exit_code
        finally:
            self._finished.set()

    async def _serve(
        self,
        sink: FileSink,
        listeners: Sequence[trio.SocketListener],
        receiver: AsyncIterator[int] | None,
        task_status: trio.TaskStatus[LineServer],
    ) -> None:
        async with trio.open_nursery() as nursery:
            aggregator = self._aggregator = await connect_aggregator(
                nursery, self._aggregator_config(sink)
            )
            try:
                if receiver is not None:
                    nursery.start_soon(self._watch_signals, receiver)
                if not self.options.quiet:
                    nursery.start_soon(self._show_status)
                async with trio.open_nursery() as serving:
                    await serving.start(self.collector.serve, listeners)
                    if self._shutdown_requested:
                        self.shutdown(force=self._force)
                    task_status.started(self)
            finally:
                await aggregator.aclose()
                nursery.cancel_scope.cancel()

    async def _close_sink(self, sink: FileSink) -> tuple[str, ...]:
        """fsync and close the output; the problems met, as messages."""
        errors: list[str] = []
        if self.options.output != "-":
            try:
                await sink.fsync()
            except OSError as exc:
                errors.append(f"final fsync of {sink.path!r} failed: {exc.strerror or exc}")
        await sink.aclose()
        for error in errors:
            self.message(error)
        return tuple(errors)

    async def _watch_signals(self, receiver: AsyncIterator[int]) -> None:
        async for signum in receiver:
            name = signal.Signals(signum).name
            if not self._shutdown_requested:
                self.message(
                    f"{name}: stopping (clients get up to {self.options.shutdown_timeout:g} s"
                    " to finish; send it again to close every connection now)"
                )
                self.shutdown()
            else:
                self.message(f"{name} again: closing every connection now")
                self.shutdown(force=True)

    # ------------------------------------------------------------------ status line

    def _is_tty(self) -> bool:
        isatty = getattr(self.stderr, "isatty", None)
        return bool(isatty is not None and isatty())

    def status_line(self, seconds: float, previous: tuple[int, int]) -> tuple[str, tuple[int, int]]:
        """The status text over the last *seconds*, and the counts to pass next time."""
        assert self._aggregator is not None
        server = self.collector.statistics()
        agg = self._aggregator.statistics()
        lines, nbytes = server.lines, agg.bytes_written
        seconds = max(seconds, 1e-9)
        errors = agg.writer_errors + agg.callback_errors + server.accept_errors
        text = (
            f"{server.connections_open:,} conns | {(lines - previous[0]) / seconds:,.0f} lines/s"
            f" | {(nbytes - previous[1]) / seconds / 1e6:,.1f} MB/s"
            f" | buffer {agg.nb_processing:,}/{agg.buffer_size:,}"
            f" | blocked {agg.nb_waiting:,} | errors {errors:,}"
        )
        return text, (lines, nbytes)

    async def _show_status(self) -> None:
        tty = self._is_tty()
        interval = self.options.status_interval or (1.0 if tty else 10.0)
        counts = (0, 0)
        last = trio.current_time()
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            text, counts = self.status_line(now - last, counts)
            last = now
            if tty:
                self.stderr.write(f"\r\x1b[K{text}")
                self.stderr.flush()
                self._status_shown = True
            else:
                print(text, file=self.stderr, flush=True)

    def _clear_status(self) -> None:
        if self._status_shown:
            self.stderr.write("\r\x1b[K")
            self._status_shown = False


def _unlink_if_same(path: str, inode: int) -> None:
    """Remove the socket file *path* unless something else has replaced it."""
    try:
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


async def run_server(
    options: ServeOptions,
    *,
    stderr: TextIO | None = None,
    handle_signals: bool = False,
    task_status: trio.TaskStatus[LineServer] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run a `LineServer` for *options*; see `LineServer.run`."""
    server = LineServer(options, stderr=stderr)
    return await server.run(handle_signals=handle_signals, task_status=task_status)
