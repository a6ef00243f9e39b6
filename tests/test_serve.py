"""The line collector (issue 4), in-process: splitting, connections, the server, the demo.

Tests on memory streams use the mock clock; tests on real loopback sockets use the real
clock but never sleep: clients finish sending, `wait_all_tasks_blocked` lets the server
read what the kernel holds, then the server is shut down.
"""

from __future__ import annotations

import errno
import io
import itertools
import os
import re
import signal
import socket
from functools import partial
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trio_aggregator import FileSink, RotatingFileSink
from trio_aggregator._serve import _demo as demo_module
from trio_aggregator._serve._collector import LineCollector
from trio_aggregator._serve._demo import DemoOptions, demo_lines, run_demo, verify_demo_output
from trio_aggregator._serve._lines import LineSplitter
from trio_aggregator._serve._listeners import format_address, parse_tcp_address, unlink_if_same
from trio_aggregator._serve._losses import Losses
from trio_aggregator._serve._options import ServeOptions
from trio_aggregator._serve._outputs import FileOutput
from trio_aggregator._serve._server import LineServer, ServeError, run_server
from trio_aggregator._serve._statistics import format_table
from trio_aggregator._serve._status import fit_status

from .conftest import fail_first_file_write

if TYPE_CHECKING:
    from pathlib import Path

LOOPBACK = ("127.0.0.1", 0)


# ---------------------------------------------------------------------------- LineSplitter


def split_all(chunks: list[bytes], max_line_bytes: int) -> tuple[bytes, LineSplitter]:
    splitter = LineSplitter(max_line_bytes)
    out = b"".join(splitter.feed(chunk) for chunk in chunks) + splitter.finish()
    return out, splitter


def test_splitter_returns_only_complete_lines() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b"hel") == b""
    assert splitter.pending_bytes == 3
    assert splitter.feed(b"lo\nwor") == b"hello\n"
    assert splitter.feed(bytearray(b"ld\n\nx\n")) == b"world\n\nx\n"
    assert splitter.pending_bytes == 0
    assert splitter.finish() == b""
    assert splitter.partial_lines == 0


def test_splitter_keeps_the_final_partial_line() -> None:
    out, splitter = split_all([b"a\nb", b"c"], 100)
    assert out == b"a\nbc\n"
    assert splitter.partial_lines == 1


def test_splitter_truncates_an_over_long_line_and_discards_the_rest() -> None:
    out, splitter = split_all([b"0123456789", b"abcdef\nok\n"], 5)
    assert out == b"01234\nok\n"
    counters = splitter
    assert (counters.lines_truncated, counters.bytes_discarded) == (1, 11)


def test_splitter_limit_is_exclusive_of_the_newline() -> None:
    assert split_all([b"12345\n123456\n"], 5)[0] == b"12345\n12345\n"
    # A full-length line still waiting for its newline is not truncated...
    splitter = LineSplitter(5)
    assert splitter.feed(b"12345") == b""
    assert splitter.feed(b"\n") == b"12345\n"
    # ...but one more byte makes it over-long at once, before any newline arrives.
    assert splitter.feed(b"abcde") == b""
    assert splitter.feed(b"f") == b"abcde\n"
    assert splitter.pending_bytes == 0
    assert splitter.feed(b"ghi") == b""
    assert splitter.feed(b"jk\nnext\n") == b"next\n"
    assert splitter.finish() == b""
    assert splitter.bytes_discarded == 6


def test_splitter_line_started_earlier_ends_too_long() -> None:
    splitter = LineSplitter(5)
    assert splitter.feed(b"abcd") == b""
    assert splitter.feed(b"ef\nx\n") == b"abcde\nx\n"
    assert (splitter.lines_truncated, splitter.bytes_discarded) == (1, 1)


