"""Every file under ``examples/`` runs, and its output is checked (issues 9 and 12).

The recipes check their own output and print ``verified``; the examples the docs open
with are checked here. structlog and loguru are test dependencies (the ``test`` extra),
never runtime ones: these tests need them and do not skip without them.
"""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# The examples that check their own output and end by printing "verified".
SELF_CHECKING: dict[str, tuple[str, ...]] = {
    "structlog_json.py": (),
    "loguru_sink.py": (),
    "thread_print.py": (),
    "quickstart_pieces.py": (),
    "prometheus_metrics.py": ("--port", "0"),  # any free port
    "writer_errors.py": (),
    "logging_handler.py": (),
}
# The examples whose output a test below checks.
CHECKED_HERE = (
    "first_example.py",
    "log_server.py",
    "graceful_shutdown.py",
    "send_lines.py",
    "syslog_handler.py",
)


def run_example(
    name: str, *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` as a reader would, in a fresh interpreter; assert exit 0."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_every_example_is_run_and_checked() -> None:
    names = {path.name for path in EXAMPLES.glob("*.py")}
    assert names == set(SELF_CHECKING) | set(CHECKED_HERE)


@pytest.mark.parametrize("name", SELF_CHECKING)
def test_the_recipe_runs_and_verifies_itself(name: str) -> None:
    result = run_example(name, *SELF_CHECKING[name])
    assert result.stdout.splitlines()[-1] == "verified"
    assert result.stderr == ""


def _lines_by_source(text: str) -> dict[str, list[str]]:
    """``"name: rest"`` lines grouped by name, in file order."""
    by_source: dict[str, list[str]] = {}
    for line in text.splitlines():
        source, rest = line.split(": ", 1)
        by_source.setdefault(source, []).append(rest)
    return by_source


def test_the_first_example_writes_every_line_whole_and_in_order(tmp_path: Path) -> None:
    result = run_example("first_example.py", cwd=tmp_path)
    assert result.stdout == result.stderr == ""
    text = (tmp_path / "out.log").read_text()
    assert text.endswith("\n")
    expected = [f"line {i}" for i in range(3)]
    assert _lines_by_source(text) == dict.fromkeys(("alpha", "beta", "gamma"), expected)


CLIENTS = 8
LINES_PER_CLIENT = 300
SHELL_LINES = ("shell: one", "shell: two", "shell: three")


def _client_lines(client: int) -> list[bytes]:
    """Lines of varied length; the last one of odd clients has no newline."""
    lines = [
        b"client%d: line %04d %s\n" % (client, i, b"x" * (i % 97)) for i in range(LINES_PER_CLIENT)
    ]
    if client % 2:
        lines[-1] = lines[-1].rstrip(b"\n")
    return lines


async def _log_client(port: int, client: int) -> None:
    """Send this client's lines in chunks that cut lines, then wait for the server's close.

    Once the server has closed the connection, it has read every line of it, so a stop
    asked for afterwards must write them all.
    """
    data = b"".join(_client_lines(client))
    chunk = 700 + 13 * client
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        for start in range(0, len(data), chunk):
            await stream.send_all(data[start : start + chunk])
        await stream.send_eof()
        assert await stream.receive_some() == b""


async def _read_until_newline(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some()
        assert chunk, f"the server exited before saying where it listens: {data!r}"
        data += chunk
    return data


async def _run_until_signalled(
    name: str, *args: str, while_running: Callable[[bytes], Awaitable[object]]
) -> tuple[bytes, bytes]:
    """Run ``examples/<name>``; once it has printed its first line, await
    *while_running* (with that line), send it SIGTERM and check that it exits 0 with
    nothing on stderr. Returns its first line and the rest of its output."""
    command = [sys.executable, str(EXAMPLES / name), *args]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        with trio.fail_after(60):
            banner = await _read_until_newline(process.stdout)
            await while_running(banner)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
            rest = b"".join([chunk async for chunk in process.stdout])
            errors = b"".join([chunk async for chunk in process.stderr])
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert errors == b""
    return banner, rest


async def test_the_log_server_example_writes_every_line_of_every_client(tmp_path: Path) -> None:
    output = tmp_path / "server.log"

    async def send_from_clients(banner: bytes) -> None:
        assert banner.startswith(b"listening on port ")
        port = int(banner.split()[-1])
        async with trio.open_nursery() as clients:
            for client in range(CLIENTS):
                clients.start_soon(_log_client, port, client)
        # And the serving page's client, as a reader would run it.
        command = [sys.executable, str(EXAMPLES / "send_lines.py"), "--port", str(port)]
        await trio.run_process([*command, *SHELL_LINES])

    _, rest = await _run_until_signalled(
        "log_server.py", "--port", "0", "--output", str(output), while_running=send_from_clients
    )
    total = CLIENTS * LINES_PER_CLIENT + len(SHELL_LINES)
    assert rest.decode() == f"{total} lines written to {output}\n"
    text = output.read_bytes()
    assert text.endswith(b"\n")
    by_client: dict[bytes, list[bytes]] = {}
    for line in text.splitlines(keepends=True):
        by_client.setdefault(line.split(b":", 1)[0], []).append(line)
    expected = {
        b"client%d" % c: [line.rstrip(b"\n") + b"\n" for line in _client_lines(c)]
        for c in range(CLIENTS)
    }
    expected[b"shell"] = [line.encode() + b"\n" for line in SHELL_LINES]
    assert by_client == expected  # every line whole, none lost or doubled, each client's order


async def test_the_shutdown_example_writes_every_tick_it_accepted(tmp_path: Path) -> None:
    output = tmp_path / "ticks.log"

    async def some_ticks(banner: bytes) -> None:
        assert banner == b"running: stop it with Ctrl+C or SIGTERM\n"
        while not output.exists() or output.stat().st_size < 30:
            await trio.sleep(0.01)  # a few ticks written: a real process, real time

    _, rest = await _run_until_signalled(
        "graceful_shutdown.py", "--output", str(output), while_running=some_ticks
    )
    lines = output.read_text().splitlines()
    assert len(lines) >= 3
    assert lines == [f"tick {i}" for i in range(len(lines))]
    assert rest.decode() == f"stopped: {len(lines)} lines written, 0 dropped\n"


def _readme_block_after(heading: str) -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"\n{heading}\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```\n", 1)[0]


def test_the_readme_example_is_the_first_example_file() -> None:
    assert _readme_block_after("## Example") == (EXAMPLES / "first_example.py").read_text()


@pytest.mark.parametrize("page", ["index.rst", "quickstart.rst"])
def test_the_docs_open_with_the_first_example_file(page: str) -> None:
    text = (ROOT / "docs" / page).read_text()
    include = text.index(".. literalinclude:: ../examples/first_example.py")
    assert ".. code-block:: python" not in text[:include]  # no other Python example first


def test_the_recipe_libraries_are_test_dependencies() -> None:
    root = ROOT
    pyproject = (root / "pyproject.toml").read_text()
    runtime = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]  # one line: trio, attrs
    test_extra = pyproject.split("\ntest = [", 1)[1].split("\n]", 1)[0]
    noxfile = (root / "noxfile.py").read_text()
    assert 'session.install("-e", ".[test]")' in noxfile  # the tests session's one list
    for name in ("structlog", "loguru"):
        assert name not in runtime
        assert f'"{name}' in test_extra


