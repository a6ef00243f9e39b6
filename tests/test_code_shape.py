"""The library stays readable: small functions, classes and modules (radon, ast)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from radon.complexity import cc_visit

PACKAGE = Path(__file__).resolve().parent.parent / "trio_aggregator"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_COMPLEXITY = 12
MAX_CLASS_LINES = 350
MAX_MODULE_LINES = 450


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_the_package_has_modules() -> None:
    assert len(MODULES) > 10


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_function_is_too_branchy(path: Path) -> None:
    blocks = cc_visit(path.read_text())
    branchy = [
        f"{block.fullname} ({block.complexity})"
        for block in blocks
        if block.complexity > MAX_COMPLEXITY
    ]
    assert not branchy, f"cyclomatic complexity above {MAX_COMPLEXITY}: {branchy}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_modules_and_classes_are_small(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_CLASS_LINES, f"class {node.name} is {lines} lines"
