"""Issue 11, the server's side: nothing read is lost silently.

Every loss is counted in lines and bytes, by reason, and shown in the status line, the
summary, the metrics and the exit status. Loopback sockets, real clock, no sleeps: the
tests wait for explicit conditions.
"""

from __future__ import annotations

import errno
import fcntl
import io
import logging
import os
import socket
import stat
import sys
import termios
import threading
import urllib.request
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from trio_aggregator import FileSink
from trio_aggregator._serve._cli import build_parser, main
from trio_aggregator._serve._collector import ACCEPT_LOG_INTERVAL, CutRecords, LineCollector
from trio_aggregator._serve._server import ServeError, run_server

from .test_serve import FakeListener, Written, finish, options, send

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")


@needs_dev_full
async def test_summary_counts_lost_lines_not_chunks(tmp_path: Path) -> None:
    """Item 5: 10,000 lines into /dev/full are 10,000 lines lost, not "dropped 286"."""
    data = b"".join(b"line %05d\n" % n for n in range(10_000))
    stderr = io.StringIO()
    opts = options(tmp_path, output="/dev/full", fsync_interval=0)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=stderr))
        await send(server.tcp_addresses[0], data, chunk=350)
        assert await finish(server) == 1
    summary = server.summary
    assert summary is not None
    assert summary.losses.lines["writer_error"] == 10_000
    assert summary.losses.bytes["writer_error"] == len(data)
    assert summary.losses.total_lines == 10_000
    text = stderr.getvalue()
    assert f"lost lines       10,000 ({len(data):,} bytes; writer error 10,000)" in text
    assert "dropped writes" in text  # the aggregator's count, named for what it counts


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll *condition* (cheap) until true; fail after *timeout* seconds."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.005)


@needs_dev_full
async def test_metrics_count_lost_lines_by_reason(tmp_path: Path) -> None:
    """Item 5: ``--metrics`` shows the losses in lines and bytes, by reason."""
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    data = b"".join(b"metric line %04d\n" % n for n in range(1000))
    opts = options(tmp_path, output="/dev/full", fsync_interval=0, metrics=("127.0.0.1", 0))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        await send(server.tcp_addresses[0], data, chunk=500)
        await wait_for(lambda: server.losses.snapshot().total_lines == 1000)
        assert server.metrics_address is not None
        url = f"http://127.0.0.1:{server.metrics_address[1]}/metrics"
        text = await trio.to_thread.run_sync(http_get, url)
        assert await finish(server) == 1
    samples = {
        (sample.name, sample.labels.get("reason")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if family.name.startswith("trio_aggregator_serve_lost_")
    }
    assert samples[("trio_aggregator_serve_lost_lines_total", "writer_error")] == 1000
    assert samples[("trio_aggregator_serve_lost_bytes_total", "writer_error")] == len(data)
    assert samples[("trio_aggregator_serve_lost_lines_total", "forced_shutdown")] == 0


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


# ---------------------------------------------------------------------------- item 3


async def test_collector_abort_still_hands_over_what_was_read() -> None:
    """Item 3: a forced stop closes the connections, but chunks read are still written."""
    written = Written()
    written.gate = trio.Event()  # the aggregator has no room yet
    listener = FakeListener()
    collector = LineCollector(written)
    async with trio.open_nursery() as nursery:
        await nursery.start(collector.serve, [listener])
        clients = [listener.connect() for _ in range(5)]
        for n, client in enumerate(clients):
            await client.send_all(b"read %d\n" % n)
        await trio.testing.wait_all_tasks_blocked()  # every reader waits for room
        collector.abort()
        await trio.testing.wait_all_tasks_blocked()
        written.gate.set()
    assert sorted(written.chunks) == [b"read %d\n" % n for n in range(5)]
    assert collector.losses.snapshot().total_lines == 0
    assert collector.statistics().lines == 5


def hold_file_writes(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make every `FileSink` write wait (at most 30 s) until the returned event is set."""
    gate = threading.Event()
    real = FileSink.write_blocking

    def held(self: FileSink, data: bytes) -> None:
        gate.wait(30)
        real(self, data)

    monkeypatch.setattr(FileSink, "write_blocking", held)
    return gate


async def test_forced_shutdown_writes_what_was_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 3: a second signal loses no line already read, and the exit code says so."""
    gate = hold_file_writes(monkeypatch)
    stderr = io.StringIO()
    opts = options(tmp_path, buffer=1, fsync_interval=0)
    data = [b"".join(b"client %d line %d\n" % (c, n) for n in range(50)) for c in range(8)]
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=stderr))
        async with trio.open_nursery() as clients:
            for chunk in data:
                clients.start_soon(send, server.tcp_addresses[0], chunk, len(chunk))
        aggregator = server.aggregator
        assert aggregator is not None
        # Every line is read: one write at the (stuck) writer, one buffered, the rest
        # of the readers waiting for room.
        await wait_for(lambda: server.collector.statistics().bytes_received == len(b"".join(data)))
        await wait_for(lambda: aggregator.statistics().nb_waiting == 6)
        server.shutdown()
        server.shutdown(force=True)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
        await server.wait_finished()
    assert server.exit_code == 0, stderr.getvalue()
    assert sorted((tmp_path / "out.log").read_bytes().splitlines(keepends=True)) == sorted(
        b"".join(data).splitlines(keepends=True)
    )


