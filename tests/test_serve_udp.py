"""Issue 10 item 5: ``serve --udp``, one datagram = one record.

The record rule is tested as a function; the server with loopback datagrams from this
process, from the stdlib `logging.handlers.SysLogHandler` (UDP is its default) in
several threads, and from util-linux ``logger --udp``. UDP may lose datagrams; the
tests assert ``written + kernel drops == sent`` (and on loopback, with a reader keeping
up, there are normally no drops at all).
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import re
import socket
import sys
import threading
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from trio_aggregator._serve._cli import build_parser, main
from trio_aggregator._serve._listeners import parse_tcp_address
from trio_aggregator._serve._server import LineServer, ServeError, run_server
from trio_aggregator._serve._udp import datagram_record, escape_controls, proc_drops

from ._rsyslog import Rsyslog, free_port, require_program
from .test_serve import finish, options
from .test_serve_reliability import hold_file_writes, http_get, wait_for

if TYPE_CHECKING:
    from pathlib import Path

UDP_LOOPBACK = ("127.0.0.1", 0)
linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="the kernel's UDP drop count is read on Linux only"
)

# ---------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("datagram", "record"),
    [
        (b"<14>hello", b"<14>hello\n"),
        (b"<14>hello\n", b"<14>hello\n"),
        (b"<14>hello\x00", b"<14>hello\n"),  # SysLogHandler's NUL
        (b"<14>hello\n\x00\n", b"<14>hello\n"),
        (b"two\nlines", b"two#012lines\n"),  # one datagram, one line: LF escaped
        (b"nul\x00inside", b"nul#000inside\n"),
        (b"tab\there\r", b"tab#011here#015\n"),
        (b"del\x7f", b"del#177\n"),
        (b"# stays", b"# stays\n"),
        ("caf\u00e9".encode(), "caf\u00e9\n".encode()),  # UTF-8 as it is
        (b"", b""),
        (b"\n", b""),
        (b"\x00\n", b""),
    ],
)
def test_datagram_record(datagram: bytes, record: bytes) -> None:
    assert datagram_record(datagram, 1000) == (record, 0)


def test_datagram_record_truncates_before_escaping() -> None:
    assert datagram_record(b"0123456789\n", 4) == (b"0123\n", 6)
    assert datagram_record(b"a\nbcdef", 3) == (b"a#012b\n", 4)
    assert datagram_record(b"abcd\n", 4) == (b"abcd\n", 0)


def test_escape_controls_leaves_clean_data_alone() -> None:
    data = b"nothing to escape here"
    assert escape_controls(data) is data
    assert escape_controls(bytes(range(32))).count(b"#") == 32


# ---------------------------------------------------------------------------- server


def udp_address(server: LineServer) -> tuple[str, int]:
    address = server.addresses[-1]
    match = re.fullmatch(r"udp:(.*):(\d+)", address)
    assert match is not None, address
    return match[1], int(match[2])


def read_lines(path: str) -> list[bytes]:
    with open(path, "rb") as output:
        return output.read().splitlines(keepends=True)


async def wait_for_datagrams(server: LineServer, sent: int, timeout: float = 20) -> None:
    """Wait until *sent* datagrams were read or dropped by the kernel."""

    def arrived() -> bool:
        udp = server.inputs.statistics().udp
        assert udp is not None
        return udp.datagrams + (udp.kernel_drops or 0) >= sent

    await wait_for(arrived, timeout)


def written_and_dropped(server: LineServer, output: str, sent: int) -> tuple[list[bytes], int]:
    """The lines in *output* and the kernel's drops: together, every datagram *sent*."""
    lines = read_lines(output)
    summary = server.summary
    assert summary is not None
    assert summary.inputs is not None
    assert summary.inputs.udp is not None
    drops = summary.inputs.udp.kernel_drops
    assert drops is not None
    assert len(lines) + drops == sent
    return lines, drops


