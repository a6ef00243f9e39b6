"""Where ``serve`` writes: the output file (`FileOutput`), forward targets (`ForwardOutput`).

Each output has its own aggregator, and so its own buffer and ``when_full`` policy;
`Outputs.write` hands every chunk of lines to each of them in turn. A forward target
that is down fills only its own buffer: with ``block`` (the default) a full buffer then
holds the readers back, and so the other outputs too (nothing is lost); with
``drop_newest`` the chunks it has no room for are dropped for that output only, and
counted lost (``when_full``), while the file keeps being written.

SIGHUP (`Outputs.request_reopen`) makes the file output reopen its path, the logrotate
convention: the file was renamed, so the next lines go to a new file of the old name.
The reopening is done between two writer calls (before the next write, or at the next
fsync or rotation check), so a line is never split between the two files.
"""

from __future__ import annotations

import logging
import os
import ssl
import stat
from typing import TYPE_CHECKING, Literal

import attrs
import trio

from trio_aggregator import (
    Aggregator,
    AggregatorConfig,
    FileSink,
    RotatingFileSink,
    TcpForwardSink,
    connect_aggregator,
)

from ._listeners import format_address
from ._losses import OutputAccount
from ._options import ROTATE_CHECK_INTERVAL

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from trio_aggregator import AggregatorStatistics, TcpForwardStatistics

    from ._losses import Losses
    from ._options import ServeOptions

__all__ = ["FileOutput", "ForwardOutput", "Output", "OutputReport", "Outputs", "OutputError"]

logger = logging.getLogger("trio_aggregator.serve")

OUTPUT_MODE = 0o640
"""Permissions of an output file the server creates (minus the umask)."""

_OUTPUT_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | os.O_NOFOLLOW


class OutputError(Exception):
    """An output cannot be opened (the server reports it as a `ServeError`)."""


def exists_not_regular(path: str) -> bool:
    """Whether *path* is something other than a regular file (a device, a FIFO...)."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


@attrs.frozen(kw_only=True)
class OutputReport:
    """What one output did, for the summary."""

    kind: Literal["file", "forward"]
    name: str
    """The file's path (``<stdout>``), or the forward target as ``HOST:PORT``."""
    lines_written: int
    """Lines the output took (for a forward target: sent, a re-sent line counted once)."""
    lines_lost: int
    """Lines this output lost (writer errors, ``when_full`` drops, drain timeout)."""
    aggregator: AggregatorStatistics
    forward: TcpForwardStatistics | None = None
    """The forward sink's counters (reconnects, re-sent records...); None for a file."""
    rotations: int = 0
    reopenings: int = 0
    """Times the file was reopened on SIGHUP."""

    @property
    def ok(self) -> bool:
        """Whether this output lost nothing and met no error."""
        agg = self.aggregator
        return not (self.lines_lost or agg.writer_errors or agg.callback_errors or agg.dropped)

    def describe(self) -> str:
        """One line: lines written and lost, and for a forward target its reconnects."""
        text = f"{self.lines_written:,} lines written, {self.lines_lost:,} lost"
        if self.forward is not None:
            fwd = self.forward
            text += (
                f", {fwd.records_resent:,} re-sent, {fwd.reconnects:,} reconnects"
                f" ({fwd.connect_failures:,} failed connects, {fwd.failed_sends:,} failed sends)"
            )
        if self.rotations:
            text += f", {self.rotations} rotations"
        if self.reopenings:
            text += f", reopened {self.reopenings} times (SIGHUP)"
        return text


class Output:
    """One output: its writer, its aggregator, its account of lines written and lost."""

    kind: Literal["file", "forward"] = "file"
    when_full: Literal["block", "drop_newest"] = "block"

    def __init__(self, name: str, losses: Losses) -> None:
        self.name = name
        self.account = OutputAccount(losses)
        self.aggregator: Aggregator | None = None

    def config(self, options: ServeOptions) -> AggregatorConfig:
        """The settings of this output's aggregator."""
        raise NotImplementedError

    async def close(self) -> tuple[str, ...]:
        """Close the output once its aggregator is closed; the problems met, as messages."""
        raise NotImplementedError

    def report(self) -> OutputReport:
        """What the output did (once its aggregator has run)."""
        assert self.aggregator is not None
        return OutputReport(
            kind=self.kind,
            name=self.name,
            lines_written=self.account.lines_written,
            lines_lost=self.account.lines_lost,
            aggregator=self.aggregator.statistics(),
        )