async def test_forcing_again_gives_up_what_waits_counts_it_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 3: lines given up at a forced stop are counted, in lines, and exit 1."""
    gate = hold_file_writes(monkeypatch)
    stderr = io.StringIO()
    opts = options(tmp_path, buffer=1, fsync_interval=0, drain_timeout=0)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=stderr))
        for n in range(4):
            await send(server.tcp_addresses[0], b"client %d\n" % n)
        aggregator = server.aggregator
        assert aggregator is not None
        await wait_for(lambda: aggregator.statistics().nb_waiting == 2)
        server.shutdown(force=True)
        server.shutdown(force=True)  # the second forced stop: give up the waiting writes
        await wait_for(lambda: server.losses.snapshot().lines["forced_shutdown"] == 2)
        gate.set()
        await server.wait_finished()
    assert server.exit_code == 1
    assert server.summary is not None
    losses = server.summary.losses
    assert losses.lines["forced_shutdown"] == 2
    assert losses.bytes["forced_shutdown"] == 18
    written = (tmp_path / "out.log").read_bytes().count(b"\n")
    assert written + losses.total_lines == 4  # every line read: written or counted lost
    assert losses.lines["drain_timeout"] == 1  # the buffered one: drain_timeout=0
    assert "lost lines       3 (27 bytes; drain timeout 1, forced shutdown 2)" in stderr.getvalue()


# ---------------------------------------------------------------------------- item 4


@pytest.mark.parametrize("policy", ["mark", "drop"])
async def test_a_record_cut_at_the_idle_timeout_is_marked_or_dropped_never_whole(
    policy: CutRecords, autojump_clock: trio.testing.MockClock
) -> None:
    """Item 4: the server's cut is not written as if the record were whole."""
    written = Written()
    collector = LineCollector(written, idle_timeout=5.0, cut_records=policy)
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.handle, server)
        await client.send_all(b"whole\n2024-01-01 ERROR payment id=12")
    assert b"2024-01-01 ERROR payment id=12\n" not in written.data
    losses = collector.losses.snapshot()
    if policy == "mark":
        assert written.data == (
            b"whole\n2024-01-01 ERROR payment id=12 [cut by trio-aggregator: idle timeout]\n"
        )
        assert losses.total_lines == 0
    else:
        assert written.data == b"whole\n"
        assert (losses.lines["cut"], losses.bytes["cut"]) == (1, 30)
    assert collector.statistics().cut_records == 1


