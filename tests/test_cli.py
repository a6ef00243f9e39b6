"""The ``trio-aggregator`` command (issue 4): arguments in-process, then the real thing.

The subprocess tests run ``python -m trio_aggregator serve`` against real loopback TCP
and Unix sockets, with clients in threads. Every wait is bounded: a server that does not
answer within `TIMEOUT` seconds fails the test and is killed.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import random
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
import trio

from trio_aggregator._serve import _cli as cli
from trio_aggregator._serve._cli import build_parser, main, parse_size
from trio_aggregator._serve._demo import demo_lines, verify_demo_output
from trio_aggregator._serve._options import ServeOptions

from .conftest import fail_first_file_write

if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from pathlib import Path

TIMEOUT = 30.0
"""The most seconds any one wait on a subprocess may take."""

needs_unix = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
needs_signals = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


# ---------------------------------------------------------------------------- in-process


def test_parse_size() -> None:
    assert parse_size("65536") == 65536
    assert parse_size("64K") == parse_size("64kib") == 65536
    assert parse_size(" 10M ") == 10 * 1024**2
    assert parse_size("1g") == 1024**3
    for bad in ("", "K", "-1", "1.5M", "10Q", "0"):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out
    assert main(["serve", "--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:" in text
    assert "--max-line-bytes" in text
    assert "truncated" in text
    assert main(["demo", "--help"]) == 0
    assert "examples:" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("trio-aggregator ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["bogus"], "invalid choice"),
        (["serve", "--tcp", "nohost"], "expected HOST:PORT"),
        (["serve", "--tcp", "127.0.0.1:99999"], "port must be"),
        (["serve", "--buffer", "0"], "N must be >= 1, not 0"),
        (["serve", "--max-connections", "x"], "not an integer"),
        (["serve", "--idle-timeout", "-1"], "SECONDS must be >= 0"),
        (["serve", "--fsync-interval", "soon"], "not a number of seconds"),
        (["serve", "--rotate-bytes", "10Q"], "not a size"),
        (["serve", "-o", "-", "--rotate-bytes", "1M"], "rotation needs a file output"),
        (["demo", "--clients", "0"], "N must be >= 1, not 0"),
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "usage:" in err
    assert "Traceback" not in err


def serve_options(*argv: str) -> ServeOptions:
    args = build_parser().parse_args(["serve", *argv])
    return cli._serve_options(args)  # pyright: ignore[reportPrivateUsage]


def test_serve_arguments_become_options() -> None:
    assert serve_options().tcp == (("127.0.0.1", 5140),)
    only_unix = serve_options("--unix", "/tmp/a.sock")
    assert (only_unix.tcp, only_unix.unix) == ((), ("/tmp/a.sock",))
    opts = serve_options(
        "--tcp", "[::1]:0", "--tcp", "127.0.0.1:1", "--max-connections", "0",
        "--idle-timeout", "30", "--rotate-bytes", "1M", "--max-line-bytes", "4K",
    )  # fmt: skip
    assert opts.tcp == (("::1", 0), ("127.0.0.1", 1))
    assert (opts.max_connections, opts.idle_timeout) == (None, 30.0)
    assert (opts.rotate_bytes, opts.max_line_bytes, opts.backups) == (1024**2, 4096, 5)
    assert serve_options("--max-connections", "10").max_connections == 10
    defaults = serve_options()
    assert (defaults.idle_timeout, defaults.line_timeout, defaults.max_per_address) == (60, 30, 64)
    never = serve_options("--idle-timeout", "0", "--line-timeout", "0", "--max-per-address", "0")
    assert (never.idle_timeout, never.line_timeout, never.max_per_address) == (None, None, None)


def test_serve_runs_the_server_with_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[ServeOptions, bool]] = []

    async def fake_run_server(options: ServeOptions, *, handle_signals: bool) -> int:
        seen.append((options, handle_signals))
        return 0

    monkeypatch.setattr(cli, "run_server", fake_run_server)
    assert main(["serve", "--tcp", "127.0.0.1:0", "-q"]) == 0
    assert seen == [(serve_options("--tcp", "127.0.0.1:0", "-q"), True)]


def test_unwritable_output_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--tcp", "127.0.0.1:0", "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"trio-aggregator: error: cannot open output {str(tmp_path)!r} for appending:"
        " Is a directory\n"
    )


def test_interrupted(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(trio, "run", interrupted)
    assert main(["demo"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_demo_in_process_logs_errors_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fail_first_file_write(monkeypatch)
    logger = logging.getLogger("trio_aggregator")
    handlers = list(logger.handlers)
    assert main(["demo", "--clients", "2", "--lines", "20", "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert "verification: FAILED" in out
    assert "trio-aggregator: ERROR: writer raised OSError(28, 'No space left on device')" in err
    assert "Traceback" not in err
    assert logger.handlers == handlers  # the CLI's handler is gone again


def test_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--clients", "3", "--lines", "30", "-q", "--seed", "5"]) == 0
    assert "verification: PASSED" in capsys.readouterr().out


def test_python_dash_m(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["trio-aggregator", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("trio_aggregator", run_name="__main__")
    assert exit_info.value.code == 0
    assert "trio-aggregator" in capsys.readouterr().out


def test_importing_main_runs_nothing() -> None:
    module = importlib.import_module("trio_aggregator.__main__")
    assert module.main is main


def test_no_traceback_formatter() -> None:
    try:
        raise OSError("boom")
    except OSError as exc:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed: %r", (exc,), None)
        record.exc_info = (type(exc), exc, exc.__traceback__)
    text = cli._log_handler().format(record)  # pyright: ignore[reportPrivateUsage]
    assert text == "trio-aggregator: ERROR: failed: OSError('boom')"


# ---------------------------------------------------------------------------- subprocesses


class Pipe(threading.Thread):
    """Reads a subprocess pipe to its end, so the subprocess never blocks on it."""

    def __init__(self, pipe: io.BufferedReader) -> None:
        super().__init__(daemon=True)
        self._pipe = pipe
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self.start()

    def run(self) -> None:
        while chunk := self._pipe.read1(65536):
            with self._lock:
                self._chunks.append(chunk)

    @property
    def data(self) -> bytes:
        with self._lock:
            return b"".join(self._chunks)

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")


class Server:
    """A ``trio-aggregator serve`` subprocess on a free loopback port."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trio_aggregator", "serve", "--tcp", "127.0.0.1:0", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.stdout = Pipe(self.proc.stdout)  # type: ignore[arg-type]
        self.stderr = Pipe(self.proc.stderr)  # type: ignore[arg-type]
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            for line in self.stderr.text.splitlines():
                if line.startswith("trio-aggregator: listening on 127.0.0.1:"):
                    return int(line.rpartition(":")[2])
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise AssertionError(f"the server did not start: {self.stderr.text}")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send *signum*, then wait for the exit status (and the end of the output)."""
        self.proc.send_signal(signum)
        return self.wait()

    def wait(self) -> int:
        rc = self.proc.wait(timeout=TIMEOUT)
        self.stdout.join(TIMEOUT)
        self.stderr.join(TIMEOUT)
        return rc

    def close(self) -> None:
        """Kill the server if it still runs; close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)
        self.stdout.join(TIMEOUT)
        self.stderr.join(TIMEOUT)
        for pipe in (self.proc.stdout, self.proc.stderr):
            assert pipe is not None
            pipe.close()


