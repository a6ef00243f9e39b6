"""Interop (issue 10): a real rsyslogd (imtcp -> omfile) receiving ``serve --forward``.

rsyslog is restarted while clients stream lines into the server: forwarding resumes on
the same port, every line arrives whole and in each client's order; lines arrive twice
only across the reconnect (the resend window), and the summary's re-sent figure covers
them. rsyslog runs as a foreground process of the test's (`tests._rsyslog`); the test
fails under CI, and skips elsewhere, when rsyslogd is not installed.
"""

from __future__ import annotations

import io
import itertools
import re
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio

from trio_aggregator._serve._options import ServeOptions
from trio_aggregator._serve._server import LineServer, run_server

from ._rsyslog import Rsyslog, free_port

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

CLIENTS = 3
LINE = re.compile(rb"client-(\d+) (\d{7}) x{60}")
STREAM_AFTER_RESTART = 3000
"""Lines each client still sends once rsyslog is back."""


def rsyslog_body(port: int, out: Path) -> str:
    """The central rsyslog of the docs: imtcp on loopback into one file, as received."""
    return (
        'module(load="imtcp")\n'
        f'ruleset(name="central") {{ action(type="omfile" file="{out}" template="raw") }}\n'
        f'input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="central")\n'
    )


def check_arrivals(numbers: list[int], sent: int, reconnects: int) -> int:
    """Check one client's line numbers as rsyslog wrote them; return the duplicates.

    Each run of increasing numbers must be contiguous; a new run starts at most one past
    where the previous one ended (a resend starts earlier: duplicates, never a gap);
    there are at most ``reconnects + 1`` runs, the first from 0, the last up to the end.
    """
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    assert runs, "nothing arrived"
    assert len(runs) <= reconnects + 1, [(run[0], run[-1]) for run in runs]
    assert runs[0][0] == 0
    for before, after in itertools.pairwise(runs):
        assert after[0] <= before[-1] + 1, f"a gap: {before[-1]} then {after[0]}"
    assert max(numbers) == sent - 1
    assert set(numbers) == set(range(sent))
    return len(numbers) - sent


async def stream_through_a_restart(
    tmp_path: Path,
    framing: str,
    body: Callable[[int, Path], str] = rsyslog_body,
    **forward: object,
) -> tuple[LineServer, list[int], Path]:
    """Stream numbered lines through ``serve --forward`` into rsyslog, restarted mid-stream.

    *body* makes rsyslog's config (its port, its output file); *forward* are more
    `ServeOptions` (``forward_tls``...).
    """
    port = free_port()
    out = tmp_path / "central.log"
    rsyslog = Rsyslog(tmp_path / "rsyslog", body(port, out), listen_port=port)
    rsyslog.check_config()
    options = ServeOptions(
        tcp=(("127.0.0.1", 0),),
        output=None,
        forward=(("127.0.0.1", port),),
        forward_framing=framing,  # type: ignore[arg-type]
        quiet=True,
        shutdown_idle=0.05,
        **forward,  # type: ignore[arg-type]
    )
    sent = [0] * CLIENTS
    restarted = trio.Event()
    await trio.to_thread.run_sync(rsyslog.start)
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                server = await nursery.start(partial(run_server, options, stderr=io.StringIO()))
                address = server.tcp_addresses[0]

                async def client(n: int) -> None:
                    stream = await trio.open_tcp_stream(*address)
                    async with stream:
                        stop_at: int | None = None
                        while stop_at is None or sent[n] < stop_at:
                            first = sent[n]
                            sent[n] += 20
                            await stream.send_all(
                                b"".join(
                                    b"client-%d %07d %s\n" % (n, i, b"x" * 60)
                                    for i in range(first, sent[n])
                                )
                            )
                            await trio.sleep(0.002)
                            if stop_at is None and restarted.is_set():
                                stop_at = sent[n] + STREAM_AFTER_RESTART

                async def restart() -> None:
                    while min(sent) < 5000:  # mid-stream
                        await trio.sleep(0.01)
                    await trio.to_thread.run_sync(rsyslog.stop)
                    await trio.sleep(0.5)  # down: the lines wait in the forward buffer
                    await trio.to_thread.run_sync(rsyslog.start)
                    restarted.set()

                async with trio.open_nursery() as clients:
                    for n in range(CLIENTS):
                        clients.start_soon(client, n)
                    clients.start_soon(restart)
                server.shutdown()
                await server.wait_finished()
    finally:
        await trio.to_thread.run_sync(rsyslog.stop)  # it writes what it has queued first
    return server, sent, out


@pytest.mark.parametrize("framing", ["lines", "octet-counted"])
async def test_forwarding_to_rsyslog_survives_its_restart(tmp_path: Path, framing: str) -> None:
    server, sent, out = await stream_through_a_restart(tmp_path, framing)
    check_central_log(server, sent, out)


def check_central_log(server: LineServer, sent: list[int], out: Path) -> None:
    """Every line arrived whole, in each client's order; duplicates only as counted re-sent."""
    assert server.exit_code == 0
    summary = server.summary
    assert summary is not None
    forward = summary.outputs[0].forward
    assert forward is not None
    assert forward.reconnects >= 1  # rsyslog really went away mid-stream
    assert forward.records_sent == sum(sent)
    numbers: dict[int, list[int]] = {n: [] for n in range(CLIENTS)}
    for line in out.read_bytes().splitlines():
        match = LINE.fullmatch(line)
        assert match, f"not a whole line: {line[:120]!r}"
        numbers[int(match[1])].append(int(match[2]))
    duplicates = sum(
        check_arrivals(numbers[n], sent[n], forward.reconnects) for n in range(CLIENTS)
    )
    assert duplicates <= forward.records_resent  # every duplicate is counted as re-sent


def test_the_arrival_check_finds_gaps_reordering_and_uncounted_duplicates() -> None:
    assert check_arrivals([0, 1, 2, 3], 4, 0) == 0
    assert check_arrivals([0, 1, 2, 1, 2, 3], 4, 1) == 2  # a resend across one reconnect
    with pytest.raises(AssertionError, match="a gap"):
        check_arrivals([0, 1, 3], 4, 1)
    with pytest.raises(AssertionError):
        check_arrivals([0, 2, 1, 3], 4, 1)  # reordered: three runs for one reconnect
    with pytest.raises(AssertionError):
        check_arrivals([0, 1, 0, 1, 2], 3, 0)  # duplicates without a reconnect
    with pytest.raises(AssertionError):
        check_arrivals([0, 1], 3, 0)  # the last line missing