async def test_a_record_cut_at_shutdown_is_marked_and_the_summary_says_so(tmp_path: Path) -> None:
    stderr = io.StringIO()
    async with trio.open_nursery() as nursery:
        # The client stays connected: it is cut when the shutdown timeout runs out.
        opts = options(tmp_path, shutdown_timeout=0.2)
        server = await nursery.start(partial(run_server, opts, stderr=stderr))
        stream = await trio.open_tcp_stream(*server.tcp_addresses[0])
        async with stream:
            await stream.send_all(b"ok\nhalf a rec")
            await wait_for(lambda: server.collector.statistics().bytes_received == 13)
            assert await finish(server) == 0
    assert (tmp_path / "out.log").read_bytes() == (
        b"ok\nhalf a rec [cut by trio-aggregator: shutdown]\n"
    )
    assert "cut records      1 (cut by the server: marked)" in stderr.getvalue()


async def test_dropped_cut_records_are_lost_lines_and_exit_1(tmp_path: Path) -> None:
    stderr = io.StringIO()
    opts = options(tmp_path, cut_records="drop", shutdown_timeout=0.2)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=stderr))
        stream = await trio.open_tcp_stream(*server.tcp_addresses[0])
        async with stream:
            await stream.send_all(b"ok\nhalf a rec")
            await wait_for(lambda: server.collector.statistics().bytes_received == 13)
            assert await finish(server) == 1
    assert (tmp_path / "out.log").read_bytes() == b"ok\n"
    assert "lost lines       1 (10 bytes; cut 1)" in stderr.getvalue()


def unsent_bytes(sock: socket.socket) -> int:
    """Bytes in *sock*'s send queue not yet acknowledged by the peer (Linux)."""
    buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    return int.from_bytes(buf, sys.byteorder)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TIOCOUTQ on sockets")
