"""Every file under ``examples/`` runs, and its output is checked (issues 9 and 12).

The recipes check their own output and print ``verified``; the examples the docs open
with are checked here. structlog and loguru are test dependencies (the ``test`` extra),
never runtime ones: these tests need them and do not skip without them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# The examples that check their own output and end by printing "verified".
SELF_CHECKING = ("structlog_json.py", "loguru_sink.py", "thread_print.py")
# The examples whose output a test below checks.
CHECKED_HERE = ("first_example.py",)


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
    result = run_example(name)
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