class FileOutput(Output):
    """The output file (or standard output), fsynced, rotated, reopened on SIGHUP."""

    def __init__(self, options: ServeOptions, losses: Losses) -> None:
        path = options.output or "-"
        super().__init__("<stdout>" if path == "-" else path, losses)
        self._options = options
        self._path = path
        self.fsync = path != "-"
        """Whether the output is fsynced (a regular file; not /dev/null, a FIFO...)."""
        self._owned_fd: int | None = None
        self._reopen_pending = False
        self.reopenings = 0
        self._rotations_before = 0  # those of the sinks replaced by a reopening
        self.sink = self._open()

    def _open(self) -> FileSink:
        """Open the output; a symbolic link is not followed (rotation: refused at start)."""
        opts, path = self._options, self._path
        if path == "-":
            return FileSink.from_fd(1, "<stdout>")
        if os.path.islink(path):
            raise OutputError(f"output {path!r} is a symbolic link: give the real path")
        try:
            if opts.rotate_bytes is not None:
                if exists_not_regular(path):
                    raise OutputError(f"cannot rotate {path!r}: not a regular file")
                return RotatingFileSink(path, opts.rotate_bytes, opts.backups)
            fd = os.open(path, _OUTPUT_FLAGS, OUTPUT_MODE)
            self._owned_fd = fd
            sink = FileSink.from_fd(fd, path)
        except OSError as exc:
            raise OutputError(
                f"cannot open output {path!r} for appending: {exc.strerror or exc}"
            ) from None
        # /dev/null, a FIFO, a terminal: fsync fails there (EINVAL), so it is skipped.
        self.fsync = not exists_not_regular(path)
        return sink

    @property
    def rotations(self) -> int:
        """Rotations done, across reopenings."""
        sink = self.sink
        current = sink.rotations if isinstance(sink, RotatingFileSink) else 0
        return self._rotations_before + current

    def request_reopen(self) -> bool:
        """Reopen the file between the next two writer calls; False for standard output."""
        if self._path == "-":
            return False
        self._reopen_pending = True
        return True

    def close_file(self) -> None:
        """Close the file (and its descriptor, which the server opened)."""
        self.sink.close()
        fd, self._owned_fd = self._owned_fd, None
        if fd is not None:
            os.close(fd)

    async def _reopen_if_asked(self) -> None:
        if not self._reopen_pending:
            return
        self._reopen_pending = False
        old, old_fd, old_fsync = self.sink, self._owned_fd, self.fsync
        self._owned_fd = None
        try:
            new = self._open()
        except OutputError as exc:
            logger.warning("SIGHUP: %s; still writing to the file open before", exc)
            self._owned_fd, self.fsync = old_fd, old_fsync
            return
        if old_fsync:
            try:
                await old.fsync()
            except OSError as exc:
                logger.warning("fsync of the file replaced on SIGHUP failed: %s", exc)
        if isinstance(old, RotatingFileSink):
            self._rotations_before += old.rotations
        old.close()
        if old_fd is not None:
            os.close(old_fd)
        self.sink = new
        self.reopenings += 1

    async def write(self, data: bytes) -> None:
        """The writer: reopen first if SIGHUP asked for it, then write *data*."""
        await self._reopen_if_asked()
        await self.sink.write(data)

    async def sync(self) -> None:
        """The periodic callback: reopen if asked, then fsync (and rotate if it is time)."""
        await self._reopen_if_asked()
        await self.sink.sync()

    async def rotate_if_needed(self) -> None:
        """The periodic callback without fsync: reopen if asked, then the rotation check."""
        await self._reopen_if_asked()
        sink = self.sink
        if isinstance(sink, RotatingFileSink):
            await sink.rotate_if_needed()

    def config(self, options: ServeOptions) -> AggregatorConfig:
        sync_fn: Callable[[], Awaitable[object]] | None = None
        interval = options.fsync_interval
        if isinstance(self.sink, RotatingFileSink):
            if interval > 0:
                sync_fn = self.sync
            else:
                sync_fn, interval = self.rotate_if_needed, ROTATE_CHECK_INTERVAL
        elif self.fsync and interval > 0:
            sync_fn = self.sync
        return options.aggregator_config(
            self.account.writer(self.write),
            sync_fn,
            interval if sync_fn is not None else 0.0,
            on_writer_error=self.account.lost_to_writer,
        )

    async def close(self) -> tuple[str, ...]:
        errors: list[str] = []
        if self.fsync:
            try:
                await self.sink.fsync()
            except OSError as exc:
                errors.append(f"final fsync of {self.sink.path!r} failed: {exc.strerror or exc}")
        self.close_file()
        await trio.lowlevel.checkpoint()
        return tuple(errors)

    def report(self) -> OutputReport:
        return attrs.evolve(super().report(), rotations=self.rotations, reopenings=self.reopenings)


def forward_ssl_context(options: ServeOptions) -> ssl.SSLContext | None:
    """The TLS context of the forward targets (None: plain TCP).

    Raises:
        OutputError: The CA file cannot be read.
    """
    if not options.forward_tls:
        return None
    try:
        return ssl.create_default_context(cafile=options.forward_ca)
    except (OSError, ssl.SSLError) as exc:
        raise OutputError(f"cannot load --forward-ca {options.forward_ca!r}: {exc}") from None


