"""``trio-aggregator demo``: the line collector under load, checked line by line.

It starts the ``serve`` server (`LineServer`) on an ephemeral loopback port, with its
output in a fresh temporary directory, and runs many clients at once. Each client
sends its lines in chunks of random sizes, so lines are cut at arbitrary places between
``send`` calls, as they are on a real network. Then the server shuts down gracefully
and the file is checked: every line present exactly once, none interleaved or garbled,
each connection's lines in the order they were sent.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING, TextIO

import attrs
import trio

from ._checks import count, flag
from ._options import ServeOptions
from ._server import LineServer
from ._statistics import ServeSummary, format_table

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["DemoOptions", "Verification", "demo_lines", "run_demo", "verify_demo_output"]

_ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
_PAYLOAD = _ALPHABET * 160  # 10 KiB: the longest payload plus any offset fits
_MAX_PROBLEMS = 10


@attrs.frozen(kw_only=True)
class DemoOptions:
    """What ``trio-aggregator demo`` is told on its command line (checked as `ServeOptions` is)."""

    clients: int = attrs.field(default=50, validator=count())
    """Concurrent connections."""

    lines: int = attrs.field(default=2000, validator=count())
    """Lines sent by each connection."""

    output: str | None = None
    """The output file (it must not exist, or be empty); None: in a temporary directory."""

    keep: bool = attrs.field(default=False, validator=flag)
    """Keep the temporary directory and its file."""

    seed: int = 0
    """Seed of the line lengths and chunk sizes."""

    buffer: int = attrs.field(default=256, validator=count())
    """The server's ``--buffer``."""

    quiet: bool = attrs.field(default=False, validator=flag)
    """No status line from the server."""


def demo_lines(client: int, count: int, seed: int) -> Iterator[bytes]:
    """The lines client number *client* sends, in order; each ends with a newline.

    Mostly 30 to 250 bytes, one in fifty between 1 and 8 KiB; each names its client and
    sequence number, and its payload is fixed by them, so a garbled line is detected.
    """
    random_ = random.Random(f"{seed}/{client}").random
    alphabet = len(_ALPHABET)
    for seq in range(count):
        draw = random_()
        size = 1024 + int(draw * 359_000) if draw < 0.02 else int(draw * 225)
        offset = int(random_() * alphabet)
        yield b"client %04d line %07d %s\n" % (client, seq, _PAYLOAD[offset : offset + size])


@attrs.frozen(kw_only=True)
class Verification:
    """The result of `verify_demo_output`."""

    expected: int
    """Lines that should be in the file."""
    found: int
    """Lines in the file."""
    good: int
    """Lines that were exactly the next expected line of their client."""
    missing: int
    duplicated: int
    out_of_order: int
    garbled: int
    """Lines matching no line that was sent: interleaved, cut or corrupted."""
    problems: tuple[str, ...]
    """The first few problems, described."""

    @property
    def ok(self) -> bool:
        """Every line present exactly once, none garbled, each client's order kept."""
        return self.good == self.expected == self.found


def _numbers(line: bytes) -> tuple[int, int]:
    """The client and sequence numbers a demo line starts with; (-1, -1) if it does not."""
    client, seq = line[7:11], line[17:24]
    if line[:7] == b"client " and line[11:17] == b" line " and client.isdigit() and seq.isdigit():
        return int(client), int(seq)
    return -1, -1


def verify_demo_output(path: str, clients: int, lines: int, seed: int) -> Verification:
    """Check the file the demo's server wrote (see the module docs)."""
    with open(path, "rb") as file:
        content = file.read()
    expected = [list(demo_lines(client, lines, seed)) for client in range(clients)]
    following = [0] * clients
    good = duplicated = out_of_order = garbled = skipped = 0
    problems: list[str] = []

    def problem(text: str) -> None:
        if len(problems) < _MAX_PROBLEMS:
            problems.append(text)

    found = 0
    for number, line in enumerate(content.splitlines(keepends=True), 1):
        found += 1
        client, seq = _numbers(line)
        if not (0 <= client < clients and 0 <= seq < lines and expected[client][seq] == line):
            garbled += 1
            problem(f"line {number}: not a line any client sent: {line[:60]!r}...")
        elif seq == following[client]:
            good += 1
            following[client] += 1
        elif seq < following[client]:
            duplicated += 1
            problem(f"line {number}: client {client} line {seq} again")
        else:
            out_of_order += 1
            skipped += seq - following[client]
            problem(f"line {number}: client {client} line {seq} before line {following[client]}")
            following[client] = seq + 1
    missing = skipped + sum(lines - n for n in following)
    if missing:
        problem(f"{missing} line(s) missing")
    return Verification(
        expected=clients * lines,
        found=found,
        good=good,
        missing=missing,
        duplicated=duplicated,
        out_of_order=out_of_order,
        garbled=garbled,
        problems=tuple(problems),
    )