async def test_udp_datagrams_become_lines_and_are_counted(tmp_path: Path) -> None:
    stderr = io.StringIO()
    opts = options(tmp_path, tcp=(), udp=(UDP_LOOPBACK,), max_line_bytes=10)
    datagrams = [b"one\n", b"two\x00", b"three", b"x" * 25, b"a\nb", b"\n", b"", b"last"]
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=stderr))
        address = udp_address(server)
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as client:
            for datagram in datagrams:
                await client.sendto(datagram, address)
        await wait_for(lambda: server.inputs.statistics().udp.datagrams == 8)  # type: ignore[union-attr]
        assert await finish(server) == 0
    assert read_lines(opts.output) == [
        b"one\n",
        b"two\n",
        b"three\n",
        b"x" * 10 + b"\n",
        b"a#012b\n",
        b"last\n",
    ]
    summary = server.summary
    assert summary is not None
    assert summary.lines == 6
    assert summary.inputs is not None
    udp = summary.inputs.udp
    assert udp is not None
    assert (udp.datagrams, udp.records, udp.empty, udp.truncated) == (8, 6, 2, 1)
    assert udp.bytes_discarded == 15
    assert udp.bytes_received == sum(map(len, datagrams))
    assert udp.kernel_drops == 0
    text = stderr.getvalue()
    assert f"listening on udp:127.0.0.1:{address[1]}" in text
    assert re.search(r"udp datagrams +8 \(\d+ bytes; 6 records, 2 empty\)", text)
    assert re.search(r"udp truncated +1 \(15 bytes discarded\)", text)
    assert re.search(r"udp kernel drops +0 \(never read: not in the exit status\)", text)
    assert re.search(r"\n  lines +6\n", text)


async def test_udp_shutdown_writes_what_is_queued(tmp_path: Path) -> None:
    """Datagrams sent before the shutdown are read and written, not left in the kernel."""
    opts = options(tmp_path, udp=(UDP_LOOPBACK,))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        address = udp_address(server)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            for n in range(500):
                client.sendto(b"queued %03d" % n, address)  # no checkpoint: all queued
        server.shutdown()
        await server.wait_finished()
    assert server.exit_code == 0
    assert read_lines(opts.output) == [b"queued %03d\n" % n for n in range(500)]


@linux_only
async def test_udp_kernel_drops_are_counted_when_the_reader_cannot_keep_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The output is held: datagrams overflow the receive buffer; written + drops == sent."""
    gate = hold_file_writes(monkeypatch)
    stderr = io.StringIO()
    opts = options(tmp_path, tcp=(), udp=(UDP_LOOPBACK,), buffer=1, fsync_interval=0)
    sent = 40_000
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=stderr))
        address = udp_address(server)

        def flood() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                for n in range(sent):
                    client.sendto(b"flood %05d" % n, address)

        await trio.to_thread.run_sync(flood)
        gate.set()
        assert await finish(server) == 0  # drops never reached the server: not a loss
    summary = server.summary
    assert summary is not None
    assert summary.inputs is not None
    udp = summary.inputs.udp
    assert udp is not None
    assert udp.kernel_drops is not None
    assert udp.kernel_drops > 0  # 40,000 datagrams do not fit in the receive buffer
    written = read_lines(opts.output)
    assert len(written) + udp.kernel_drops == sent
    assert written == sorted(written)  # in order; the dropped ones missing
    assert re.search(rf"udp kernel drops +{udp.kernel_drops:,} ", stderr.getvalue())


async def test_udp_forced_shutdown_counts_what_was_read_and_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forced stop gives a UDP write waiting for room ``drain_timeout``, then counts it."""
    gate = hold_file_writes(monkeypatch)
    opts = options(tmp_path, tcp=(), udp=(UDP_LOOPBACK,), buffer=1, drain_timeout=0.2)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        address = udp_address(server)
        udp = lambda: server.inputs.statistics().udp  # noqa: E731
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            # One datagram at a time: the writer holds the 1st, the buffer the 2nd, and
            # the 3rd waits for room.
            for n in range(3):
                client.sendto(b"stuck %d" % n, address)
                await wait_for(lambda n=n: udp().datagrams == n + 1)  # type: ignore[misc]
        server.shutdown(force=True)
        await wait_for(lambda: server.losses.snapshot().lines["forced_shutdown"] == 1)
        gate.set()
        await server.wait_finished()
    assert server.exit_code == 1
    assert read_lines(opts.output) == [b"stuck 0\n", b"stuck 1\n"]
    assert udp().records == 2