class ForwardOutput(Output):
    """A forward target: a `TcpForwardSink` behind the output's own aggregator."""

    kind = "forward"

    def __init__(
        self,
        address: tuple[str, int],
        options: ServeOptions,
        losses: Losses,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(format_address(*address), losses)
        self.when_full = options.forward_when_full
        self.sink = TcpForwardSink(
            address[0],
            address[1],
            framing=options.forward_framing,
            ssl_context=ssl_context,
            resend_seconds=options.forward_resend,
        )

    def config(self, options: ServeOptions) -> AggregatorConfig:
        return attrs.evolve(
            options.aggregator_config(
                self.account.writer(self.sink.write), on_writer_error=self.account.lost_to_writer
            ),
            when_full=self.when_full,
        )

    async def close(self) -> tuple[str, ...]:
        await self.sink.aclose()
        return ()

    def report(self) -> OutputReport:
        return attrs.evolve(super().report(), forward=self.sink.statistics())


class Outputs:
    """Every output of the server; `write` hands a chunk to each one's aggregator."""

    def __init__(self, options: ServeOptions, losses: Losses) -> None:
        self._options = options
        self._losses = losses
        self.file: FileOutput | None = None
        self.all: list[Output] = []

    def open(self) -> None:
        """Open the file output and make the forward sinks (they connect lazily).

        Raises:
            OutputError: The file or the CA file cannot be opened.
        """
        opts = self._options
        ssl_context = forward_ssl_context(opts)
        if opts.output is not None:
            self.file = FileOutput(opts, self._losses)
            self.all.append(self.file)
        for address in opts.forward:
            self.all.append(ForwardOutput(address, opts, self._losses, ssl_context))

    @property
    def forwards(self) -> list[ForwardOutput]:
        """The forward outputs."""
        return [out for out in self.all if isinstance(out, ForwardOutput)]

    @property
    def primary(self) -> Output:
        """The output the status line and the summary's main figures describe."""
        return self.all[0]

    async def start(self, nursery: trio.Nursery) -> None:
        """Start one aggregator per output in *nursery*."""
        for out in self.all:
            out.aggregator = await connect_aggregator(nursery, out.config(self._options))

    async def write(self, chunk: bytes) -> None:
        """Hand *chunk* to every output's aggregator, in turn (see the module docs).

        A write cut (a forced shutdown) leaves *chunk* missed by this output and those
        after it: each counts it lost (the input counts the loss once, in the totals).
        """
        for index, out in enumerate(self.all):
            assert out.aggregator is not None
            try:
                accepted = await out.aggregator.write(chunk)
            except BaseException:
                for missed in self.all[index:]:
                    missed.account.missed(chunk)
                raise
            if not accepted:
                out.account.lost_to_when_full(chunk)

    async def close_aggregators(self) -> None:
        """Close (drain) every aggregator, all at once."""
        async with trio.open_nursery() as nursery:
            for out in self.all:
                if out.aggregator is not None:
                    nursery.start_soon(out.aggregator.aclose)

    def count_drain_losses(self, lines: int, nbytes: int) -> None:
        """Count, per output, what reached it and it neither wrote nor lost otherwise.

        What reached the outputs: what the inputs handed over (*lines*, *nbytes*), and
        the chunks a forced shutdown cut on the way (counted ``forced_shutdown``).
        """
        cut = self._losses.snapshot()
        lines += cut.lines["forced_shutdown"]
        nbytes += cut.bytes["forced_shutdown"]
        for out in self.all:
            out.account.count_drain_losses(lines, nbytes)

    async def close(self) -> tuple[str, ...]:
        """Close every output; the problems met, as messages."""
        errors: list[str] = []
        for out in self.all:
            errors.extend(await out.close())
        return tuple(errors)

    def close_now(self) -> None:
        """Close the file at once (the server failed to start)."""
        if self.file is not None:
            self.file.close_file()

    def request_reopen(self) -> bool:
        """SIGHUP: reopen the output file; False if there is none (standard output)."""
        return self.file is not None and self.file.request_reopen()

    def reports(self) -> tuple[OutputReport, ...]:
        """What each output did."""
        return tuple(out.report() for out in self.all)


def forward_status(outputs: Outputs) -> str:
    """The status line's part about the forward targets: state, buffer, re-sent."""
    parts: list[str] = []
    for out in outputs.forwards:
        if out.aggregator is None:
            continue
        agg, fwd = out.aggregator.statistics(), out.sink.statistics()
        state = "up" if fwd.connected else "DOWN"
        parts.append(
            f" | -> {out.name} {state}, buffered {agg.nb_processing:,}/{agg.buffer_size:,},"
            f" re-sent {fwd.records_resent:,}, lost {out.account.lines_lost:,}"
        )
    return "".join(parts)