@contextlib.contextmanager
def running(cwd: Path, *args: str) -> Generator[Server]:
    server = Server(cwd, *args)
    try:
        yield server
    finally:
        server.close()


def connect(address: int | str) -> socket.socket:
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(address)
        return sock
    return socket.create_connection(("127.0.0.1", address), timeout=TIMEOUT)


class Steps:
    """Clients that stop at two points of their stream until the test lets them go on.

    A client sends its data up to its last *tail* lines and stops (step 0); once let go
    on, it sends those lines and stops again (step 1), before closing. So the test acts
    while every client is at the same point, whatever the machine's speed. Leaving the
    ``with`` block lets every client go on (a failed test does not keep them waiting).
    """

    def __init__(self, clients: int, tail: int) -> None:
        self.clients = clients
        self.tail = tail
        self._lock = threading.Lock()
        self._reached = [0, 0]
        self._go = [threading.Event(), threading.Event()]

    def stops(self, data: bytes) -> list[int]:
        """Where a client sending *data* stops: before its last lines, and at its end."""
        last = data.splitlines(keepends=True)[-self.tail :]
        return [len(data) - sum(map(len, last)), len(data)]

    def reached(self, step: int) -> None:
        """Called by a client at *step*: wait (bounded) until the test lets it go on."""
        with self._lock:
            self._reached[step] += 1
        self._go[step].wait(TIMEOUT)

    def wait_all(self, step: int, load: Future[None]) -> None:
        """Wait until every client has reached *step*; a client's error is raised."""
        wait_until(lambda: self._reached[step] == self.clients or load.done(), f"step {step}")
        if load.done():
            load.result()

    def go_on(self, step: int) -> None:
        self._go[step].set()

    def release_all(self) -> None:
        """Let every client go on, past every step."""
        for go in self._go:
            go.set()

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release_all()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll *condition* until it holds; fail if it does not within `TIMEOUT` seconds."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def send_chunked(
    address: int | str, data: bytes, seed: int, pause_every: int = 0, steps: Steps | None = None
) -> None:
    """Send *data* in chunks of 1 byte to 8 KiB, cut anywhere, then close.

    With *steps*, stop at each of its `Steps.stops` until the test lets the client go on.
    """
    chunks = random.Random(seed)
    stops = steps.stops(data) if steps is not None else [len(data)]
    try:
        with connect(address) as sock:
            position = n = 0
            for step, stop in enumerate(stops):
                while position < stop:
                    size = min(chunks.randint(1, 8192), stop - position)
                    sock.sendall(data[position : position + size])
                    position += size
                    n += 1
                    if pause_every and n % pause_every == 0:
                        time.sleep(0.002)
                if steps is not None:
                    steps.reached(step)
    except BaseException:
        if steps is not None:
            steps.release_all()  # the others need not wait: the test fails
        raise


