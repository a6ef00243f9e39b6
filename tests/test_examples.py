"""The recipes under ``examples/`` run, and check their own output (issue 9).

structlog and loguru are test dependencies (``TEST_DEPS`` in noxfile.py, the ``test``
extra), never runtime ones: these tests need them and do not skip without them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_the_recipes_are_there() -> None:
    names = {path.name for path in EXAMPLES.glob("*.py")}
    assert {"structlog_json.py", "loguru_sink.py", "thread_print.py"} <= names


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda path: path.name)
def test_the_example_runs_and_verifies_itself(path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "verified"
    assert result.stderr == ""


def test_the_recipe_libraries_are_test_dependencies() -> None:
    root = EXAMPLES.parent
    pyproject = (root / "pyproject.toml").read_text()
    runtime = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]  # one line: trio, attrs
    test_extra = pyproject.split("\ntest = [", 1)[1].split("\n]", 1)[0]
    noxfile = (root / "noxfile.py").read_text()
    assert 'session.install("-e", ".[test]")' in noxfile  # the tests session's one list
    for name in ("structlog", "loguru"):
        assert name not in runtime
        assert f'"{name}' in test_extra