async def test_lines_unread_at_the_shutdown_deadline_are_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 4: lines still in the kernel when the shutdown timeout expires are reported."""
    gate = hold_file_writes(monkeypatch)
    head = b"".join(b"head %d\n" % n for n in range(10))
    tail = b"".join(b"tail line %04d\n" % n for n in range(1000))
    stderr = io.StringIO()
    opts = options(tmp_path, buffer=1, fsync_interval=0, shutdown_timeout=0)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=stderr))
        aggregator = server.aggregator
        assert aggregator is not None
        with socket.create_connection(server.tcp_addresses[0]) as client:
            # Three reads: one at the (stuck) writer, one buffered, one waiting for room.
            for part in (head[:14], head[14:28], head[28:]):
                client.sendall(part)
                received = head.index(part) + len(part)
                await wait_for(lambda n=received: server.collector.statistics().bytes_received == n)
            await wait_for(lambda: aggregator.statistics().nb_waiting == 1)
            client.sendall(tail)  # the reader waits for room: this stays unread
            await wait_for(lambda: unsent_bytes(client) == 0)
            server.shutdown()  # the shutdown timeout (0) expires at once
            gate.set()
            await server.wait_finished()
    assert server.exit_code == 1
    assert (tmp_path / "out.log").read_bytes() == head
    assert server.summary is not None
    losses = server.summary.losses
    assert (losses.lines["unread"], losses.bytes["unread"]) == (1000, len(tail))
    assert f"lost lines       1,000 ({len(tail):,} bytes; unread 1,000)" in stderr.getvalue()


async def wait_refused(address: tuple[str, int]) -> None:
    """Return once *address* refuses connections (the server has closed its listener).

    Probes are spaced well over the tests' ``shutdown_idle`` (0.01 s): a probe is a new
    connection, which keeps a stopping listener open for that long.
    """
    with trio.fail_after(20):
        while True:
            try:
                socket.create_connection(address).close()
            except ConnectionRefusedError:
                return
            await trio.sleep(0.1)


async def test_clients_silent_across_the_shutdown_have_every_line_written(tmp_path: Path) -> None:
    """Silence at shutdown is not the end: lines that come after it, then the close, are
    written (the soak lost 2,149 lines of closed clients whose last segments came after
    a 0.2 s zero-window probe, cut unread and uncounted)."""
    stderr = io.StringIO()
    opts = options(tmp_path, shutdown_timeout=30)
    clients: list[socket.socket] = []
    try:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(run_server, opts, stderr=stderr))
            address = server.tcp_addresses[0]
            for n in range(20):
                clients.append(socket.create_connection(address))
                clients[-1].sendall(b"".join(b"c%d first %d\n" % (n, i) for i in range(50)))
            await wait_for(lambda: server.collector.statistics().lines == 1000)
            server.shutdown()
            await wait_refused(address)  # stopping, the listener closed
            for n, client in enumerate(clients):
                client.sendall(b"".join(b"c%d then %d\n" % (n, i) for i in range(50)))
                client.close()
            await server.wait_finished()
    finally:
        for client in clients:
            client.close()
    assert server.exit_code == 0
    lines = (tmp_path / "out.log").read_bytes().splitlines()
    for n in range(20):
        mine = [line for line in lines if line.startswith(b"c%d " % n)]
        assert mine == [b"c%d first %d" % (n, i) for i in range(50)] + [
            b"c%d then %d" % (n, i) for i in range(50)
        ]
    assert len(lines) == 2000


async def test_clients_connecting_sending_and_closing_as_shutdown_starts_lose_nothing(
    tmp_path: Path,
) -> None:
    """Every line of a client that got in is written: those queued behind max_connections
    too. A client that came too late is refused, and knows it."""
    opts = options(tmp_path, shutdown_timeout=30, max_connections=8)
    sent: list[int] = []

    async def client(address: tuple[str, int], n: int) -> None:
        try:
            stream = await trio.open_tcp_stream(*address)
        except OSError:
            return  # the listener had closed: refused
        async with stream:
            await stream.send_all(b"".join(b"k%d line %d\n" % (n, i) for i in range(100)))
        sent.append(n)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        async with trio.open_nursery() as clients:
            for n in range(100):
                clients.start_soon(client, server.tcp_addresses[0], n)
            server.shutdown()
        await server.wait_finished()
    assert server.exit_code == 0
    lines = (tmp_path / "out.log").read_bytes().splitlines()
    for n in sent:
        assert [line for line in lines if line.startswith(b"k%d " % n)] == [
            b"k%d line %d" % (n, i) for i in range(100)
        ]
    assert len(lines) == 100 * len(sent)
    assert sent, "none got in"


async def test_a_forced_shutdown_counts_what_connections_waiting_for_a_slot_sent(
    tmp_path: Path,
) -> None:
    stderr = io.StringIO()
    opts = options(tmp_path, max_connections=1)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=stderr))
        address = server.tcp_addresses[0]
        with (
            socket.create_connection(address) as holder,
            socket.create_connection(address) as waiting,
        ):
            holder.sendall(b"held\n")
            await wait_for(lambda: server.collector.statistics().lines == 1)
            waiting.sendall(b"never read 1\nnever read 2\n")  # accepted, waits for a slot
            await wait_for(lambda: unsent_bytes(waiting) == 0)
            await trio.testing.wait_all_tasks_blocked()
            server.shutdown(force=True)
            await server.wait_finished()
    assert server.exit_code == 1
    assert (tmp_path / "out.log").read_bytes() == b"held\n"
    assert server.summary is not None
    assert server.summary.losses.lines["unread"] == 2


async def test_connections_queued_when_the_shutdown_timeout_ends_are_counted(
    tmp_path: Path,
) -> None:
    """What clients sent on connections never accepted (queued behind max_connections)
    when the shutdown timeout ends is counted lost, not reset with the listener unseen."""
    stderr = io.StringIO()
    opts = options(tmp_path, max_connections=1, shutdown_timeout=0.2)
    queued: list[socket.socket] = []
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=stderr))
        address = server.tcp_addresses[0]
        with socket.create_connection(address) as holder:  # takes the only slot
            holder.sendall(b"held\n")
            await wait_for(lambda: server.collector.statistics().lines == 1)
            for n in range(20):  # they wait in the listen backlog
                client = socket.create_connection(address)
                queued.append(client)
                client.sendall(b"".join(b"q%d line %d\n" % (n, i) for i in range(10)))
                await wait_for(lambda c=client: unsent_bytes(c) == 0)  # type: ignore[misc]
                client.close()
            server.shutdown()
            await server.wait_finished()
    assert server.exit_code == 1
    assert (tmp_path / "out.log").read_bytes() == b"held\n"
    assert server.summary is not None
    losses = server.summary.losses
    assert losses.lines["unread"] == 200
    assert losses.total_lines == 200
    assert "lost lines       200" in stderr.getvalue()


# ---------------------------------------------------------------------------- item 9


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--max-line-bytes", "99999999999G"],
            "argument --max-line-bytes: a size in bytes must be <= 67,108,864",
        ),
        (["--rotate-bytes", "99999999999G"], "argument --rotate-bytes: a size in bytes must be <="),
        (["--buffer", "99999999999"], "argument --buffer: N must be <= 1,000,000"),
        (["--status-interval", "0"], "argument --status-interval: SECONDS must be > 0, not 0.0"),
        (["--fsync-interval", "1e-9"], "argument --fsync-interval: SECONDS must be 0 or >= 0.01"),
        (["--idle-timeout", "1e-9"], "argument --idle-timeout: SECONDS must be 0 or >= 0.01"),
        (["--unix", ""], "a Unix socket path must not be empty"),
    ],
)
def test_nonsense_arguments_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 9: values that remove a bound, spin the CPU or mean nothing exit 2, clearly."""
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


