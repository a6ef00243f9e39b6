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
* ``rsyslog_imtcp``: the newline input into ``rsyslogd`` (``imtcp`` -> ``omfile``,
  ``%rawmsg%``), the reference; it needs rsyslogd, and is skipped without it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from functools import partial
from typing import TYPE_CHECKING

import trio

from ._common import Measurement, Params, Span, clock, file_measurement, since

if TYPE_CHECKING:
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


def serve_case(framing: str, *, octet: bool) -> CaseFn:
    """A case running ``serve --framing FRAMING`` fed newline or octet-counted records."""

    def run(params: Params) -> Measurement:
        from trio_aggregator._serve._options import ServeOptions
        from trio_aggregator._serve._server import run_server

        output = os.path.join(params.workdir, "serve.log")
        data = records(params, octet=octet)
        expected = params.items * params.size
        options = ServeOptions(
            tcp=(("127.0.0.1", 0),),
            output=output,
            quiet=True,
            announce=False,
            framing=framing,  # type: ignore[arg-type]
            shutdown_idle=0.01,
        )

        async def main() -> tuple[Span, int]:
            with trio.fail_after(DEADLINE):
                async with trio.open_nursery() as nursery:
                    server = await nursery.start(partial(run_server, options))
                    aggregator = server.aggregator
                    assert aggregator is not None
                    t0 = clock()
                    await trio.to_thread.run_sync(
                        send_all, server.tcp_addresses[0], data, params.producers
                    )
                    while aggregator.statistics().bytes_written < expected:
                        await trio.sleep(0.001)
                    elapsed = since(t0)
                    calls = aggregator.statistics().writer_calls
                    server.shutdown()
            if server.exit_code != 0:
                raise AssertionError(f"serve exited {server.exit_code}")
            return elapsed, calls

        elapsed, calls = trio.run(main)
        return file_measurement(params, output, elapsed, calls, f"serve --framing {framing}")

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