async def test_udp_host_name_binds_every_address_it_resolves_to(tmp_path: Path) -> None:
    """``localhost`` may be 127.0.0.1 and ::1: a socket on each, like ``--tcp``."""
    opts = options(tmp_path, tcp=(), udp=(("localhost", 0),))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        addresses = [parse_tcp_address(a.removeprefix("udp:")) for a in server.addresses]
        assert addresses
        for n, (host, port) in enumerate(addresses):
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as client:
                client.sendto(b"to %s %d" % (host.encode(), n), (host, port))
        await wait_for(lambda: server.inputs.statistics().udp.records == len(addresses))  # type: ignore[union-attr]
        assert await finish(server) == 0
    expected = [b"to %s %d\n" % (host.encode(), n) for n, (host, _) in enumerate(addresses)]
    assert sorted(read_lines(opts.output)) == sorted(expected)


async def test_udp_ipv6_loopback(tmp_path: Path) -> None:
    opts = options(tmp_path, tcp=(), udp=(("::1", 0),))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        assert server.addresses[0].startswith("udp:[::1]:")
        host, port = udp_address(server)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
            client.sendto(b"over ipv6\n", (host.strip("[]"), port))
        await wait_for(lambda: server.inputs.statistics().udp.records == 1)  # type: ignore[union-attr]
        assert await finish(server) == 0
    assert read_lines(opts.output) == [b"over ipv6\n"]
    assert server.summary is not None
    assert server.summary.inputs is not None
    assert server.summary.inputs.udp is not None
    assert server.summary.inputs.udp.kernel_drops == 0  # /proc/net/udp6 read at close


async def test_udp_address_in_use_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"cannot listen on udp:127.0.0.1:{port}: "):
            await run_server(options(tmp_path, udp=(("127.0.0.1", port),)))


async def test_udp_unknown_host_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServeError, match=r"cannot listen on udp:no-such-host\.invalid:514"):
        await run_server(options(tmp_path, udp=(("no-such-host.invalid", 514),)))


async def test_udp_status_line_and_metrics(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    opts = options(tmp_path, udp=(UDP_LOOPBACK,), metrics=("127.0.0.1", 0))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        address = udp_address(server)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            for n in range(30):
                client.sendto(b"metric %02d\n" % n, address)
        await wait_for(lambda: server.inputs.statistics().udp.records == 30)  # type: ignore[union-attr]
        text, counts = server.status_line(1.0, (0, 0))
        assert counts[0] == 30
        assert "30 lines/s" in text
        assert text.endswith("| udp 30 dgrams, 0 kernel drops")
        assert server.metrics_address is not None
        url = f"http://127.0.0.1:{server.metrics_address[1]}/metrics"
        metrics = await trio.to_thread.run_sync(http_get, url)
        assert await finish(server) == 0
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
    }
    assert samples["trio_aggregator_serve_udp_datagrams_total"] == 30
    assert samples["trio_aggregator_serve_udp_records_total"] == 30
    assert samples["trio_aggregator_serve_udp_kernel_drops_total"] == 0
    assert "trio_aggregator_serve_tls_handshake_failures_total" not in samples


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
def test_proc_drops_reads_the_kernels_count(family: socket.AddressFamily, host: str) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as unread:
        unread.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a few datagrams
        unread.bind((host, 0))
        assert proc_drops(unread) == 0
        with socket.socket(family, socket.SOCK_DGRAM) as client:
            for _ in range(200):
                client.sendto(b"x" * 100, unread.getsockname())
        assert 0 < proc_drops(unread) < 200


def test_proc_drops_of_an_unknown_socket_is_zero() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        assert proc_drops(tcp) == 0  # not in /proc/net/udp


# ---------------------------------------------------------------------------- options


def test_udp_only_needs_no_tcp_address(tmp_path: Path) -> None:
    assert options(tmp_path, tcp=(), udp=(UDP_LOOPBACK,)).udp == (UDP_LOOPBACK,)