async def test_unix_on_a_regular_file_says_so_and_leaves_it(tmp_path: Path) -> None:
    """Item 9: not "Address already in use"; the file is not replaced."""
    path = tmp_path / "not-a-socket"
    path.write_bytes(b"precious\n")
    with pytest.raises(ServeError, match="a file that is not a socket is there") as caught:
        await run_server(options(tmp_path, tcp=(), unix=(str(path),)))
    assert "in use" not in str(caught.value)
    assert path.read_bytes() == b"precious\n"


@pytest.mark.parametrize("kind", ["dev_null", "fifo"])
async def test_a_non_regular_output_is_not_fsynced(
    tmp_path: Path,
    kind: str,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Item 9: /dev/null or a FIFO: no fsync EINVAL error every second, and exit 0."""
    if kind == "dev_null":
        output = os.devnull
        reader = None
    else:
        output = str(tmp_path / "fifo")
        os.mkfifo(output)
        read_fd = os.open(output, os.O_RDONLY | os.O_NONBLOCK)  # so opening it to write won't wait
        reader = read_fd
    stderr = io.StringIO()
    try:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(run_server, options(tmp_path, output=output), stderr=stderr)
            )
            await trio.sleep(5)  # five fsync intervals, in mock time
            server.shutdown()
    finally:
        if reader is not None:
            os.close(reader)
    assert server.exit_code == 0, stderr.getvalue()
    assert server.summary is not None
    assert server.summary.aggregator.callback_errors == 0
    assert "fsync" not in stderr.getvalue() + caplog.text


async def test_a_non_regular_output_cannot_be_rotated(tmp_path: Path) -> None:
    with pytest.raises(ServeError, match="not a regular file"):
        await run_server(options(tmp_path, output=os.devnull, rotate_bytes=100))


async def test_running_out_of_descriptors_is_logged_rate_limited(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Item 9: EMFILE on accept is logged (once per interval) as well as counted."""
    listener = FakeListener()
    collector = LineCollector(Written())
    with caplog.at_level(logging.WARNING, logger="trio_aggregator.serve"):
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.serve, [listener])
            for _ in range(3):
                listener.fail(OSError(errno.EMFILE, "Too many open files"))
            await trio.sleep(1)
            assert len(caplog.records) == 1
            await trio.sleep(ACCEPT_LOG_INTERVAL)
            listener.fail(OSError(errno.EMFILE, "Too many open files"))
            await trio.sleep(1)
            collector.stop()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "Too many open files (1 time(s) since the last report)" in messages[0]
    assert "Too many open files (3 time(s) since the last report)" in messages[1]
    assert collector.statistics().accept_errors == 4


# ---------------------------------------------------------------------------- item 10