def test_splitter_memory_is_bounded_when_no_newline_ever_comes() -> None:
    splitter = LineSplitter(1000)
    out = b"".join(splitter.feed(b"x" * 4096) for _ in range(256))  # 1 MiB, no newline
    assert out == b"x" * 1000 + b"\n"
    assert splitter.pending_bytes == 0
    assert splitter.bytes_discarded == 1024 * 1024 - 1000
    assert splitter.finish() == b""


def test_splitter_checks_its_limit() -> None:
    with pytest.raises(ValueError, match="max_line_bytes must be >= 1, not 0"):
        LineSplitter(0)
    with pytest.raises(TypeError, match="max_line_bytes must be an int, not float"):
        LineSplitter(1.5)  # type: ignore[arg-type]


@given(
    lines=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b".")), max_size=20),
    final_newline=st.booleans(),
    max_line_bytes=st.integers(1, 25),
    cuts=st.lists(st.integers(0, 700), max_size=12),
)
def test_splitter_property(
    lines: list[bytes], final_newline: bool, max_line_bytes: int, cuts: list[int]
) -> None:
    """Whatever the chunking: each line once, in order, truncated, memory bounded."""
    stream = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    splitter = LineSplitter(max_line_bytes)
    out = b""
    for chunk in chunks:
        out += splitter.feed(chunk)
        assert splitter.pending_bytes <= max_line_bytes
    out += splitter.finish()
    kept = lines if final_newline or not lines or lines[-1] else lines[:-1]
    assert out == b"".join(line[:max_line_bytes] + b"\n" for line in kept)
    counters = splitter
    assert counters.lines_truncated == sum(len(line) > max_line_bytes for line in kept)
    assert counters.bytes_discarded == sum(max(0, len(line) - max_line_bytes) for line in kept)


# ---------------------------------------------------------------------------- options


def test_tcp_addresses() -> None:
    assert parse_tcp_address("127.0.0.1:5140") == ("127.0.0.1", 5140)
    assert parse_tcp_address("[::1]:0") == ("::1", 0)
    assert parse_tcp_address("localhost:65535") == ("localhost", 65535)
    assert format_address("::1", 80) == "[::1]:80"
    assert format_address("127.0.0.1", 80) == "127.0.0.1:80"
    for bad in ("5140", ":5140", "host:", "host:x", "host:65536", "::1:80"):
        with pytest.raises(ValueError):  # noqa: PT011 - the messages differ
            parse_tcp_address(bad)


# ---------------------------------------------------------------------------- LineCollector


class Written:
    """A `write` function recording what the collector hands over; it can be held shut."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.gate: trio.Event | None = None

    async def __call__(self, chunk: bytes) -> None:
        if self.gate is not None:
            await self.gate.wait()
        else:
            await trio.lowlevel.checkpoint()
        self.chunks.append(chunk)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


class FakeListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose connections are memory stream pairs, or errors to raise."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream | OSError](100)
        self.closed = False

    def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        self._send.send_nowait(server)
        return client

    def fail(self, error: OSError) -> None:
        self._send.send_nowait(error)

    async def accept(self) -> trio.abc.Stream:
        item = await self._receive.receive()
        if isinstance(item, OSError):
            raise item
        return item

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


class BreakingStream(trio.abc.ReceiveStream):
    """Gives some data, then fails as a reset connection does."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data
        self.closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        data, self._data = self._data, None
        if data is None:
            raise trio.BrokenResourceError("connection reset")
        return data

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


async def send_and_close(stream: trio.abc.Stream, *chunks: bytes) -> None:
    for chunk in chunks:
        await stream.send_all(chunk)
    await stream.aclose()


async def test_collector_handles_one_connection() -> None:
    written = Written()
    collector = LineCollector(written, max_line_bytes=8)
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.handle, server)
        await send_and_close(client, b"one\ntw", b"o\nthis is too long\n", b"last")
    assert written.data == b"one\ntwo\nthis is \nlast\n"
    stats = collector.statistics()
    assert (stats.lines, stats.lines_truncated, stats.bytes_discarded) == (4, 1, 8)
    assert (stats.partial_lines, stats.connections_total, stats.connections_open) == (1, 1, 0)
    assert stats.bytes_received == 29