def run_clients(
    jobs: list[tuple[int | str, bytes, int]], pause_every: int = 0, steps: Steps | None = None
) -> None:
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [
            pool.submit(send_chunked, address, data, seed, pause_every, steps)
            for address, data, seed in jobs
        ]
        for future in futures:
            future.result(timeout=TIMEOUT)


def summary_value(stderr: str, label: str) -> str:
    for line in stderr.splitlines():
        if line.startswith(f"  {label} "):
            return line[len(label) + 2 :].strip()
    raise AssertionError(f"no {label!r} in the summary: {stderr}")


@needs_unix
@needs_signals
def test_many_concurrent_clients_tcp_and_unix(tmp_path: Path) -> None:
    sock_path = str(tmp_path / "collector.sock")
    clients, lines = 40, 400
    with running(tmp_path, "--unix", sock_path, "-o", "out.log", "--quiet") as server:
        jobs: list[tuple[int | str, bytes, int]] = [
            (
                sock_path if client % 4 == 0 else server.port,
                b"".join(demo_lines(client, lines, 3)),
                client,
            )
            for client in range(clients)
        ]
        run_clients(jobs)
        assert server.stop() == 0
    verification = verify_demo_output(str(tmp_path / "out.log"), clients, lines, 3)
    assert verification.ok, verification.problems
    assert summary_value(server.stderr.text, "lines") == f"{clients * lines:,}"
    assert summary_value(server.stderr.text, "connections").startswith(f"{clients} ")
    assert not os.path.exists(sock_path)
    assert "Traceback" not in server.stderr.text