def _docstring_lines(source: str) -> set[int]:
    """The line numbers of the module's, classes' and functions' docstrings."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def test_the_log_server_is_40_lines_of_code() -> None:
    """The tutorial's title says so: lines that are not blank, comments or docstrings."""
    source = (EXAMPLES / "log_server.py").read_text()
    docstrings = _docstring_lines(source)
    code = [
        line
        for number, line in enumerate(source.splitlines(), 1)
        if number not in docstrings and line.strip() and not line.lstrip().startswith("#")
    ]
    assert len(code) <= 40
    assert "A Trio log server in 40 lines" in (ROOT / "docs" / "tutorial.rst").read_text()


def test_the_python_in_the_docs_comes_from_examples() -> None:
    """Python shown in the docs is a file of examples/ (included), so the tests run it.

    A fragment where a whole program would be silly is allowed when the comment
    ``.. fragment: <why>`` stands right above its ``code-block``.
    """
    unmarked: list[str] = []
    for page in sorted((ROOT / "docs").glob("*.rst")):
        lines = page.read_text().splitlines()
        for number, line in enumerate(lines):
            if line.strip() in (".. code-block:: python", ".. code-block:: py"):
                above = [text.strip() for text in lines[max(0, number - 2) : number]]
                if not any(text.startswith(".. fragment:") for text in above):
                    unmarked.append(f"{page.name}:{number + 1}")
            if line.strip().startswith(".. literalinclude::"):
                target = (page.parent / line.split("::", 1)[1].strip()).resolve()
                assert target.parent == EXAMPLES, f"{page.name}:{number + 1}"
                assert target.exists(), f"{page.name}:{number + 1}"
    assert unmarked == [], "Python in the docs that is not an included example"
    readme = (ROOT / "README.md").read_text()
    assert readme.count("```python") == 1  # the first example, checked above


async def test_the_syslog_handler_example_gives_one_line_per_message(tmp_path: Path) -> None:
    """examples/syslog_handler.py against a real ``serve`` with its default options."""
    from trio_aggregator._serve._options import ServeOptions
    from trio_aggregator._serve._server import LineServer, run_server

    output = tmp_path / "out.log"
    options = ServeOptions(tcp=(("127.0.0.1", 0),), output=str(output), quiet=True)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server: LineServer = await nursery.start(run_server, options)
            port = str(server.tcp_addresses[0][1])
            result = await trio.to_thread.run_sync(
                lambda: run_example(
                    "syslog_handler.py", "--port", port, "--threads", "3", "--count", "200"
                )
            )
            assert result.stdout.strip() == "sent 600 messages"
            while not output.exists() or output.read_bytes().count(b"\n") < 600:
                await trio.sleep(0.05)
            server.shutdown()
            await server.wait_finished()
    assert server.exit_code == 0
    data = output.read_bytes()
    assert b"\0" not in data
    lines = data.decode().splitlines()
    assert len(lines) == 600
    for worker in range(3):
        mine = [line for line in lines if f"worker {worker} message " in line]
        assert [int(line.rsplit(" ", 1)[1]) for line in mine] == list(range(200))