async def test_collector_counts_the_splitters_of_open_and_closed_connections() -> None:
    written = Written()
    collector = LineCollector(written, max_line_bytes=4)
    first, first_server = trio.testing.memory_stream_pair()
    second, second_server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.handle, first_server)
        nursery.start_soon(collector.handle, second_server)
        await first.send_all(b"toolong\nok\n")
        await second.send_all(b"abcdefgh")
        await trio.testing.wait_all_tasks_blocked()
        stats = collector.statistics()  # both open: counted from their splitters
        assert (stats.connections_open, stats.lines_truncated, stats.bytes_discarded) == (2, 2, 7)
        await first.aclose()
        await trio.testing.wait_all_tasks_blocked()
        stats = collector.statistics()  # one closed: its counts are in the totals now
        assert (stats.connections_open, stats.lines_truncated, stats.bytes_discarded) == (1, 2, 7)
        await send_and_close(second, b"\nend")
    stats = collector.statistics()
    assert (stats.lines_truncated, stats.bytes_discarded, stats.partial_lines) == (2, 7, 1)
    assert (stats.connections_open, stats.lines) == (0, 4)


async def test_collector_counts_a_reset_and_keeps_what_came_before() -> None:
    written = Written()
    collector = LineCollector(written)
    stream = BreakingStream(b"whole\nhalf")
    await collector.handle(stream)
    assert written.data == b"whole\nhalf\n"
    assert collector.statistics().resets == 1
    assert stream.closed


async def test_collector_idle_timeout(autojump_clock: trio.testing.MockClock) -> None:
    written = Written()
    collector = LineCollector(written, idle_timeout=5.0)
    client, server = trio.testing.memory_stream_pair()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.handle, server)
        await client.send_all(b"hello\npartial")
        await trio.sleep(3)
        await client.send_all(b" line")
    # Closed 5 s after the last data, not after the first.
    assert trio.current_time() - start == pytest.approx(8.0)
    assert written.data == b"hello\npartial line [cut by trio-aggregator: idle timeout]\n"
    assert collector.statistics().idle_closed == 1
    assert collector.statistics().cut_records == 1
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"too late\n")


