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
client closes it, however long it is silent, or until ``shutdown_timeout`` passes
(then what is left unread, on it or still queued on a listener, is counted lost). Then
the aggregator drains, the file is fsynced and closed, and a summary is printed. A
second signal closes every connection at once.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, TextIO

import trio

from ._collector import LineCollector
from ._errors import ServeError
from ._inputs import ServerInputs
from ._listeners import (
    format_address,
    open_unix_listener,
    tcp_listener_address,
    unlink_if_same,
)
from ._losses import Losses
from ._metrics import MetricsEndpoint, start_metrics_endpoint
from ._outputs import OutputError, Outputs, forward_status
from ._statistics import ServeSummary, format_table, input_status
from ._status import StatusDisplay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from trio_aggregator import Aggregator

    from ._options import ServeOptions

__all__ = ["LineServer", "ServeError", "run_server"]


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
        self.losses = Losses()
        """Lines (and bytes) read and not written, by reason."""
        self.outputs = Outputs(options, self.losses)
        """The output file and the forward targets, each with its own aggregator."""
        self.collector = LineCollector(
            self.outputs.write,
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
        self.inputs = ServerInputs(options, self.outputs.write, self.losses)  # TLS, UDP
        self.tcp_addresses: list[tuple[str, int]] = []
        self.unix_paths: list[str] = []
        self._metrics: MetricsEndpoint | None = None
        self.summary: ServeSummary | None = None
        self.exit_code: int | None = None
        self._shutdown_requested = False
        self._stop_requested = trio.Event()
        self._serving = False
        self._force = False
        self._finished = trio.Event()
        self._status = StatusDisplay(lambda: self.stderr, options.status_interval)

    @property
    def stderr(self) -> TextIO:
        """Where messages go (standard error unless told otherwise)."""
        return self._stderr if self._stderr is not None else sys.stderr

    @property
    def aggregator(self) -> Aggregator | None:
        """The first output's aggregator (the file's, if there is one), while it runs."""
        return self.outputs.all[0].aggregator if self.outputs.all else None

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where the metrics are served (the real port when asked for port 0)."""
        return self._metrics.address if self._metrics is not None else None

    @property
    def addresses(self) -> list[str]:
        """Every address listened on, as printed: ``HOST:PORT`` or ``unix:PATH``."""
        tcp = [format_address(host, port) for host, port in self.tcp_addresses]
        return tcp + [f"unix:{path}" for path in self.unix_paths] + self.inputs.addresses

    def message(self, text: str) -> None:
        """Print one line on stderr (clearing the status line first if it is shown)."""
        self._status.clear()
        print(f"trio-aggregator: {text}", file=self.stderr, flush=True)

    def shutdown(self, *, force: bool = False) -> None:
        """Begin a graceful shutdown (see the module docs); *force* closes connections now.

        A forced shutdown still writes what was read (chunks waiting for room get up to
        ``drain_timeout``); forcing it again cancels those too, counting them lost.
        """
        self._shutdown_requested = True
        self._stop_requested.set()
        self.collector.stop(self.options.shutdown_timeout)
        self.inputs.stop()
        if force:
            self._force = True
            self.collector.abort()
            self.inputs.abort()

    async def wait_finished(self) -> None:
        """Return once `run` has finished (drained, closed, summary printed)."""
        await self._finished.wait()

    # ------------------------------------------------------------------ setup

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
                self.inputs.load_tls()  # a bad certificate stops it before anything opens
                try:
                    self.outputs.open()
                except OutputError as exc:
                    raise ServeError(str(exc)) from None
                stack.callback(self.outputs.close_now)
                listeners = await self.inputs.open(stack, await self._open_listeners(stack))
                self._metrics = await self._start_metrics()
                if self._metrics is not None:
                    stack.push_async_callback(_in_thread_shielded, self._metrics.stop)
                self._announce()
                receiver: AsyncIterator[int] | None = None
                if handle_signals:
                    receiver = stack.enter_context(
                        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
                    )
                started = trio.current_time()
                await self._serve(listeners, receiver, task_status)
                server = self.collector.statistics()
                self.outputs.count_drain_losses(*self.inputs.accepted(server))
                final_errors = await self.outputs.close()
                for error in final_errors:
                    self.message(error)
                self._status.clear()
                summary = self.summary = self._summary(trio.current_time() - started, final_errors)
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

    def _summary(self, seconds: float, final_errors: tuple[str, ...]) -> ServeSummary:
        reports = self.outputs.reports()
        primary = reports[0]
        return ServeSummary(
            seconds=seconds,
            output=primary.name,
            server=self.collector.statistics(),
            aggregator=primary.aggregator,
            losses=self.losses.snapshot(),
            rotations=primary.rotations,
            cut_records=self.options.cut_records,
            final_errors=final_errors,
            inputs=self.inputs.statistics(),
            outputs=reports,
        )

    async def _serve(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        receiver: AsyncIterator[int] | None,
        task_status: trio.TaskStatus[LineServer],
    ) -> None:
        async with trio.open_nursery() as nursery:
            await self.outputs.start(nursery)
            if self._metrics is not None:
                self._metrics.register_outputs(self.outputs)
                self._metrics.register_losses(self.losses.snapshot)
                self.inputs.register_metrics(self._metrics)
                self._metrics.register_input(self.collector.statistics)
            try:
                if receiver is not None:
                    nursery.start_soon(self._watch_signals, receiver)
                if not self.options.quiet:
                    nursery.start_soon(self._status.show, self.status_line)
                nursery.start_soon(self._bound_shutdown)
                self._serving = True
                async with trio.open_nursery() as serving:
                    await serving.start(self.collector.serve, listeners)
                    serving.start_soon(self.inputs.serve)
                    if self._shutdown_requested:
                        self.collector.stop(self.options.shutdown_timeout)
                    task_status.started(self)
            finally:
                self._serving = False
                await self.outputs.close_aggregators()
                nursery.cancel_scope.cancel()

    async def _bound_shutdown(self) -> None:
        """One signal is enough: once the clients' time is up, go on as a second would.

        Readers still waiting for room then (an output that takes nothing: a forward
        target that does not read, with ``block``) get ``drain_timeout`` more seconds,
        then what they hold is counted lost: a single SIGTERM (systemd, docker) ends
        the server within ``shutdown_timeout`` + 2 x ``drain_timeout``.
        """
        await self._stop_requested.wait()
        await trio.sleep(self.options.shutdown_timeout + self.options.shutdown_idle)
        if self._serving and not self._force:
            self.message(
                f"shutdown timeout passed with lines still waiting for room: closing every"
                f" connection now (what waits gets up to {self.options.drain_timeout:g} s more)"
            )
            self.shutdown(force=True)

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

    async def _watch_signals(self, receiver: AsyncIterator[int]) -> None:
        async for signum in receiver:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                self.reopen_output()
            elif not self._shutdown_requested:
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

    def reopen_output(self) -> None:
        """What SIGHUP does: reopen the output file between two writes (logrotate)."""
        if self.outputs.request_reopen():
            self.message("SIGHUP: reopening the output file")
        else:
            self.message("SIGHUP: no output file to reopen (ignored)")

    # ------------------------------------------------------------------ status line

    def status_line(self, seconds: float, previous: tuple[int, int]) -> tuple[str, tuple[int, int]]:
        """The status text over the last *seconds*, and the counts to pass next time."""
        assert self.aggregator is not None
        server, inputs = self.collector.statistics(), self.inputs.statistics()
        agg = self.aggregator.statistics()
        lines, nbytes = server.lines + inputs.lines, agg.bytes_written
        seconds = max(seconds, 1e-9)
        errors = agg.writer_errors + agg.callback_errors + server.accept_errors
        blocked = sum(  # a reader waits for room in one output at a time
            out.aggregator.statistics().nb_waiting
            for out in self.outputs.all
            if out.aggregator is not None
        )
        text = (
            f"{server.connections_open:,} conns | {(lines - previous[0]) / seconds:,.0f} lines/s"
            f" | {(nbytes - previous[1]) / seconds / 1e6:,.1f} MB/s"
            f" | buffered {agg.nb_processing - agg.nb_held:,}/{agg.buffer_size:,}"
            f" (+{agg.nb_held:,} in the writer's batch)"
            f" | blocked {blocked:,} | errors {errors:,}"
            f" | lost {self.losses.snapshot().total_lines:,} lines"
        )
        text += input_status(server) + inputs.status() + forward_status(self.outputs)
        return text, (lines, nbytes)


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
