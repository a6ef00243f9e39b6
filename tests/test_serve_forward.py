"""``serve --forward`` and SIGHUP (issue 10): outputs with their own buffers, reopening.

The forward targets are in-process Trio receivers on loopback (`Receiver`); one test
sends a real SIGHUP to a server process.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing
import trustme

from trio_aggregator._serve._cli import _serve_options as serve_options
from trio_aggregator._serve._cli import build_parser
from trio_aggregator._serve._demo import demo_lines, verify_demo_output
from trio_aggregator._serve._server import LineServer, ServeError, run_server
from trio_aggregator._serve._statistics import format_table

from .test_cli import connect, running, summary_value, wait_until
from .test_forward import Receiver, closed_port, tls_contexts
from .test_serve import options, send

if TYPE_CHECKING:
    from pathlib import Path

    from trio_aggregator._serve._options import ServeOptions


def lines_of(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


async def serve_clients(opts: ServeOptions, clients: int, lines: int) -> tuple[LineServer, int]:
    """Run a server, send *clients* x *lines* demo lines, shut it down; the exit code."""
    stderr = io.StringIO()
    async with trio.open_nursery() as nursery:
        server: LineServer = await nursery.start(partial(run_server, opts, stderr=stderr))
        address = server.tcp_addresses[0]
        async with trio.open_nursery() as senders:
            for client in range(clients):
                data = b"".join(demo_lines(client, lines, seed=3))
                senders.start_soon(send, address, data, 997)
        await trio.testing.wait_all_tasks_blocked()
        server.shutdown()
        await server.wait_finished()
    assert server.exit_code is not None
    return server, server.exit_code


def parse_octet_counted(data: bytes) -> list[bytes]:
    """The records of RFC 6587 octet-counted frames."""
    records: list[bytes] = []
    while data:
        length, _, rest = data.partition(b" ")
        records.append(rest[: int(length)])
        data = rest[int(length) :]
    return records


def check_demo(data: bytes, path: Path, clients: int, lines: int) -> None:
    path.write_bytes(data)
    verification = verify_demo_output(str(path), clients, lines, seed=3)
    assert verification.ok, verification.problems


async def test_file_and_forward_both_get_every_line(tmp_path: Path) -> None:
    receiver = Receiver()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(receiver.serve)
            opts = options(tmp_path, forward=(("127.0.0.1", receiver.port),))
            server, code = await serve_clients(opts, 8, 300)
            nursery.cancel_scope.cancel()
    assert code == 0
    check_demo((tmp_path / "out.log").read_bytes(), tmp_path / "file.check", 8, 300)
    check_demo(receiver.everything(), tmp_path / "fwd.check", 8, 300)
    summary = server.summary
    assert summary is not None
    assert summary.ok
    file_report, forward_report = summary.outputs
    assert (file_report.kind, forward_report.kind) == ("file", "forward")
    assert file_report.lines_written == forward_report.lines_written == 2400
    assert forward_report.forward is not None
    assert forward_report.forward.records_sent == 2400
    table = format_table(summary.rows())
    assert f"forward 127.0.0.1:{receiver.port}" in table
    assert "2,400 lines written, 0 lost, 0 re-sent, 0 reconnects" in table
    # The aggregator figures are the file's: the summary says so.
    labels = dict(summary.rows())
    written = file_report.aggregator.bytes_written
    assert labels[f"bytes written (file {file_report.name})"] == f"{written:,}"
    assert f"writer calls (file {file_report.name})" in labels


async def test_forward_only_waits_for_a_target_that_comes_up(tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.port = closed_port()
    opts = options(
        tmp_path,
        output=None,
        forward=(("127.0.0.1", receiver.port),),
        quiet=False,
        status_interval=0.05,
    )
    stderr = io.StringIO()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(run_server, opts, stderr=stderr))
            data = b"".join(demo_lines(0, 200, seed=3))
            await send(server.tcp_addresses[0], data)
            await trio.sleep(0.2)  # the target is down: the lines wait in the buffer
            assert not receiver.connections
            assert " DOWN, buffered " in stderr.getvalue()
            await nursery.start(receiver.serve)
            server.shutdown()
            await server.wait_finished()
            nursery.cancel_scope.cancel()
    assert server.exit_code == 0
    assert not (tmp_path / "out.log").exists()  # forward only: no file
    assert receiver.everything() == data
    summary = server.summary
    assert summary is not None
    assert summary.output == f"127.0.0.1:{receiver.port}"
    forward = summary.outputs[0].forward
    assert forward is not None
    assert forward.connect_failures >= 1


async def test_drop_newest_keeps_the_file_going_and_counts_the_drops(tmp_path: Path) -> None:
    opts = options(
        tmp_path,
        forward=(("127.0.0.1", closed_port()),),
        forward_when_full="drop_newest",
        buffer=2,
        drain_timeout=0.2,
    )
    server, code = await serve_clients(opts, 4, 500)
    assert code == 1  # lines read and not forwarded: lost for that output
    check_demo((tmp_path / "out.log").read_bytes(), tmp_path / "file.check", 4, 500)
    summary = server.summary
    assert summary is not None
    file_report, forward_report = summary.outputs
    assert file_report.ok
    assert file_report.lines_written == 2000
    assert forward_report.lines_written == 0
    assert forward_report.lines_lost == 2000  # when_full, then drain timeout: every line
    assert summary.losses.lines["when_full"] > 0
    assert summary.losses.lines["when_full"] + summary.losses.lines["drain_timeout"] == 2000
    assert "when full" in summary.losses.describe()


async def test_sighup_reopens_the_file_between_two_writes(tmp_path: Path) -> None:
    output = tmp_path / "out.log"
    rotated = tmp_path / "out.log.1"
    opts = options(tmp_path, fsync_interval=0.05)
    stderr = io.StringIO()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(run_server, opts, stderr=stderr))
            address = server.tcp_addresses[0]
            data = [b"".join(demo_lines(client, 400, seed=3)) for client in range(6)]

            async def client(n: int) -> None:
                stream = await trio.open_tcp_stream(*address)
                async with stream:
                    for start in range(0, len(data[n]), 613):
                        await stream.send_all(data[n][start : start + 613])
                        await trio.sleep(0.0005)

            async with trio.open_nursery() as clients:
                for n in range(6):
                    clients.start_soon(client, n)
                while output.stat().st_size < 20_000:
                    await trio.sleep(0.001)
                os.rename(output, rotated)  # what logrotate does
                server.reopen_output()  # what SIGHUP does
            await trio.testing.wait_all_tasks_blocked()
            server.shutdown()
            await server.wait_finished()
    assert server.exit_code == 0
    old, new = rotated.read_bytes(), output.read_bytes()
    assert old
    assert new
    assert old.endswith(b"\n")  # no line is split between the two
    check_demo(old + new, tmp_path / "check", 6, 400)
    summary = server.summary
    assert summary is not None
    assert summary.outputs[0].reopenings == 1
    assert ("reopened", "1 (SIGHUP)") in summary.rows()
    assert "SIGHUP: reopening the output file" in stderr.getvalue()


async def test_sighup_without_an_output_file_is_ignored(tmp_path: Path) -> None:
    stderr = io.StringIO()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(run_server, options(tmp_path, output="-"), stderr=stderr)
        )
        server.reopen_output()
        server.shutdown()
    assert "no output file to reopen" in stderr.getvalue()
    assert server.exit_code == 0


async def test_a_bad_forward_ca_fails_at_start(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    target = ("127.0.0.1", closed_port())
    opts = options(tmp_path, forward=(target,), forward_tls=True, forward_ca=str(ca))
    with pytest.raises(ServeError, match="cannot load --forward-ca"):
        await run_server(opts)


def test_forward_arguments(tmp_path: Path) -> None:
    parser = build_parser()
    args = parser.parse_args(["serve", "--forward", "127.0.0.1:514"])
    opts = serve_options(args)
    assert opts.output is None  # forward only: no file unless -o is given
    assert opts.forward == (("127.0.0.1", 514),)
    assert (opts.forward_framing, opts.forward_tls, opts.forward_when_full) == (
        "lines",
        False,
        "block",
    )
    args = parser.parse_args(
        [
            "serve", "-o", "x.log", "--forward", "a:1", "--forward", "b:2",
            "--forward-framing", "octet-counted", "--forward-ca", "ca.pem",
            "--forward-when-full", "drop_newest",
        ]
    )  # fmt: skip
    opts = serve_options(args)
    assert opts.output == "x.log"
    assert opts.forward == (("a", 1), ("b", 2))
    assert (opts.forward_framing, opts.forward_tls, opts.forward_ca) == (
        "octet-counted",
        True,
        "ca.pem",
    )
    assert opts.forward_when_full == "drop_newest"
    assert serve_options(parser.parse_args(["serve"])).output == "aggregated.log"
    with pytest.raises(ValueError, match="forward_ca needs forward_tls"):
        options(tmp_path, forward=(("127.0.0.1", 9),), forward_ca="x")
    with pytest.raises(ValueError, match="give an output file or at least one forward"):
        options(tmp_path, output=None)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_real_sighup_reopens_the_file(tmp_path: Path) -> None:
    with running(tmp_path, "--tcp", "127.0.0.1:0", "-o", "out.log", "--quiet") as server:
        with connect(server.port) as sock:
            sock.sendall(b"before 1\nbefore 2\n")
            wait_until(lambda: (tmp_path / "out.log").read_bytes().count(b"\n") == 2, "2 lines")
            os.rename(tmp_path / "out.log", tmp_path / "out.log.1")
            server.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "reopening the output file" in server.stderr.text, "the message")
            sock.sendall(b"after 1\n")
            wait_until(lambda: (tmp_path / "out.log").exists(), "the new file")
        assert server.stop() == 0
    assert (tmp_path / "out.log.1").read_bytes() == b"before 1\nbefore 2\n"
    assert (tmp_path / "out.log").read_bytes() == b"after 1\n"
    assert summary_value(server.stderr.text, "reopened") == "1 (SIGHUP)"


async def test_metrics_of_the_forward_targets_are_labelled(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from .test_prometheus import http_get

    receiver = Receiver()
    down = closed_port()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(receiver.serve)
            opts = options(
                tmp_path,
                metrics=("127.0.0.1", 0),
                forward=(("127.0.0.1", receiver.port), ("127.0.0.1", down)),
                forward_when_full="drop_newest",
                drain_timeout=0.1,
            )
            server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
            await send(server.tcp_addresses[0], b"one\ntwo\n")
            while receiver.everything() != b"one\ntwo\n":
                await trio.sleep(0.01)
            assert server.metrics_address is not None
            url = f"http://127.0.0.1:{server.metrics_address[1]}/metrics"
            text = await trio.to_thread.run_sync(http_get, url)
            server.shutdown()
            await server.wait_finished()
            nursery.cancel_scope.cancel()
    samples = {
        (sample.name, sample.labels.get("output")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    up, gone = f"127.0.0.1:{receiver.port}", f"127.0.0.1:{down}"
    assert samples[("trio_aggregator_serve_forward_connected", up)] == 1.0
    assert samples[("trio_aggregator_serve_forward_connected", gone)] == 0.0
    assert samples[("trio_aggregator_serve_forward_records_sent_total", up)] == 2.0
    assert samples[("trio_aggregator_serve_forward_connect_failures_total", gone)] >= 1.0
    assert ("trio_aggregator_serve_forward_running", up) in samples
    assert ("trio_aggregator_running", None) in samples  # the file's, unlabelled as before
    assert server.exit_code == 1  # the target that stayed down lost both lines


async def test_a_reopening_that_fails_keeps_writing_to_the_open_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    output = tmp_path / "out.log"
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, options(tmp_path), stderr=io.StringIO()))
        address = server.tcp_addresses[0]
        await send(address, b"one\n")
        while output.stat().st_size < 4:
            await trio.sleep(0.001)
        os.rename(output, tmp_path / "out.log.1")
        output.mkdir()  # the path cannot be opened for appending any more
        server.reopen_output()
        await send(address, b"two\n")
        await trio.testing.wait_all_tasks_blocked()
        server.shutdown()
    assert server.exit_code == 0
    assert (tmp_path / "out.log.1").read_bytes() == b"one\ntwo\n"
    assert server.summary is not None
    assert server.summary.outputs[0].reopenings == 0
    assert "still writing to the file open before" in caplog.text


async def test_forwarding_over_tls_checked_against_a_ca_file(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_ctx, _ = tls_contexts(ca)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    receiver = Receiver()

    async def tls_read(stream: trio.SocketStream, received: list[bytes]) -> None:
        tls = trio.SSLStream(stream, server_ctx, server_side=True)
        while data := await tls.receive_some(65536):
            received.append(bytes(data))

    receiver.on_connection = tls_read
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(receiver.serve)
            opts = options(
                tmp_path,
                output=None,
                forward=(("127.0.0.1", receiver.port),),
                forward_tls=True,
                forward_ca=str(ca_file),
                forward_framing="octet-counted",
            )
            server, code = await serve_clients(opts, 2, 50)
            nursery.cancel_scope.cancel()
    assert code == 0
    records = parse_octet_counted(receiver.data(0))
    for client in range(2):
        lines = b"".join(demo_lines(client, 50, seed=3)).splitlines()
        assert [record for record in records if record in lines] == lines  # in order
    assert len(records) == 100
    assert server.summary is not None
    forward = server.summary.outputs[0].forward
    assert forward is not None
    assert forward.records_sent == 100


async def test_one_shutdown_ends_even_with_a_target_that_never_reads(tmp_path: Path) -> None:
    """A target that accepts and never reads (``block``): its buffer fills, the readers
    wait for room; one shutdown still ends, and what that target did not take is lost."""
    stderr = io.StringIO()
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    held: list[trio.SocketStream] = []

    async def accept_and_never_read() -> None:
        while True:
            held.append(await listener.accept())

    line = b"x" * 99 + b"\n"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_and_never_read)
        port = listener.socket.getsockname()[1]
        opts = options(
            tmp_path,
            forward=(("127.0.0.1", port),),
            buffer=2,
            shutdown_timeout=0.2,
            drain_timeout=0.3,
        )
        server: LineServer = await nursery.start(partial(run_server, opts, stderr=stderr))
        stream = await trio.open_tcp_stream(*server.tcp_addresses[0])
        while True:  # until the server stops reading: every buffer on the way is full
            with trio.move_on_after(0.5) as blocked:
                await stream.send_all(line * 655)
            if blocked.cancelled_caught:
                break
        # The reader waits for room in the forward target's buffer: the status says so.
        assert " | blocked 1 | " in server.status_line(1.0, (0, 0))[0]
        server.shutdown()
        with trio.fail_after(10):
            await server.wait_finished()
        nursery.cancel_scope.cancel()
    for held_stream in (stream, *held, listener):
        await trio.aclose_forcefully(held_stream)
    assert server.exit_code == 1
    summary = server.summary
    assert summary is not None
    file_report, forward_report = summary.outputs
    assert file_report.lines_written > 0
    assert forward_report.lines_lost > 0
    assert summary.losses.lines["forced_shutdown"] + summary.losses.lines["drain_timeout"] > 0
    assert "shutdown timeout passed" in stderr.getvalue()
    # Every output accounts for every line that reached the outputs: written or lost,
    # the chunks a forced shutdown cut before an output got them included.
    reached = summary.lines + summary.losses.lines["forced_shutdown"]
    assert [out.lines_written + out.lines_lost for out in summary.outputs] == [reached] * 2