async def test_collector_stop_reads_a_silent_connection_until_its_client_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Silence at shutdown proves nothing: the last lines may come later (a TCP zero-window
    probe), then the client closes. They are written, not cut off unread and uncounted."""
    written = Written()
    listener = FakeListener()
    collector = LineCollector(written, shutdown_idle=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(collector.serve, [listener])
        quiet = listener.connect()
        await quiet.send_all(b"said something\n")
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        collector.stop(grace=10)
        assert collector.stopping
        await trio.sleep(3)
        await quiet.send_all(b"and later, the rest\n")
        await quiet.aclose()
    assert trio.current_time() - start == pytest.approx(3)
    assert listener.closed
    assert written.data == b"said something\nand later, the rest\n"
    assert collector.statistics().idle_closed == 0
    assert collector.losses.snapshot().total_lines == 0


async def test_collector_stop_closes_a_connection_still_open_when_the_grace_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    written = Written()
    listener = FakeListener()
    collector = LineCollector(written, shutdown_idle=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(collector.serve, [listener])
        quiet = listener.connect()
        await quiet.send_all(b"said something\nhalf")
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        collector.stop(grace=10)
    assert trio.current_time() - start == pytest.approx(10)
    assert written.data == b"said something\nhalf [cut by trio-aggregator: shutdown]\n"


async def test_collector_stop_lets_busy_clients_send_until_the_grace_period_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    written = Written()
    listener = FakeListener()
    collector = LineCollector(written, shutdown_idle=0.2)

    async def chatty(stream: trio.abc.Stream) -> None:
        n = 0
        try:
            while True:
                await stream.send_all(b"line %d\n" % n)
                n += 1
                await trio.sleep(0.1)
        except trio.BrokenResourceError:
            return  # the server closed the connection

    async with trio.open_nursery() as nursery:
        await nursery.start(collector.serve, [listener])
        nursery.start_soon(chatty, listener.connect())
        await trio.sleep(1.05)
        collector.stop(grace=1.0)
        start = trio.current_time()
        await collector_done(collector)
    assert trio.current_time() - start == pytest.approx(1.0, abs=0.11)
    lines = written.data.splitlines()
    assert lines == [b"line %d" % n for n in range(len(lines))]
    assert 19 <= len(lines) <= 22


async def collector_done(collector: LineCollector) -> None:
    while collector.statistics().connections_open:
        await trio.sleep(0.01)


async def test_collector_serves_many_connections_in_order() -> None:
    written = Written()
    listener = FakeListener()
    collector = LineCollector(written)
    async with trio.open_nursery() as nursery:
        await nursery.start(collector.serve, [listener])
        async with trio.open_nursery() as clients:
            for client in range(20):
                data = b"".join(b"c%d %d\n" % (client, n) for n in range(50))
                chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
                clients.start_soon(send_and_close, listener.connect(), *chunks)
        await trio.testing.wait_all_tasks_blocked()
        collector.stop()
    per_client: dict[bytes, list[int]] = {}
    for line in written.data.splitlines():
        name, n = line.split()
        per_client.setdefault(name, []).append(int(n))
    assert len(per_client) == 20
    assert all(numbers == list(range(50)) for numbers in per_client.values())
    assert collector.statistics().connections_peak > 1


async def test_collector_max_connections_makes_others_wait() -> None:
    written = Written()
    listener = FakeListener()
    collector = LineCollector(written, max_connections=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(collector.serve, [listener])
        first = listener.connect()
        second = listener.connect()
        await second.send_all(b"second\n")
        await trio.testing.wait_all_tasks_blocked()
        assert written.data == b""  # the second waits for the first's slot
        await send_and_close(first, b"first\n")
        await trio.testing.wait_all_tasks_blocked()
        assert written.data == b"first\nsecond\n"
        await second.aclose()
        collector.stop()
    assert collector.statistics().connections_peak == 1


async def test_collector_abort_drops_connections_waiting_for_a_slot_counts_stuck_writes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    written = Written()
    written.gate = trio.Event()  # never set: the write blocks
    listener = FakeListener()
    collector = LineCollector(written, max_connections=1, abort_grace=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(collector.serve, [listener])
        writing = listener.connect()
        await writing.send_all(b"stuck\n")
        waiting = listener.connect()
        await trio.testing.wait_all_tasks_blocked()
        collector.abort()
        await trio.sleep(4.9)
        assert collector.losses.snapshot().total_lines == 0  # still waiting for room
    assert trio.current_time() == pytest.approx(5)
    assert written.data == b""
    losses = collector.losses.snapshot()
    assert (losses.lines["forced_shutdown"], losses.bytes["forced_shutdown"]) == (1, 6)
    with pytest.raises(trio.BrokenResourceError):
        await waiting.send_all(b"closed?\n")
    collector.abort()  # not serving any more: nothing to cancel


async def test_collector_second_abort_cancels_a_stuck_write_and_counts_it() -> None:
    written = Written()
    written.gate = trio.Event()  # never set: the write blocks
    listener = FakeListener()
    collector = LineCollector(written)
    async with trio.open_nursery() as nursery:
        await nursery.start(collector.serve, [listener])
        await listener.connect().send_all(b"one\ntwo\n")
        await trio.testing.wait_all_tasks_blocked()
        collector.abort()
        await trio.testing.wait_all_tasks_blocked()
        collector.abort()
    losses = collector.losses.snapshot()
    assert (losses.lines["forced_shutdown"], losses.bytes["forced_shutdown"]) == (2, 8)


async def test_collector_retries_accept_after_running_out_of_descriptors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    written = Written()
    listener = FakeListener()
    collector = LineCollector(written)
    async with trio.open_nursery() as nursery:
        await nursery.start(collector.serve, [listener])
        listener.fail(OSError(errno.EMFILE, "Too many open files"))
        await send_and_close(listener.connect(), b"after the error\n")
        await trio.sleep(1)
        collector.stop()
    assert written.data == b"after the error\n"
    assert collector.statistics().accept_errors == 1


async def test_collector_stop_during_the_accept_retry_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = FakeListener()
    collector = LineCollector(Written())
    async with trio.open_nursery() as nursery:
        await nursery.start(collector.serve, [listener])
        listener.fail(OSError(errno.ENFILE, "Too many open files in system"))
        await trio.testing.wait_all_tasks_blocked()
        collector.stop()
    assert listener.closed


async def test_collector_other_accept_errors_propagate() -> None:
    listener = FakeListener()
    collector = LineCollector(Written())
    with pytest.RaisesGroup(pytest.RaisesExc(OSError, match="Bad file"), flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.serve, [listener])
            listener.fail(OSError(errno.EBADF, "Bad file descriptor"))
    assert listener.closed


async def test_collector_stopped_before_serving(autojump_clock: trio.testing.MockClock) -> None:
    listener = FakeListener()
    collector = LineCollector(Written())
    collector.stop()
    await collector.serve([listener])
    assert listener.closed


# ---------------------------------------------------------------------------- LineServer


def options(tmp_path: Path, **kwargs: object) -> ServeOptions:
    values: dict[str, object] = {
        "tcp": (LOOPBACK,),
        "output": str(tmp_path / "out.log"),
        "quiet": True,
        "shutdown_idle": 0.01,
    }
    values.update(kwargs)
    return ServeOptions(**values)  # type: ignore[arg-type]


async def send(address: tuple[str, int] | str, data: bytes, chunk: int = 1000) -> None:
    if isinstance(address, str):
        stream: trio.abc.Stream = await trio.open_unix_socket(address)
    else:
        stream = await trio.open_tcp_stream(*address)
    async with stream:
        for start in range(0, len(data), chunk):
            await stream.send_all(data[start : start + chunk])


async def finish(server: LineServer) -> int:
    """Let the server read what the kernel holds, shut it down, wait for its exit code."""
    await trio.testing.wait_all_tasks_blocked()
    server.shutdown()
    await server.wait_finished()
    assert server.exit_code is not None
    return server.exit_code


async def test_server_collects_from_tcp_and_unix_clients(tmp_path: Path) -> None:
    sock_path = str(tmp_path / "s.sock")
    stderr = io.StringIO()
    opts = options(tmp_path, unix=(sock_path,))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=stderr))
        assert server.addresses[-1] == f"unix:{sock_path}"
        address = server.tcp_addresses[0]
        async with trio.open_nursery() as clients:
            for client in range(12):
                data = b"".join(demo_lines(client, 300, seed=7))
                clients.start_soon(send, sock_path if client % 3 == 0 else address, data, 997)
        assert await finish(server) == 0
    verification = verify_demo_output(opts.output, 12, 300, seed=7)
    assert verification.ok, verification.problems
    assert not os.path.exists(sock_path)
    text = stderr.getvalue()
    assert f"listening on {format_address(*address)}" in text
    assert f"listening on unix:{sock_path}" in text
    assert "summary" in text
    summary = server.summary
    assert summary is not None
    assert summary.ok
    assert summary.server.lines == 3600
    assert summary.server.connections_total == 12
    assert server.aggregator is not None


async def test_server_shutdown_before_it_started(tmp_path: Path) -> None:
    server = LineServer(options(tmp_path, announce=False))
    server.shutdown()
    assert await server.run() == 0
    assert os.path.exists(tmp_path / "out.log")


async def test_server_output_cannot_be_opened(tmp_path: Path) -> None:
    with pytest.raises(ServeError, match=r"cannot open output .* for appending: Is a directory"):
        await run_server(options(tmp_path, output=str(tmp_path)))
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ServeError, match="Not a directory"):
        await run_server(options(tmp_path, output=str(tmp_path / "file" / "x.log")))


async def test_server_tcp_address_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"cannot listen on 127.0.0.1:{port}"):
            await run_server(options(tmp_path, tcp=(("127.0.0.1", port),)))


async def test_server_unix_socket_paths(tmp_path: Path) -> None:
    path = str(tmp_path / "u.sock")
    # A socket file left by a server that died: replaced.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    # A regular file: not touched.
    regular = tmp_path / "regular"
    regular.write_bytes(b"keep me")
    with pytest.raises(ServeError, match="cannot listen on unix:"):
        await run_server(options(tmp_path, tcp=(), unix=(str(regular),)))
    assert regular.read_bytes() == b"keep me"
    async with trio.open_nursery() as nursery:
        server = await nursery.start(run_server, options(tmp_path, tcp=(), unix=(path,)))
        # A live socket: another server cannot take it.
        with pytest.raises(ServeError, match="cannot listen on unix:"):
            await run_server(options(tmp_path, tcp=(), unix=(path,), output=str(tmp_path / "2")))
        await send(path, b"through unix\n")
        assert await finish(server) == 0
    assert (tmp_path / "out.log").read_bytes() == b"through unix\n"
    assert not os.path.exists(path)


def test_unlink_if_same_ignores_a_vanished_file(tmp_path: Path) -> None:
    path = tmp_path / "gone.sock"
    unlink_if_same(str(path), 1)
    path.write_bytes(b"")
    unlink_if_same(str(path), os.stat(path).st_ino + 1)
    assert path.exists()


async def test_server_leaves_a_replaced_socket_file_alone(tmp_path: Path) -> None:
    path = str(tmp_path / "r.sock")
    async with trio.open_nursery() as nursery:
        server = await nursery.start(run_server, options(tmp_path, tcp=(), unix=(path,)))
        os.unlink(path)
        with socket.socket(socket.AF_UNIX) as other:
            other.bind(path)
            assert await finish(server) == 0
            assert os.path.exists(path)


async def test_server_writes_to_stdout(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(run_server, options(tmp_path, output="-"))
        await send(server.tcp_addresses[0], b"to stdout\nand more\n")
        assert await finish(server) == 0
    assert capfd.readouterr().out == "to stdout\nand more\n"
    assert server.summary is not None
    assert server.summary.output == "<stdout>"


async def test_server_rotates(tmp_path: Path) -> None:
    opts = options(tmp_path, rotate_bytes=100, backups=3, fsync_interval=0.01)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(run_server, opts)
        await send(server.tcp_addresses[0], b"x" * 150 + b"\n")
        while server.summary is None and not os.path.exists(f"{opts.output}.1"):
            await trio.sleep(0.001)
        await send(server.tcp_addresses[0], b"after rotation\n")
        assert await finish(server) == 0
    assert server.summary is not None
    assert server.summary.rotations == 1
    assert "(1 rotations)" in format_table(server.summary.rows())
    assert (tmp_path / "out.log.1").read_bytes() == b"x" * 150 + b"\n"
    assert (tmp_path / "out.log").read_bytes() == b"after rotation\n"


@pytest.mark.parametrize(
    ("kwargs", "callback", "interval"),
    [
        ({}, "sync", 1.0),
        ({"fsync_interval": 0}, None, 0.0),
        ({"output": "-", "fsync_interval": 2.0}, None, 0.0),
        ({"rotate_bytes": 10, "fsync_interval": 0.5}, "sync", 0.5),
        ({"rotate_bytes": 10, "fsync_interval": 0}, "rotate_if_needed", 1.0),
    ],
)
async def test_server_periodic_callback(
    tmp_path: Path, kwargs: dict[str, object], callback: str | None, interval: float
) -> None:
    opts = options(tmp_path, **kwargs)
    output = FileOutput(opts, Losses())
    try:
        config = output.config(opts)
    finally:
        output.close_file()
    assert isinstance(output.sink, RotatingFileSink) == ("rotate_bytes" in kwargs)
    name = getattr(config.sync_fn, "__name__", None)
    assert (name, config.sync_interval) == (callback, interval)


class TtyIO(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [False, True])
async def test_server_status_line(
    tmp_path: Path, tty: bool, autojump_clock: trio.testing.MockClock
) -> None:
    stderr = TtyIO() if tty else io.StringIO()
    opts = options(tmp_path, quiet=False, fsync_interval=0)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=stderr))
        await trio.sleep(3.5 if tty else 25)  # every 1 s on a terminal, 10 s otherwise
        server.shutdown()
    text = stderr.getvalue()
    status = (
        "0 conns | 0 lines/s | 0.0 MB/s | buffered 0/256 (+0 in the writer's batch)"
        " | blocked 0 | errors 0 | lost 0 lines"
        " | truncated 0 (0 bytes discarded) | framing errors 0 | binary 0"
    )
    if tty:
        assert text.count(f"\r\x1b[K{status}") == 3
        assert "\r\x1b[Ktrio-aggregator: summary" in text
    else:
        assert text.count(f"{status}\n") == 2


async def test_server_status_line_counts(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(run_server, options(tmp_path))
        await send(server.tcp_addresses[0], b"a\nb\n")
        await trio.testing.wait_all_tasks_blocked()
        text, counts = server.status_line(2.0, (0, 0))
        assert counts[0] == 2
        assert "1 lines/s" in text
        assert await finish(server) == 0


async def test_server_stops_on_signals(tmp_path: Path) -> None:
    stderr = io.StringIO()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(run_server, options(tmp_path), stderr=stderr, handle_signals=True)
        )
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        await server.wait_finished()
    assert server.exit_code == 0
    text = stderr.getvalue()
    assert "SIGTERM: stopping" in text
    assert "SIGINT again: closing every connection now" in text


async def test_server_reports_lost_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(self: FileSink, data: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FileSink, "write_blocking", disk_full)
    stderr = io.StringIO()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, options(tmp_path), stderr=stderr))
        await send(server.tcp_addresses[0], b"lost\n")
        assert await finish(server) == 1
    assert server.summary is not None
    assert not server.summary.ok
    assert server.summary.aggregator.dropped_writer_error == 1
    assert "  errors           1" in stderr.getvalue()


async def test_server_reports_a_failed_final_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: FileSink) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(FileSink, "fsync_blocking", broken)
    stderr = io.StringIO()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(run_server, options(tmp_path, fsync_interval=0), stderr=stderr)
        )
        assert await finish(server) == 1
    assert "final fsync of" in stderr.getvalue()
    assert server.summary is not None
    assert server.summary.final_errors


# ---------------------------------------------------------------------------- demo


async def test_demo_passes(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    rc = await run_demo(DemoOptions(clients=8, lines=150, quiet=True), stdout=out, stderr=err)
    text = out.getvalue()
    assert rc == 0, text + err.getvalue()
    assert "verification: PASSED - all 1,200 lines present exactly once" in text
    assert "(removed)" in text
    assert re.search(
        r"peak buffered +[\d,]+ writes incl. the writer's batch \(buffer size 256\)", text
    )


async def test_demo_keeps_a_given_output_and_refuses_a_used_one(tmp_path: Path) -> None:
    path = tmp_path / "demo.log"
    out = io.StringIO()
    assert await run_demo(DemoOptions(clients=2, lines=10, output=str(path)), stdout=out) == 0
    assert "(kept)" in out.getvalue()
    assert len(path.read_bytes().splitlines()) == 20
    err = io.StringIO()
    assert await run_demo(DemoOptions(output=str(path)), stdout=out, stderr=err) == 1
    assert "exists and is not empty" in err.getvalue()


async def test_demo_fails_when_verification_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = verify_demo_output

    def strict(path: str, clients: int, lines: int, seed: int) -> object:
        return attrs.evolve(real(path, clients, lines, seed), good=0, problems=("bad line",))

    monkeypatch.setattr(demo_module, "verify_demo_output", strict)
    out = io.StringIO()
    assert await run_demo(DemoOptions(clients=2, lines=10, quiet=True), stdout=out) == 1
    assert "verification: FAILED\n  - bad line" in out.getvalue()


async def test_demo_fails_when_the_server_loses_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_first_file_write(monkeypatch)
    out = io.StringIO()
    options = DemoOptions(clients=3, lines=50, keep=True, quiet=True)
    assert await run_demo(options, stdout=out, stderr=io.StringIO()) == 1
    text = out.getvalue()
    assert "missing" in text
    assert "the server lost data" in text


def test_verification_finds_every_kind_of_problem(tmp_path: Path) -> None:
    lines = [list(demo_lines(client, 5, seed=1)) for client in range(2)]
    bad = [
        lines[0][0],
        lines[1][0],
        lines[0][2],  # out of order: line 1 skipped
        lines[0][1],  # duplicate (already passed)
        lines[1][1][:10] + lines[0][3],  # garbled: two lines interleaved
        b"nonsense\n",
        lines[1][2],
        lines[1][3],
        lines[1][4],
    ]
    path = tmp_path / "bad.log"
    path.write_bytes(b"".join(bad))
    result = verify_demo_output(str(path), 2, 5, seed=1)
    assert not result.ok
    assert (result.found, result.good, result.duplicated) == (9, 4, 1)
    assert (result.out_of_order, result.garbled, result.expected) == (2, 2, 10)
    # Skipped: 0/1 and 1/1 (garbled); never came: 0/3 (garbled) and 0/4.
    assert result.missing == 4
    assert result.problems[-1] == "4 line(s) missing"
    many = tmp_path / "many.log"
    many.write_bytes(b"garbage\n" * 25)
    result = verify_demo_output(str(many), 2, 5, seed=1)
    assert result.garbled == 25
    assert len(result.problems) == 10  # the first few only
    good = tmp_path / "good.log"
    good.write_bytes(b"".join(lines[0] + lines[1]))
    assert verify_demo_output(str(good), 2, 5, seed=1).ok


async def test_the_status_line_fits_the_terminal(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrapped line cannot be redrawn in place: the parts with nothing to say go first."""
    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((80, 24)))
    monkeypatch.setattr(TtyIO, "fileno", lambda self: 2, raising=False)
    stderr = TtyIO()
    opts = options(tmp_path, quiet=False, forward=(("127.0.0.1", 9),), forward_resend=0.0)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=stderr))
        await trio.sleep(1.5)
        server.shutdown()
    shown = stderr.getvalue().split("\r\x1b[K")[1]
    assert shown.startswith("0 conns | 0 lines/s | 0.0 MB/s | buffered 0/256 (+0 in the")
    assert "errors 0" not in shown
    assert len(shown) < 80


def test_fit_status() -> None:
    text = "1 conns | 5 lines/s | 0.1 MB/s | errors 0 | lost 3 lines | binary 0"
    assert fit_status(text, None) == text
    assert fit_status(text, 200) == text
    assert fit_status(text, 60) == "1 conns | 5 lines/s | 0.1 MB/s | lost 3 lines"
    assert fit_status(text, 30) == "1 conns | 5 lines/s | 0.1 ..."