@needs_signals
def test_clients_dropping_mid_line(tmp_path: Path) -> None:
    good = [b"".join(demo_lines(client, 200, 11)) for client in range(10)]
    with running(tmp_path, "-o", "out.log", "--quiet") as server:
        run_clients([(server.port, data, n) for n, data in enumerate(good)])
        for n in range(5):  # a clean close after half a line: the half is kept
            with connect(server.port) as sock:
                sock.sendall(b"whole line %d\npartial line %d" % (n, n))
        for n in range(5):  # a reset after half a line: whatever arrived stays whole
            sock = connect(server.port)
            sock.sendall(b"reset line %d\nhalf" % n)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            sock.close()
        assert server.stop() == 0
    content = (tmp_path / "out.log").read_bytes()
    lines = content.splitlines(keepends=True)
    expected_good = {line for data in good for line in data.splitlines(keepends=True)}
    extra = [line for line in lines if line not in expected_good]
    for n in range(5):
        assert b"whole line %d\n" % n in extra
        assert b"partial line %d\n" % n in extra
    allowed = {b"whole line %d\n" % n for n in range(5)} | {
        b"partial line %d\n" % n for n in range(5)
    }
    allowed |= {b"reset line %d\n" % n for n in range(5)} | {b"half\n"}
    assert set(extra) <= allowed, extra
    without_extra = tmp_path / "good.log"
    without_extra.write_bytes(b"".join(line for line in lines if line in expected_good))
    assert verify_demo_output(str(without_extra), 10, 200, 11).ok


@needs_signals
def test_over_long_lines_are_truncated_in_bounded_memory(tmp_path: Path) -> None:
    huge = 96 * 1024 * 1024
    output = tmp_path / "out.log"
    with running(tmp_path, "-o", "out.log", "--quiet", "--max-line-bytes", "1000") as server:
        baseline_kib = peak_memory_kib(server.proc.pid)  # listening, nothing read yet
        with connect(server.port) as sock:
            sock.sendall(b"short\n" + b"A" * 5000 + b"\nafter\n")
        with connect(server.port) as sock:  # 96 MiB and no newline, then one
            block = b"B" * (1024 * 1024)
            for _ in range(huge // len(block)):
                sock.sendall(block)
            sock.sendall(b"\nend\n")
        with connect(server.port) as sock:  # never any newline
            sock.sendall(b"C" * 3000)
        wait_until(lambda: output.read_bytes().count(b"\n") == 6, "every line to be written")
        peak_kib = peak_memory_kib(server.proc.pid)
        assert server.stop() == 0
    lines = (tmp_path / "out.log").read_bytes().splitlines()
    first, second = [b"short", b"A" * 1000, b"after"], [b"B" * 1000, b"end"]
    assert sorted(lines) == sorted([*first, *second, b"C" * 1000])
    assert [line for line in lines if line in first] == first  # each connection's order
    assert [line for line in lines if line in second] == second
    stderr = server.stderr.text
    discarded = 4000 + (huge - 1000) + 2000
    assert summary_value(stderr, "truncated lines") == f"3 ({discarded:,} bytes discarded)"
    if baseline_kib is not None and peak_kib is not None:
        # Bounded: the peak grew by far less than the 96 MiB line (an eighth of it at most;
        # it grows by some KiB), whatever this interpreter and platform start with.
        growth_kib = peak_kib - baseline_kib
        assert growth_kib < huge // 1024 // 8, (
            f"the server's peak memory grew by {growth_kib} KiB, from {baseline_kib} KiB"
        )


