"""TcpForwardSink (issue 10): framing, lazy connect, reconnect with backoff, resend, TLS.

The receivers are in-process Trio servers on loopback; tests of real sockets use real
time, each bounded by `trio.fail_after`; the backoff is checked under `autojump_clock`.
"""

from __future__ import annotations

import itertools
import random
import socket
import ssl
import struct
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
import trustme

from trio_aggregator import AggregatorConfig, TcpForwardSink, _tcp, open_aggregator
from trio_aggregator._resend import ResendWindow
from trio_aggregator._wire import frame_octet_counted

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

FAST: dict[str, Any] = {"backoff_initial": 0.01, "backoff_max": 0.05}
"""Short backoff for the tests against real sockets."""


class Receiver:
    """A loopback TCP server that keeps what each connection sent, in order.

    *on_connection*, if given, handles a connection instead of reading it to the end
    (it gets the stream and the list to append what it reads to).
    """

    def __init__(self) -> None:
        self.connections: list[list[bytes]] = []
        self.port = 0
        self.closed = trio.Event()
        self.on_connection: Callable[[trio.SocketStream, list[bytes]], Awaitable[None]] | None = (
            None
        )
        self._scope = trio.CancelScope()

    def data(self, index: int) -> bytes:
        return b"".join(self.connections[index])

    def everything(self) -> bytes:
        return b"".join(b"".join(conn) for conn in self.connections)

    async def _handle(self, stream: trio.SocketStream) -> None:
        received: list[bytes] = []
        self.connections.append(received)
        handler = self.on_connection
        async with stream:
            if handler is not None:
                await handler(stream, received)
                return
            while data := await stream.receive_some(65536):
                received.append(bytes(data))

    async def serve(
        self, *, task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        with self._scope:
            await trio.serve_listeners(self._handle, listeners, task_status=task_status)

    def stop(self) -> None:
        self._scope.cancel()
        self._scope = trio.CancelScope()


def closed_port() -> int:
    """A loopback port nothing listens on (a connect is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def reset(stream: trio.SocketStream) -> None:
    """Make closing *stream* send a RST (SO_LINGER 0)."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_lines_framing_sends_every_kind_of_buffer() -> None:
    receiver = Receiver()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(receiver.serve)
            sink = TcpForwardSink("127.0.0.1", receiver.port)
            assert not sink.statistics().connected
            await sink.write(b"one\ntwo\n")
            await sink.write([b"three\n", b"four"])  # a record without LF gets one
            await sink.write(bytearray(b"five\n"))
            await sink.write(memoryview(b"six\n"))
            await sink.write(b"")  # nothing to send: no connection needed
            stats = sink.statistics()
            await sink.aclose()  # waits until the receiver has read everything
            nursery.cancel_scope.cancel()
    assert receiver.data(0) == b"one\ntwo\nthree\nfour\nfive\nsix\n"
    assert stats.connected
    assert (stats.connects, stats.reconnects, stats.batches_sent) == (1, 0, 4)
    assert (stats.records_sent, stats.records_resent, stats.failed_sends) == (6, 0, 0)
    assert stats.bytes_sent == len(receiver.data(0))


async def test_octet_counted_framing_leaves_the_lf_out() -> None:
    receiver = Receiver()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(receiver.serve)
            async with TcpForwardSink("127.0.0.1", receiver.port, framing="octet-counted") as sink:
                await sink.write(b"hello\nworld!\n")
                await sink.write([b"\xc3\xa9t\xc3\xa9\n", b"last"])
                await sink.write(b"\n")  # an empty record is framed too
            nursery.cancel_scope.cancel()
    assert receiver.data(0) == b"5 hello6 world!5 \xc3\xa9t\xc3\xa94 last0 "
    assert sink.statistics().records_sent == 5
    assert sink.framing == "octet-counted"


async def test_connects_lazily_and_waits_for_a_target_that_comes_up() -> None:
    receiver = Receiver()
    receiver.port = closed_port()
    sink = TcpForwardSink("127.0.0.1", receiver.port, **FAST)
    assert sink.statistics().connects == 0
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def write() -> None:
                await sink.write(b"late\n")
                done.set()

            nursery.start_soon(write)
            while sink.statistics().connect_failures < 3:
                await trio.sleep(0.01)
            assert not done.is_set()  # the write waits while the target is down
            await nursery.start(receiver.serve)
            await done.wait()
            await sink.aclose()
            nursery.cancel_scope.cancel()
    stats = sink.statistics()
    assert receiver.data(0) == b"late\n"
    assert stats.connects == 1
    assert stats.reconnects == 0  # never lost one: the first connection
    assert stats.connect_failures >= 3


async def test_a_peer_that_closed_is_noticed_before_the_next_send() -> None:
    receiver = Receiver()
    first_read = trio.Event()
    closed = trio.Event()

    async def close_after_one_read(stream: trio.SocketStream, received: list[bytes]) -> None:
        received.append(bytes(await stream.receive_some(65536)))
        first_read.set()
        await stream.aclose()
        closed.set()

    receiver.on_connection = close_after_one_read
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(receiver.serve)
            sink = TcpForwardSink("127.0.0.1", receiver.port, resend_seconds=0, **FAST)
            await sink.write(b"1\n2\n")
            await first_read.wait()
            await closed.wait()
            receiver.on_connection = None
            await trio.sleep(0.05)  # the FIN reaches the sink's socket
            await sink.write(b"3\n4\n")
            await sink.aclose()
            nursery.cancel_scope.cancel()
    stats = sink.statistics()
    assert receiver.data(0) == b"1\n2\n"
    assert receiver.data(1) == b"3\n4\n"  # not lost into the closed connection
    assert (stats.peer_closed, stats.reconnects, stats.failed_sends) == (1, 1, 0)
    assert stats.records_resent == 0


async def test_what_a_receiver_did_not_read_is_sent_again_after_it_closed() -> None:
    receiver = Receiver()
    first_read = trio.Event()
    stop_reading = trio.Event()
    closed = trio.Event()

    async def stop_then_close(stream: trio.SocketStream, received: list[bytes]) -> None:
        received.append(bytes(await stream.receive_some(65536)))
        first_read.set()
        await stop_reading.wait()  # what comes now stays unread, and is lost with the close
        receiver.on_connection = None
        await stream.aclose()
        closed.set()

    receiver.on_connection = stop_then_close
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(receiver.serve)
            sink = TcpForwardSink("127.0.0.1", receiver.port, **FAST)
            await sink.write(b"1\n")
            await first_read.wait()
            await sink.write(b"2\n3\n")  # the kernel takes it; the receiver never reads it
            stop_reading.set()
            await closed.wait()
            await trio.sleep(0.05)  # the reset reaches the sink's socket
            await sink.write(b"4\n")
            await sink.aclose()
            nursery.cancel_scope.cancel()
    stats = sink.statistics()
    assert receiver.data(0) == b"1\n"
    assert receiver.data(1) == b"1\n2\n3\n4\n"  # the window again, then the new batch
    assert stats.records_resent == 3  # the duplicates ("1") and the rescued ("2", "3")
    assert (stats.reconnects, stats.records_sent) == (1, 4)


async def test_after_a_quiet_spell_nothing_is_sent_twice() -> None:
    receiver = Receiver()
    closed = trio.Event()

    async def read_then_close(stream: trio.SocketStream, received: list[bytes]) -> None:
        received.append(bytes(await stream.receive_some(65536)))
        receiver.on_connection = None
        await trio.sleep(0.2)  # an idle timeout
        await stream.aclose()
        closed.set()

    receiver.on_connection = read_then_close
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(receiver.serve)
            sink = TcpForwardSink("127.0.0.1", receiver.port, resend_seconds=0.1, **FAST)
            await sink.write(b"1\n")
            await closed.wait()
            await sink.write(b"2\n")
            await sink.aclose()
            nursery.cancel_scope.cancel()
    assert receiver.data(0) == b"1\n"
    assert receiver.data(1) == b"2\n"
    assert sink.statistics().records_resent == 0
    assert sink.statistics().peer_closed == 1


async def test_a_batch_whose_send_failed_is_sent_again_whole() -> None:
    receiver = Receiver()
    lines = [b"%08d %s\n" % (i, b"x" * 100) for i in range(300_000)]  # ~33 MB
    batch = b"".join(lines)

    async def read_a_little_then_reset(stream: trio.SocketStream, received: list[bytes]) -> None:
        received.append(bytes(await stream.receive_some(65536)))
        receiver.on_connection = None  # the next connection is read to the end
        reset(stream)

    receiver.on_connection = read_a_little_then_reset
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(receiver.serve)
            sink = TcpForwardSink("127.0.0.1", receiver.port, **FAST)
            await sink.write(batch)
            await sink.aclose()
            nursery.cancel_scope.cancel()
    stats = sink.statistics()
    assert batch.startswith(receiver.data(0))  # a part of it went on the first connection
    assert receiver.data(1) == batch  # then the whole batch, once, on the next one
    assert stats.failed_sends == 1
    assert stats.reconnects == 1
    assert stats.records_resent == len(lines)
    assert stats.records_sent == len(lines)
    assert stats.batches_sent == 1


async def test_backoff_is_exponential_capped_and_jittered(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = TcpForwardSink(
        "127.0.0.1", 9, backoff_initial=1.0, backoff_max=8.0, jitter=0.25, rng=random.Random(1)
    )
    attempts: list[float] = []

    async def refused() -> trio.abc.Stream:
        attempts.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(sink, "_connect", refused)
    with trio.move_on_after(60):
        await sink.write(b"never sent\n")
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    expected = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert len(gaps) >= len(expected)
    for gap, full in zip(gaps, expected, strict=False):
        assert full * 0.75 <= gap <= full
    assert len(set(gaps[3:])) > 1  # jitter: the capped waits differ
    assert sink.statistics().connect_failures == len(attempts)
    assert sink.statistics().batches_sent == 0


def test_backoff_without_jitter_is_exact() -> None:
    sink = TcpForwardSink("h", 1, backoff_initial=0.5, backoff_max=3.0, jitter=0)
    assert [sink.backoff_delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert sink.backoff_delay(10_000) == 3.0  # no overflow


async def test_a_write_cancelled_while_the_target_is_down_leaves_nothing_behind(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = TcpForwardSink("127.0.0.1", closed_port())

    async def refused() -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(sink, "_connect", refused)
    with trio.move_on_after(5) as scope:
        await sink.write(b"x\n")
    assert scope.cancelled_caught
    await sink.aclose()
    await sink.aclose()  # idempotent
    assert sink.closed
    with pytest.raises(trio.ClosedResourceError):
        await sink.write(b"y\n")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_contexts(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_tls_forwarding_and_a_certificate_not_trusted(ca: trustme.CA) -> None:
    server_ctx, client_ctx = tls_contexts(ca)
    receiver = Receiver()

    async def tls_read(stream: trio.SocketStream, received: list[bytes]) -> None:
        tls = trio.SSLStream(stream, server_ctx, server_side=True)
        try:
            while data := await tls.receive_some(65536):
                received.append(bytes(data))
        except trio.BrokenResourceError:
            received.append(b"<broken>")

    receiver.on_connection = tls_read
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(receiver.serve)
            async with TcpForwardSink(
                "127.0.0.1", receiver.port, ssl_context=client_ctx, framing="octet-counted"
            ) as sink:
                await sink.write(b"secret one\nsecret two\n")
            assert "tls" in repr(sink)
            untrusted = TcpForwardSink(
                "127.0.0.1", receiver.port, ssl_context=ssl.create_default_context(), **FAST
            )
            with trio.move_on_after(0.5):
                await untrusted.write(b"never\n")
            await untrusted.aclose()
            nursery.cancel_scope.cancel()
    assert receiver.data(0) == b"10 secret one10 secret two"
    assert sink.statistics().connects == 1
    assert untrusted.statistics().connects == 0
    assert untrusted.statistics().connect_failures >= 1
    assert b"never" not in receiver.everything()


async def test_behind_an_aggregator_the_buffer_holds_while_the_target_is_down() -> None:
    receiver = Receiver()
    receiver.port = closed_port()
    sink = TcpForwardSink("127.0.0.1", receiver.port, **FAST)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            config = AggregatorConfig(
                writer=sink.write, buffer_size=3, when_full="drop_newest", batch_max_items=8
            )
            async with sink, open_aggregator(nursery, config) as agg:
                accepted = [agg.write_nowait(b"%d\n" % i) for i in range(10)]
                await trio.sleep(0.05)  # the writer is stuck retrying
                assert agg.statistics().dropped > 0
                await nursery.start(receiver.serve)
            nursery.cancel_scope.cancel()
    expected = b"".join(b"%d\n" % i for i, n in enumerate(accepted) if n)
    assert receiver.everything() == expected
    assert sink.statistics().records_sent == expected.count(b"\n")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"framing": "json"}, ValueError),
        ({"port": 0}, ValueError),
        ({"port": True}, ValueError),
        ({"backoff_initial": 0}, ValueError),
        ({"backoff_max": float("inf")}, ValueError),
        ({"backoff_multiplier": 0.5}, ValueError),
        ({"jitter": 2}, ValueError),
        ({"jitter": "a"}, TypeError),
        ({"keepalive_idle": 0}, ValueError),
        ({"resend_seconds": -1}, ValueError),
        ({"resend_max_bytes": 0}, ValueError),
        ({"ssl_context": object()}, TypeError),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs: dict[str, Any], error: type[Exception]) -> None:
    settings: dict[str, Any] = {"port": 514, **kwargs}
    with pytest.raises(error, match=next(iter(kwargs))):
        TcpForwardSink("127.0.0.1", **settings)


def test_the_resend_window_keeps_the_recent_batches_within_its_bytes() -> None:
    window = ResendWindow(seconds=1.0, max_bytes=10)
    window.sent(0.0, [(b"old\n", 1)])
    window.sent(0.5, [(b"a\n", 1), (b"bb\n", 1)])
    window.sent(1.2, [(b"cccc\n", 1)])  # "old" is past the window now
    window.connection_lost(1.3)
    assert window.pending == [(b"a\n", 1), (b"bb\n", 1), (b"cccc\n", 1)]
    window = ResendWindow(seconds=1.0, max_bytes=6)
    window.sent(0.0, [(b"a\n", 1), (b"bb\n", 1), (b"cccc\n", 1)])
    window.connection_lost(0.1)
    assert window.pending == [(b"cccc\n", 1)]  # the oldest went first, past 6 bytes
    off = ResendWindow(seconds=0, max_bytes=6)
    off.sent(0.0, [(b"a\n", 1)])
    off.connection_lost(0.0)
    assert off.pending == []


def test_octet_counting_of_long_and_short_lines() -> None:
    long = b"y" * 5000
    assert frame_octet_counted([b"a\n" + long + b"\nbc"]) == b"1 a5000 " + long + b"2 bc"
    assert frame_octet_counted([b"", b"\n\n"]) == b"0 0 "


@pytest.mark.parametrize("rdhup", [True, False])
def test_peer_closed_sees_a_fin_with_or_without_pollrdhup(
    monkeypatch: pytest.MonkeyPatch, rdhup: bool
) -> None:
    if not rdhup:  # where there is no POLLRDHUP, a MSG_PEEK looks for the FIN instead
        monkeypatch.setattr(_tcp, "_POLLRDHUP", 0)
    with socket.create_server(("127.0.0.1", 0)) as server:
        raw = socket.create_connection(server.getsockname())
        ours = trio.socket.from_stdlib_socket(raw)
        peer, _ = server.accept()
        with ours, peer:
            assert not _tcp.peer_closed(ours)
            peer.sendall(b"unread")
            assert not _tcp.peer_closed(ours)  # data, not a FIN
            peer.shutdown(socket.SHUT_WR)
            assert _tcp.peer_closed(ours) is rdhup  # a peek sees no FIN behind unread data
            assert raw.recv(64) == b"unread"
            assert _tcp.peer_closed(ours)