def test_cli_udp_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["serve", "--udp", "127.0.0.1:514", "--udp", "[::1]:0"])
    assert args.udp == [("127.0.0.1", 514), ("::1", 0)]
    assert main(["serve", "--udp", "nonsense"]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err


def test_cli_udp_alone_listens_on_no_default_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    from trio_aggregator._serve import _cli

    seen = []
    monkeypatch.setattr(_cli, "run_server", lambda options, **kw: seen.append(options))
    monkeypatch.setattr(_cli.trio, "run", lambda fn: fn() or 0)
    assert main(["serve", "--udp", "127.0.0.1:0"]) == 0
    assert seen[0].tcp == ()
    assert main(["serve"]) == 0
    assert seen[1].tcp == (("127.0.0.1", 5140),)


# ---------------------------------------------------------------------------- real clients


async def test_udp_stdlib_syslog_handler_from_threads(tmp_path: Path) -> None:
    """`logging.handlers.SysLogHandler` as it is (UDP, NUL-terminated), 8 threads."""
    opts = options(tmp_path, tcp=(), udp=(UDP_LOOPBACK,))
    threads, per_thread = 8, 1000
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        address = udp_address(server)

        def log_from_threads() -> None:
            handler = logging.handlers.SysLogHandler(address=address)  # UDP by default
            logger = logging.Logger("udp-test")
            logger.addHandler(handler)

            def emit(thread: int) -> None:
                for n in range(per_thread):
                    logger.warning("thread %d message %04d", thread, n)

            workers = [threading.Thread(target=emit, args=(t,)) for t in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            handler.close()

        await trio.to_thread.run_sync(log_from_threads)
        sent = threads * per_thread
        await wait_for_datagrams(server, sent)
        assert await finish(server) == 0
    lines, drops = written_and_dropped(server, opts.output, sent)
    assert all(re.fullmatch(rb"<12>thread \d message \d{4}\n", line) for line in lines)
    for thread in range(threads):
        own = [line for line in lines if line.startswith(b"<12>thread %d " % thread)]
        assert own == sorted(own)  # each thread's order kept
        if not drops:
            assert len(own) == per_thread


async def test_udp_util_linux_logger(tmp_path: Path) -> None:
    """util-linux ``logger --udp -f FILE``: 5,000 messages, written + drops == sent."""
    logger = require_program("logger")
    messages = tmp_path / "messages.txt"
    sent = 5000
    messages.write_text("".join(f"logger message {n:05d}\n" for n in range(sent)))
    opts = options(tmp_path, tcp=(), udp=(UDP_LOOPBACK,))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        host, port = udp_address(server)
        command = [logger, "--udp", "-n", host, "-P", str(port), "-t", "interop"]
        with trio.fail_after(60):
            await trio.run_process([*command, "-f", str(messages)])
        await wait_for_datagrams(server, sent)
        assert await finish(server) == 0
    lines, drops = written_and_dropped(server, opts.output, sent)
    numbers = [int(line[-6:-1]) for line in lines]
    assert all(re.search(rb" interop .* logger message \d{5}\n$", line) for line in lines)
    assert numbers == sorted(set(numbers))
    if not drops:
        assert numbers == list(range(sent))


async def test_udp_rsyslog_omfwd(tmp_path: Path) -> None:
    """rsyslog as a client: ``imtcp`` in, ``omfwd protocol="udp"`` out to the server."""
    sent = 2000
    opts = options(tmp_path, tcp=(), udp=(UDP_LOOPBACK,))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        _, udp_port = udp_address(server)
        in_port = free_port()
        body = (
            'module(load="imtcp")\n'
            f'input(type="imtcp" port="{in_port}" address="127.0.0.1" ruleset="fwd")\n'
            'ruleset(name="fwd") {\n'
            f'  action(type="omfwd" target="127.0.0.1" port="{udp_port}" protocol="udp"'
            ' template="msgonly")\n'
            "}\n"
        )
        rsyslog = Rsyslog(tmp_path / "rsyslog", body, listen_port=in_port)
        rsyslog.check_config()
        with rsyslog:
            data = b"".join(b"<13>Dec  7 10:00:00 edge app: omfwd %05d\n" % n for n in range(sent))
            await trio.to_thread.run_sync(send_over_tcp, in_port, data)
            await wait_for_datagrams(server, sent, 60)
        assert await finish(server) == 0
    lines, _ = written_and_dropped(server, opts.output, sent)
    assert all(re.fullmatch(rb" ?omfwd \d{5}\n", line) for line in lines), lines[:3]
    numbers = [int(line[-6:-1]) for line in lines]
    assert numbers == sorted(set(numbers))


def send_over_tcp(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