async def _client(client: int, host: str, port: int, data: bytes, seed: int) -> None:
    """Connect, send *data* in chunks of random sizes (1 byte to 8 KiB), close."""
    view = memoryview(data)
    chunks = random.Random(f"{seed}/{client}/chunks")
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        position = 0
        while position < len(view):
            size = chunks.randint(1, 8192)
            await stream.send_all(view[position : position + size])
            position += size


def _prepare_output(output: str | None) -> tuple[str, str | None]:
    """The file to write and the temporary directory made for it (None if given)."""
    if output is None:
        temp_dir = tempfile.mkdtemp(prefix="trio-aggregator-demo-")
        return os.path.join(temp_dir, "aggregated.log"), temp_dir
    if os.path.exists(output) and os.path.getsize(output):
        raise ValueError(
            f"{output!r} exists and is not empty: the demo verifies a fresh file;"
            " remove it or choose another --output"
        )
    return output, None


async def run_demo(
    options: DemoOptions, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run the demo; 0 if the file passed verification (and nothing was lost), else 1."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        path, temp_dir = _prepare_output(options.output)
    except ValueError as exc:
        print(f"trio-aggregator: error: {exc}", file=err)
        return 1
    try:
        return await _run(options, path, temp_dir, out, err)
    finally:
        if temp_dir is not None and not options.keep:
            shutil.rmtree(temp_dir, ignore_errors=True)


async def _run(
    options: DemoOptions, path: str, temp_dir: str | None, out: TextIO, err: TextIO
) -> int:
    payloads = [
        b"".join(demo_lines(client, options.lines, options.seed))
        for client in range(options.clients)
    ]
    server = LineServer(
        ServeOptions(
            tcp=(("127.0.0.1", 0),),
            output=path,
            buffer=options.buffer,
            quiet=options.quiet,
            announce=False,
            shutdown_idle=0.05,  # every client has closed: no need to wait for more
        ),
        stderr=err,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        host, port = server.tcp_addresses[0]
        print(
            f"trio-aggregator demo: {options.clients} clients x {options.lines:,} lines"
            f" -> {host}:{port} -> {path}",
            file=out,
            flush=True,
        )
        async with trio.open_nursery() as clients:
            for client in range(options.clients):
                clients.start_soon(_client, client, host, port, payloads[client], options.seed)
        server.shutdown()
    summary = server.summary
    assert summary is not None
    verification = await trio.to_thread.run_sync(
        verify_demo_output, path, options.clients, options.lines, options.seed
    )
    kept = " (kept)" if temp_dir is None or options.keep else " (removed)"
    print(format_table(_rows(summary, verification, path + kept)), file=out)
    if verification.ok and summary.ok:
        print(
            f"verification: PASSED - all {verification.expected:,} lines present exactly once,"
            " none interleaved, each connection's order kept",
            file=out,
            flush=True,
        )
        return 0
    print("verification: FAILED", file=out)
    for text in verification.problems:
        print(f"  - {text}", file=out)
    if not summary.ok:
        print(f"  - the server lost data: {summary.aggregator!r}", file=out)
    out.flush()
    return 1


def _rows(summary: ServeSummary, verification: Verification, output: str) -> list[tuple[str, str]]:
    return [
        ("connections", f"{summary.server.connections_total:,}"),
        ("lines", f"{verification.found:,} in the file, {verification.expected:,} sent"),
        ("bytes", f"{summary.aggregator.bytes_written:,}"),
        ("seconds", f"{summary.seconds:.2f}"),
        *summary.throughput_rows(),
        ("output", output),
    ]