def peak_memory_kib(pid: int) -> int | None:
    """The peak resident memory of a process (Linux), or None where unknown."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None  # pragma: no cover - every Linux has VmHWM


@needs_signals
def test_sigterm_under_load_loses_nothing(tmp_path: Path) -> None:
    """SIGTERM while every client is connected and lines of each wait unread.

    Each client sends all but its last 100 lines; once the server has written those, it
    is frozen (SIGSTOP) and the clients send their last lines, which wait in the sockets;
    the server then gets SIGTERM and SIGCONT, and the clients close only once it has
    begun stopping. No client sends after the signal: that would race the server, which
    at shutdown closes a connection silent for 0.2 s (what it sent before is read).
    """
    clients, lines = 20, 3000
    output = tmp_path / "out.log"
    steps = Steps(clients, tail=100)
    with running(tmp_path, "-o", "out.log", "--quiet", "--shutdown-timeout", "20") as server:
        jobs: list[tuple[int | str, bytes, int]] = [
            (server.port, b"".join(demo_lines(client, lines, 5)), client)
            for client in range(clients)
        ]
        heads = sum(steps.stops(data)[0] for _, data, _ in jobs)
        with ThreadPoolExecutor(max_workers=1) as pool, steps:
            load = pool.submit(run_clients, jobs, 4, steps)
            steps.wait_all(0, load)
            wait_until(lambda: output.stat().st_size == heads, "the first lines to be written")
            server.proc.send_signal(signal.SIGSTOP)
            _, status = os.waitpid(server.proc.pid, os.WUNTRACED)
            assert os.WIFSTOPPED(status)
            steps.go_on(0)
            steps.wait_all(1, load)  # the last lines are in the sockets, unread
            assert not load.done(), "the clients finished before the signal"
            server.proc.send_signal(signal.SIGTERM)
            server.proc.send_signal(signal.SIGCONT)
            wait_until(lambda: "SIGTERM: stopping" in server.stderr.text, "SIGTERM: stopping")
            steps.go_on(1)
            load.result(timeout=TIMEOUT)
        assert server.wait() == 0
    stderr = server.stderr.text
    assert "SIGTERM: stopping" in stderr
    verification = verify_demo_output(str(output), clients, lines, 5)
    assert verification.ok, verification.problems
    assert summary_value(stderr, "lost lines") == "0"


@needs_signals
def test_stdout_output(tmp_path: Path) -> None:
    data = b"".join(demo_lines(0, 500, 9))
    with running(tmp_path, "-o", "-") as server:
        run_clients([(server.port, data, 1)])
        assert server.stop(signal.SIGINT) == 0
    assert server.stdout.data == data
    assert "SIGINT: stopping" in server.stderr.text
    assert "summary" in server.stderr.text
    assert os.listdir(tmp_path) == []


@needs_signals
def test_rotation_while_clients_write(tmp_path: Path) -> None:
    clients, lines = 10, 600
    args = ("-o", "app.log", "--quiet", "--rotate-bytes", "64K", "--backups", "200")
    with running(tmp_path, *args, "--fsync-interval", "0.01") as server:
        jobs: list[tuple[int | str, bytes, int]] = [
            (server.port, b"".join(demo_lines(client, lines, 2)), client)
            for client in range(clients)
        ]
        run_clients(jobs, pause_every=2)
        assert server.stop() == 0
    names = set(os.listdir(tmp_path))
    rotations = len(names) - 1
    assert rotations >= 2, names
    assert names == {"app.log"} | {f"app.log.{n}" for n in range(1, rotations + 1)}
    files = [tmp_path / f"app.log.{n}" for n in range(rotations, 0, -1)] + [tmp_path / "app.log"]
    contents = [path.read_bytes() for path in files]
    assert all(content.endswith(b"\n") for content in contents[:-1])
    joined = tmp_path / "joined.log"
    joined.write_bytes(b"".join(contents))
    verification = verify_demo_output(str(joined), clients, lines, 2)
    assert verification.ok, verification.problems
    assert f"({rotations} rotations)" in summary_value(server.stderr.text, "output")


def run_command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_aggregator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_unwritable_output_subprocess(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    result = run_command("serve", "--tcp", "127.0.0.1:0", "-o", "file/out.log", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        "trio-aggregator: error: cannot open output 'file/out.log' for appending: Not a directory\n"
    )


def test_bad_arguments_subprocess(tmp_path: Path) -> None:
    result = run_command("serve", "--max-line-bytes", "lots", cwd=tmp_path)
    assert result.returncode == 2
    assert "argument --max-line-bytes: not a size: 'lots'" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_subprocess(tmp_path: Path) -> None:
    result = run_command("demo", "--clients", "10", "--lines", "300", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verification: PASSED - all 3,000 lines present exactly once" in result.stdout
    assert "lines/s" in result.stdout
    assert os.listdir(tmp_path) == []
