"""The line collector behind ``trio-aggregator serve``: `LineServer` and `run_server`.

It puts the parts together (see the package docs): the output sink, the listeners, the
aggregator, the collector, the metrics endpoint, the signals and the status line.

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

import os
import signal
import stat
import sys
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, TextIO

import trio

from trio_aggregator import (
    Aggregator,
    AggregatorConfig,
    FileSink,
    RotatingFileSink,
    connect_aggregator,
)

from ._collector import LineCollector
from ._listeners import (
    format_address,
    open_unix_listener,
    tcp_listener_address,
    unlink_if_same,
)
from ._losses import Losses, OutputAccount
from ._metrics import MetricsEndpoint, start_metrics_endpoint
from ._options import ROTATE_CHECK_INTERVAL
from ._statistics import ServeSummary, format_table, input_status
from ._status import StatusDisplay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from ._options import ServeOptions

__all__ = ["LineServer", "ServeError", "run_server"]


class ServeError(Exception):
    """The server cannot start (output not writable, address in use, ...): one clear line."""


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
        self.losses = Losses()
        """Lines (and bytes) read and not written, by reason."""
        self._output = OutputAccount(self.losses)
        self.collector = LineCollector(
            self._write,
            losses=self.losses,
            max_line_bytes=options.max_line_bytes,
            idle_timeout=options.idle_timeout,
            max_connections=options.max_connections,
            shutdown_idle=options.shutdown_idle,
            abort_grace=options.drain_timeout,
            cut_records=options.cut_records,
            line_timeout=options.line_timeout,
            max_per_address=options.max_per_address,
            framing=options.framing_rules(),
        )
        self.tcp_addresses: list[tuple[str, int]] = []
        self.unix_paths: list[str] = []
        self._metrics: MetricsEndpoint | None = None
        self.summary: ServeSummary | None = None
        self.exit_code: int | None = None
        self._shutdown_requested = False
        self._force = False
        self._finished = trio.Event()
        self._status = StatusDisplay(lambda: self.stderr, options.status_interval)
        self._fsync_output = options.output != "-"

    @property
    def stderr(self) -> TextIO:
        """Where messages go (standard error unless told otherwise)."""
        return self._stderr if self._stderr is not None else sys.stderr

    @property
    def aggregator(self) -> Aggregator | None:
        """The aggregator, while the server runs."""
        return self._aggregator

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where the metrics are served (the real port when asked for port 0)."""
        return self._metrics.address if self._metrics is not None else None

    @property
    def addresses(self) -> list[str]:
        """Every address listened on, as printed: ``HOST:PORT`` or ``unix:PATH``."""
        tcp = [format_address(host, port) for host, port in self.tcp_addresses]
        return tcp + [f"unix:{path}" for path in self.unix_paths]

    def message(self, text: str) -> None:
        """Print one line on stderr (clearing the status line first if it is shown)."""
        self._status.clear()
        print(f"trio-aggregator: {text}", file=self.stderr, flush=True)

    async def _write(self, chunk: bytes) -> None:
        assert self._aggregator is not None
        await self._aggregator.write(chunk)

    def shutdown(self, *, force: bool = False) -> None:
        """Begin a graceful shutdown (see the module docs); *force* closes connections now.

        A forced shutdown still writes what was read (chunks waiting for room get up to
        ``drain_timeout``); forcing it again cancels those too, counting them lost.
        """
        self._shutdown_requested = True
        self.collector.stop(self.options.shutdown_timeout)
        if force:
            self._force = True
            self.collector.abort()

    async def wait_finished(self) -> None:
        """Return once `run` has finished (drained, closed, summary printed)."""
        await self._finished.wait()

    # ------------------------------------------------------------------ setup

    def _open_sink(self, stack: AsyncExitStack) -> FileSink:
        """Open the output; note whether it is a regular file (only those are fsynced).

        A symbolic link is not followed: the file is opened with ``O_NOFOLLOW``; with
        rotation (which opens by path), a link is refused at start.
        """
        opts = self.options
        if opts.output == "-":
            return FileSink.from_fd(1, "<stdout>")
        if os.path.islink(opts.output):
            raise ServeError(f"output {opts.output!r} is a symbolic link: give the real path")
        try:
            if opts.rotate_bytes is not None:
                if _exists_not_regular(opts.output):
                    raise ServeError(f"cannot rotate {opts.output!r}: not a regular file")
                return RotatingFileSink(opts.output, opts.rotate_bytes, opts.backups)
            fd = os.open(opts.output, _OUTPUT_FLAGS, OUTPUT_MODE)
            stack.callback(os.close, fd)
            sink = FileSink.from_fd(fd, opts.output)
        except OSError as exc:
            raise ServeError(
                f"cannot open output {opts.output!r} for appending: {exc.strerror or exc}"
            ) from None
        # /dev/null, a FIFO, a terminal: fsync fails there (EINVAL), so it is skipped.
        self._fsync_output = not _exists_not_regular(opts.output)
        return sink

    async def _open_listeners(self, stack: AsyncExitStack) -> list[trio.SocketListener]:
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
                self.tcp_addresses.append(tcp_listener_address(listener))
        for path in self.options.unix:
            try:
                listener = await open_unix_listener(path, self.options.unix_mode)
            except OSError as exc:
                raise ServeError(f"cannot listen on unix:{path}: {exc.strerror or exc}") from None
            stack.callback(listener.socket.close)
            stack.callback(unlink_if_same, path, os.stat(path).st_ino)
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
        elif self._fsync_output and interval > 0:
            sync_fn = sink.sync
        return opts.aggregator_config(
            self._output.writer(sink.write),
            sync_fn,
            interval if sync_fn is not None else 0.0,
            on_writer_error=self._output.lost_to_writer,
        )

    # ------------------------------------------------------------------ running

    async def run(
        self,
        *,
        handle_signals: bool = False,
        task_status: trio.TaskStatus[LineServer] = trio.TASK_STATUS_IGNORED,
    ) -> int:
        """Serve until `shutdown` (or SIGINT/SIGTERM with *handle_signals*); the exit code.

        0 when every line received was written; 1 when some were lost (counted in
        `losses`, by reason), a framing error was met or the final fsync failed.

        Raises:
            ServeError: The output cannot be opened or an address cannot be listened on.
        """
        try:
            async with AsyncExitStack() as stack:
                sink = self._open_sink(stack)
                stack.callback(sink.close)
                listeners = await self._open_listeners(stack)
                self._metrics = await self._start_metrics()
                if self._metrics is not None:
                    stack.push_async_callback(_in_thread_shielded, self._metrics.stop)
                self._announce()
                receiver: AsyncIterator[int] | None = None
                if handle_signals:
                    receiver = stack.enter_context(
                        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
                    )
                started = trio.current_time()
                await self._serve(sink, listeners, receiver, task_status)
                server = self.collector.statistics()
                self._output.count_drain_losses(server.lines, server.bytes_accepted)
                final_errors = await self._close_sink(sink)
                self._status.clear()
                summary = self.summary = self._summary(
                    sink, trio.current_time() - started, final_errors
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

    def _announce(self) -> None:
        if not self.options.announce:
            return
        for address in self.addresses:
            self.message(f"listening on {address}")
        if self.metrics_address is not None:
            self.message(f"metrics on http://{format_address(*self.metrics_address)}/metrics")

    def _summary(
        self, sink: FileSink, seconds: float, final_errors: tuple[str, ...]
    ) -> ServeSummary:
        assert self._aggregator is not None
        return ServeSummary(
            seconds=seconds,
            output=self.options.output if self.options.output != "-" else "<stdout>",
            server=self.collector.statistics(),
            aggregator=self._aggregator.statistics(),
            losses=self.losses.snapshot(),
            rotations=sink.rotations if isinstance(sink, RotatingFileSink) else 0,
            cut_records=self.options.cut_records,
            final_errors=final_errors,
        )

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
            if self._metrics is not None:
                self._metrics.register(aggregator)
                self._metrics.register_losses(self.losses.snapshot)
                self._metrics.register_input(self.collector.statistics)
            try:
                if receiver is not None:
                    nursery.start_soon(self._watch_signals, receiver)
                if not self.options.quiet:
                    nursery.start_soon(self._status.show, self.status_line)
                async with trio.open_nursery() as serving:
                    await serving.start(self.collector.serve, listeners)
                    if self._shutdown_requested:
                        self.collector.stop(self.options.shutdown_timeout)
                    task_status.started(self)
            finally:
                await aggregator.aclose()
                nursery.cancel_scope.cancel()

    async def _start_metrics(self) -> MetricsEndpoint | None:
        """Start the metrics endpoint if ``metrics`` asks for it (`_serve` registers)."""
        if self.options.metrics is None:
            return None
        host, port = self.options.metrics
        try:
            return await start_metrics_endpoint(host, port)
        except ImportError as exc:
            raise ServeError(str(exc)) from None
        except OSError as exc:
            raise ServeError(
                f"cannot serve metrics on {format_address(host, port)}: {exc.strerror or exc}"
            ) from None

    async def _close_sink(self, sink: FileSink) -> tuple[str, ...]:
        """fsync and close the output; the problems met, as messages."""
        errors: list[str] = []
        if self._fsync_output:
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
            elif not self._force:
                self.message(
                    f"{name} again: closing every connection now (what was read is still"
                    " written; send it again to give that up too)"
                )
                self.shutdown(force=True)
            else:
                self.message(f"{name} a third time: giving up what waits (counted lost)")
                self.shutdown(force=True)

    # ------------------------------------------------------------------ status line

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
            f" | buffered {agg.nb_processing - agg.nb_held:,}/{agg.buffer_size:,}"
            f" (+{agg.nb_held:,} in the writer's batch)"
            f" | blocked {agg.nb_waiting:,} | errors {errors:,}"
            f" | lost {self.losses.snapshot().total_lines:,} lines"
        ) + input_status(server)
        return text, (lines, nbytes)


OUTPUT_MODE = 0o640
"""Permissions of an output file the server creates (minus the umask)."""

_OUTPUT_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | os.O_NOFOLLOW


def _exists_not_regular(path: str) -> bool:
    """Whether *path* is something other than a regular file (a device, a FIFO...)."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


async def _in_thread_shielded(fn: Callable[[], object]) -> None:
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(fn)


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