@pytest.mark.parametrize(("mode", "expected"), [(None, 0o660), (0o600, 0o600)])
async def test_unix_socket_mode_ignores_the_umask(
    tmp_path: Path, mode: int | None, expected: int
) -> None:
    """Item 10: with umask 000 the socket was 777 (anyone could connect)."""
    path = str(tmp_path / "s.sock")
    kwargs: dict[str, object] = {"tcp": (), "unix": (path,)}
    if mode is not None:
        kwargs["unix_mode"] = mode
    old = os.umask(0)
    try:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(run_server, options(tmp_path, **kwargs))
            assert stat.S_IMODE(os.stat(path).st_mode) == expected
            server.shutdown()
    finally:
        os.umask(old)


def test_unix_mode_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args(["serve", "--unix-mode", "600"]).unix_mode == 0o600
    assert build_parser().parse_args(["serve"]).unix_mode == 0o660
    assert main(["serve", "--unix-mode", "999"]) == 2
    assert "not an octal mode" in capsys.readouterr().err


async def test_the_output_path_does_not_follow_a_symlink(tmp_path: Path) -> None:
    """Item 10: an output that is a symbolic link is refused, the target left untouched."""
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    link = tmp_path / "out.log"
    link.symlink_to(target)
    for extra in ({}, {"rotate_bytes": 1000}):
        with pytest.raises(ServeError, match="symbolic link"):
            await run_server(options(tmp_path, output=str(link), **extra))
    assert target.read_bytes() == b""


# ---------------------------------------------------------------------------- item 6


async def test_a_line_not_finished_in_time_is_cut(autojump_clock: trio.testing.MockClock) -> None:
    """Item 6: a client trickling one byte a second never ends its line: cut, marked."""
    written = Written()
    collector = LineCollector(written, idle_timeout=5.0, line_timeout=30.0)
    client, server = trio.testing.memory_stream_pair()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.handle, server)
        await client.send_all(b"ok\n")
        with pytest.raises(trio.BrokenResourceError):  # noqa: PT012 - the trickle ends there
            for _ in range(100):  # never idle, never done
                await client.send_all(b"x")
                await trio.sleep(1)
    assert trio.current_time() - start == pytest.approx(31, abs=1.01)
    assert written.data == b"ok\n" + b"x" * 30 + b" [cut by trio-aggregator: line timeout]\n"
    assert collector.statistics().line_timeouts == 1


async def test_slow_clients_from_one_address_do_not_lock_others_out(tmp_path: Path) -> None:
    """Item 6: many slow connections from one address; a new client still gets in."""
    stderr = io.StringIO()
    opts = options(tmp_path, max_connections=20, max_per_address=10, shutdown_timeout=0.2)
    slow: list[socket.socket] = []
    try:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(run_server, opts, stderr=stderr))
            address = server.tcp_addresses[0]
            for _ in range(40):  # twice max_connections, from 127.0.0.1
                sock = socket.create_connection(address)
                sock.sendall(b"x")  # a line started, never finished
                slow.append(sock)
            await wait_for(lambda: server.collector.statistics().refused_per_address == 30)
            with socket.socket() as newcomer:
                newcomer.bind(("127.0.0.2", 0))  # another address
                newcomer.connect(address)
                newcomer.sendall(b"I got in\n")
                await wait_for(lambda: server.collector.statistics().lines == 1, timeout=10)
            assert server.collector.statistics().connections_open >= 10
            assert await finish(server) == 0
    finally:
        for sock in slow:
            sock.close()
    assert b"I got in\n" in (tmp_path / "out.log").read_bytes()
    assert "refused          30 (too many from one address)" in stderr.getvalue()


async def test_no_per_address_limit_serves_tcp_connections(tmp_path: Path) -> None:
    """Found by the soak: with no per-address limit, a closing connection crashed the server."""
    stderr = io.StringIO()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(run_server, options(tmp_path, max_per_address=None), stderr=stderr)
        )
        for n in range(3):
            await send(server.tcp_addresses[0], b"line %d\n" % n)
        assert await finish(server) == 0
    assert (tmp_path / "out.log").read_bytes() == b"line 0\nline 1\nline 2\n"
