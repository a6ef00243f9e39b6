"""The ``serve`` cases: the collector under load on loopback, by input framing.

Each repetition starts a ``serve`` (its `LineServer`, in this process, with the default
options but a free loopback port, no status line and the file in the work directory),
then *producers* client threads each send their share of the lines over one TCP
connection, as fast as the server reads; the time runs from the first connection to
the moment the output holds every byte. Every case writes the same file: lines of
``size`` bytes, the newline included.

* ``serve_lines``: newline-delimited input, ``--framing lines`` (the `LineSplitter`);
* ``serve_newline``: the same input with the default framing (``auto``);
* ``serve_octet``: the same records octet-counted (``LEN SP MSG``, RFC 6587), default
  framing;
* ``serve_forward``: the newline input, default framing, forwarded (``--forward``, no
  file) to a target process on loopback that reads and counts the bytes; the time runs
  until the target holds every byte;
* ``serve_forward_octet``: the same with ``--forward-framing octet-counted`` (the target
  waits for the framed byte total);
* ``rsyslog_imtcp``: the newline input into ``rsyslogd`` (``imtcp`` -> ``omfile``,
  ``%rawmsg%``), the reference; it needs rsyslogd, and is skipped without it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ._common import Measurement, Params, Span, clock, file_measurement, since

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from trio.abc import ReceiveStream

    from trio_aggregator import Aggregator

    from ._common import CaseFn

DEADLINE = 300.0
"""Seconds a repetition may take before it is declared stuck."""


def records(params: Params, *, octet: bool) -> bytes:
    """What one connection sends: its share of the lines, newline-ended or octet-counted."""
    text = b"x" * (params.size - 1)
    record = b"%d %s" % (len(text), text) if octet else text + b"\n"
    return record * params.per_producer


def send_all(address: tuple[str, int], data: bytes, producers: int) -> None:
    """*producers* threads each send *data* over a connection of their own, then close."""

    def client() -> None:
        with socket.create_connection(address) as sock:
            sock.sendall(data)

    threads = [threading.Thread(target=client) for _ in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


async def timed_serve(
    params: Params, data: bytes, done: Callable[[Aggregator], Awaitable[object]], **options: Any
) -> tuple[Span, int]:
    """Run ``serve`` (loopback, default options but *options*), send it *data* from each
    of *params*' producers, and time it until ``done(aggregator)`` returns.

    Returns:
        The time and the first output's writer calls.
    """
    from trio_aggregator._serve._options import ServeOptions
    from trio_aggregator._serve._server import run_server

    settings = ServeOptions(
        tcp=(("127.0.0.1", 0),), quiet=True, announce=False, shutdown_idle=0.01, **options
    )
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, settings))
        aggregator = server.aggregator
        assert aggregator is not None
        t0 = clock()
        await trio.to_thread.run_sync(send_all, server.tcp_addresses[0], data, params.producers)
        await done(aggregator)
        elapsed = since(t0)
        calls = aggregator.statistics().writer_calls
        server.shutdown()
    if server.exit_code != 0:
        raise AssertionError(f"serve exited {server.exit_code}")
    return elapsed, calls


def serve_case(framing: str, *, octet: bool) -> CaseFn:
    """A case running ``serve --framing FRAMING`` fed newline or octet-counted records."""

    def run(params: Params) -> Measurement:
        output = os.path.join(params.workdir, "serve.log")
        expected = params.items * params.size

        async def written(aggregator: Aggregator) -> None:
            while aggregator.statistics().bytes_written < expected:
                await trio.sleep(0.001)

        async def main() -> tuple[Span, int]:
            with trio.fail_after(DEADLINE):
                data = records(params, octet=octet)
                return await timed_serve(params, data, written, output=output, framing=framing)

        elapsed, calls = trio.run(main)
        return file_measurement(params, output, elapsed, calls, f"serve --framing {framing}")

    return run


TARGET = r"""
import socket, sys
expected = int(sys.argv[1])
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
total = 0
while total < expected:
    conn, _ = listener.accept()
    with conn:
        while chunk := conn.recv(1 << 20):
            if total < expected <= total + len(chunk):
                print("all", flush=True)
            total += len(chunk)
