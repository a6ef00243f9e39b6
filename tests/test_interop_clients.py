"""Real syslog clients against ``serve`` with its default options (issue 10, item 7).

util-linux ``logger`` (traditional and octet-counted), the stdlib ``SysLogHandler``
(NUL after each message) and ``SocketHandler`` (pickles), and rsyslog's ``omfwd``
(traditional and octet-counted framing). Loopback only; every test has a deadline; a
missing program fails under CI and skips elsewhere (`require_program`).
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import socket
import threading
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio

from trio_aggregator._serve._options import ServeOptions
from trio_aggregator._serve._server import LineServer, run_server

from ._rsyslog import Rsyslog, free_port, require_program

if TYPE_CHECKING:
    from pathlib import Path

DEADLINE = 60.0
"""Seconds any one test may take (they take about one)."""


async def start_server(
    nursery: trio.Nursery, tmp_path: Path, **kwargs: object
) -> tuple[LineServer, Path]:
    """``serve`` with its default options, but a free loopback port and no status line."""
    output = tmp_path / "out.log"
    values: dict[str, object] = {
        "tcp": (("127.0.0.1", 0),),
        "output": str(output),
        "quiet": True,
    }
    values.update(kwargs)
    options = ServeOptions(**values)  # type: ignore[arg-type]
    server: LineServer = await nursery.start(partial(run_server, options))
    return server, output


async def wait_for_lines(output: Path, count: int) -> None:
    """Wait until *output* holds *count* lines (the test's deadline bounds the wait)."""
    while not output.exists() or output.read_bytes().count(b"\n") < count:
        await trio.sleep(0.05)


async def stop(server: LineServer) -> int:
    server.shutdown()
    await server.wait_finished()
    assert server.exit_code is not None
    return server.exit_code


def numbers(lines: list[bytes], pattern: bytes) -> list[int]:
    """The sequence number each line holds (*pattern* has one group); every line has one."""
    regex = re.compile(pattern)
    found = [regex.search(line) for line in lines]
    assert all(match is not None for match in found), [
        line for line, match in zip(lines, found, strict=True) if match is None
    ][:3]
    return [int(match.group(1)) for match in found if match is not None]


async def relay_through_rsyslog(rsyslog: Rsyslog, port_in: int, output: Path, count: int) -> None:
    """Start *rsyslog*, send it *count* numbered messages on *port_in*, wait for them in
    *output* (serve's file), then stop rsyslog (even when the deadline ran out)."""
    await trio.to_thread.run_sync(rsyslog.start)
    try:
        payload = b"".join(
            b"<13>interop: rsyslog %06d %s\n" % (i, b"y" * (i % 70)) for i in range(count)
        )
        stream = await trio.open_tcp_stream("127.0.0.1", port_in)
        async with stream:
            await stream.send_all(payload)
        await wait_for_lines(output, count)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(rsyslog.stop)


def check_relayed(output: Path, count: int) -> None:
    """*output* holds the messages of `relay_through_rsyslog`, one line each, in order."""
    lines = output.read_bytes().splitlines()
    assert len(lines) == count
    assert numbers(lines, rb"^<13>.* interop: rsyslog (\d{6}) y*$") == list(range(count))


# ---------------------------------------------------------------------------- logger


@pytest.mark.parametrize("octet_count", [False, True], ids=["traditional", "octet-counted"])
async def test_util_linux_logger(tmp_path: Path, octet_count: bool) -> None:
    logger = require_program("logger")
    count = 20_000
    source = tmp_path / "messages.txt"
    source.write_text("".join(f"interop message {i:06d} {'x' * (i % 50)}\n" for i in range(count)))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            server, output = await start_server(nursery, tmp_path)
            port = server.tcp_addresses[0][1]
            argv = [logger, "--tcp", "-n", "127.0.0.1", "-P", str(port), "-t", "interop"]
            argv += ["--octet-count"] if octet_count else []
            await trio.run_process([*argv, "-f", str(source)])
            await wait_for_lines(output, count)
            assert await stop(server) == 0
    lines = output.read_bytes().splitlines()
    assert len(lines) == count
    assert numbers(lines, rb" interop - - .* interop message (\d{6}) x*$") == list(range(count))
    assert server.summary is not None
    stats = server.summary.server
    assert (stats.framing_errors, stats.binary_records, stats.lines_truncated) == (0, 0, 0)


# ---------------------------------------------------------------------------- logging handlers


async def test_stdlib_syslog_handler_from_threads(tmp_path: Path) -> None:
    threads, per_thread = 8, 2_000
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            server, output = await start_server(nursery, tmp_path)
            handler = logging.handlers.SysLogHandler(
                server.tcp_addresses[0], socktype=socket.SOCK_STREAM
            )
            log = logging.getLogger(f"interop.{id(handler)}")
            log.propagate = False
            log.addHandler(handler)
            log.setLevel(logging.INFO)

            def emit(thread: int) -> None:
                for i in range(per_thread):
                    log.info("thread %d record %05d", thread, i)

            def run_threads() -> None:
                workers = [threading.Thread(target=emit, args=(t,)) for t in range(threads)]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()
                handler.close()

            try:
                await trio.to_thread.run_sync(run_threads)
            finally:
                log.removeHandler(handler)
                handler.close()
            await wait_for_lines(output, threads * per_thread)
            assert await stop(server) == 0
    data = output.read_bytes()
    assert b"\0" not in data
    lines = data.splitlines()
    assert len(lines) == threads * per_thread
    assert all(line.startswith(b"<14>thread ") for line in lines)
    for thread in range(threads):
        mine = [line for line in lines if line.startswith(b"<14>thread %d " % thread)]
        assert numbers(mine, rb"record (\d{5})$") == list(range(per_thread))


def send_pickles(address: tuple[str, int], count: int) -> None:
    handler = logging.handlers.SocketHandler(*address)
    log = logging.getLogger(f"interop.pickles.{id(handler)}")
    log.propagate = False
    log.addHandler(handler)
    try:
        for i in range(count):
            log.warning("pickled record %d", i)
    finally:
        log.removeHandler(handler)
        handler.close()


async def test_stdlib_socket_handler_pickles_are_counted_binary(tmp_path: Path) -> None:
    """Default options: written (cut at LF and NUL), counted binary; see docs/syslog.rst."""
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            server, output = await start_server(nursery, tmp_path)
            await trio.to_thread.run_sync(send_pickles, server.tcp_addresses[0], 200)
            await trio.testing.wait_all_tasks_blocked()
            await stop(server)
    assert server.summary is not None
    assert server.summary.server.binary_records >= 200  # each pickle holds invalid UTF-8
    assert b"\0" not in output.read_bytes()  # NUL ended records
    assert server.summary.losses.total_lines == 0


async def test_socket_handler_pickles_rejected(tmp_path: Path) -> None:
    """``--framing lines --no-nul-terminator --binary reject``: binary lines are not written.

    A pickle is cut at each LF byte it holds; the pieces holding a NUL byte or invalid
    UTF-8 are rejected, counted lost; a short piece that is neither (``X`` before a
    length of 10) is text, and written.
    """
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            server, output = await start_server(
                nursery, tmp_path, framing="lines", nul_terminates=False, binary="reject"
            )
            await trio.to_thread.run_sync(send_pickles, server.tcp_addresses[0], 200)
            await trio.testing.wait_all_tasks_blocked()
            assert await stop(server) == 1  # rejected records are counted lost
    assert server.summary is not None
    rejected = server.summary.losses.lines["binary"]
    assert rejected >= 200
    assert server.summary.server.binary_records == rejected
    assert b"\0" not in output.read_bytes()
    assert f"binary {rejected:,}" in server.summary.losses.describe()


# ---------------------------------------------------------------------------- rsyslog omfwd


@pytest.mark.parametrize("framing", ["traditional", "octet-counted"])
async def test_rsyslog_forwards_to_serve(tmp_path: Path, framing: str) -> None:
    # One worker on the forwarding ruleset: with the main queue's workers, rsyslog may
    # forward over two connections or out of order (seen in tests/test_rsyslog_tls.py).
    count = 50_000
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            server, output = await start_server(nursery, tmp_path)
            port_in = free_port()
            rsyslog = Rsyslog(
                tmp_path / "rsyslog",
                f"""
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{port_in}" ruleset="forward")
ruleset(name="forward" queue.type="LinkedList" queue.workerThreads="1") {{
    action(type="omfwd" target="127.0.0.1" port="{server.tcp_addresses[0][1]}"
           protocol="tcp" TCP_Framing="{framing}")
}}
""",
                listen_port=port_in,
            )
            await relay_through_rsyslog(rsyslog, port_in, output, count)
            assert await stop(server) == 0
    check_relayed(output, count)
    assert server.summary is not None
    assert server.summary.server.framing_errors == 0