print(total, flush=True)
"""
"""The forward target: prints its port, ``all`` once it holds *expected* bytes, and the
byte total once the connection that brought them is closed."""


def forwarded_bytes(params: Params, framing: str) -> int:
    """What the target receives for the lines of *params* forwarded with *framing*."""
    if framing == "lines":
        return params.items * params.size
    return params.items * len(b"%d %s" % (params.size - 1, b"x" * (params.size - 1)))


class _Lines:
    """The lines of a child's standard output, one at a time."""

    def __init__(self, stream: ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> str:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise AssertionError("the forward target ended early")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


def forward_case(framing: str) -> CaseFn:
    """A case running ``serve --forward`` (``--forward-framing FRAMING``), newline input."""

    def run(params: Params) -> Measurement:
        expected = forwarded_bytes(params, framing)
        argv = [sys.executable, "-c", TARGET, str(expected)]

        async def main() -> tuple[Span, int, int]:
            with trio.fail_after(DEADLINE):
                async with trio.open_nursery() as nursery:
                    run_target = partial(trio.run_process, argv, stdout=subprocess.PIPE)
                    target: trio.Process = await nursery.start(run_target)
                    assert target.stdout is not None
                    lines = _Lines(target.stdout)
                    port = int(await lines.next())

                    async def received_all(_: Aggregator) -> None:
                        if await lines.next() != "all":
                            raise AssertionError("the forward target said something else")

                    elapsed, calls = await timed_serve(
                        params,
                        records(params, octet=False),
                        received_all,
                        output=None,
                        forward=(("127.0.0.1", port),),
                        forward_framing=framing,
                    )
                    received = int(await lines.next())
            return elapsed, calls, received

        elapsed, calls, received = trio.run(main)
        if received != expected:
            raise AssertionError(f"the forward target got {received} bytes, expected {expected}")
        # The CPU figure is this process's (server and clients); the target is another one.
        return Measurement(
            items=params.items,
            nbytes=params.items * params.size,
            elapsed=elapsed[0],
            cpu=elapsed[1],
            writer_calls=calls,
        )

    return run


def rsyslogd() -> str | None:
    """The path of rsyslogd, or None."""
    return shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for(predicate: object, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def rsyslog_imtcp(params: Params) -> Measurement:
    """rsyslogd, ``imtcp`` -> ``omfile``, fed the newline input of ``serve_newline``."""
    binary = rsyslogd()
    if binary is None:
        raise RuntimeError("rsyslogd is not installed")
    data = records(params, octet=False)
    expected = params.items * params.size
    with tempfile.TemporaryDirectory(prefix="bench-rsyslog-", dir=params.workdir) as work:
        output = os.path.join(work, "out.log")
        port = _free_port()
        config = os.path.join(work, "rsyslog.conf")
        with open(config, "w") as f:
            f.write(
                f'global(workDirectory="{work}" maxMessageSize="64k")\n'
                'template(name="raw" type="string" string="%rawmsg%\\n")\n'
                'module(load="imtcp")\n'
                f'input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="r")\n'
                f'ruleset(name="r") {{ action(type="omfile" file="{output}" template="raw") }}\n'
            )
        proc = subprocess.Popen(
            [binary, "-n", "-f", config, "-i", os.path.join(work, "pid")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for(lambda: _accepts(port) or proc.poll() is not None, "rsyslogd to listen")
            t0 = clock()
            send_all(("127.0.0.1", port), data, params.producers)
            _wait_for(
                lambda: os.path.exists(output) and os.path.getsize(output) >= expected,
                "rsyslogd to write every line",
            )
            elapsed = since(t0)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # The CPU figure is this process's only (rsyslogd is another one): wall time counts.
        return file_measurement(params, output, elapsed, 0, "rsyslogd")
