"""The command line app sits on top of the library, never inside it.

* ``import trio_aggregator`` imports no module of ``trio_aggregator._serve``;
* no library module imports ``_serve`` (``__main__``, the command's entry point, aside);
* the modules of ``_serve`` use the library only through its public API: names that
  ``trio_aggregator/__init__.py`` binds, and the optional ``trio_aggregator.prometheus``.

The scans read the source with `ast`: imports, ``importlib.import_module("...")`` calls
with a constant name, and attribute access such as ``trio_aggregator._sinks``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import trio_aggregator

PACKAGE = "trio_aggregator"
APP = f"{PACKAGE}._serve"
PUBLIC_MODULES = frozenset({PACKAGE, f"{PACKAGE}.prometheus"})
PACKAGE_DIR = Path(trio_aggregator.__file__).parent
APP_DIR = PACKAGE_DIR / "_serve"
ENTRY_POINT = PACKAGE_DIR / "__main__.py"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_files() -> list[Path]:
    return sorted(
        path
        for path in PACKAGE_DIR.rglob("*.py")
        if APP_DIR not in path.parents and path != ENTRY_POINT
    )


def app_files() -> list[Path]:
    return sorted(APP_DIR.rglob("*.py"))


def public_names() -> frozenset[str]:
    """The names ``trio_aggregator/__init__.py`` binds, but private ones (``__version__`` in)."""
    names: set[str] = set()
    for node in ast.parse((PACKAGE_DIR / "__init__.py").read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return frozenset(name for name in names if not name.startswith("_") or name == "__version__")


class Import:
    """One import found in a module: what it reaches, and how."""

    def __init__(self, line: int, module: str, name: str | None, relative: bool) -> None:
        self.line = line
        self.module = module
        """The module imported from (absolute)."""
        self.name = name
        """The name taken from it (``from module import name``), or None."""
        self.relative = relative

    @property
    def targets(self) -> list[str]:
        """The modules this may load: the module, and ``module.name`` (it may be one)."""
        return [self.module] if self.name is None else [self.module, f"{self.module}.{self.name}"]

    def __repr__(self) -> str:
        name = f" import {self.name}" if self.name else ""
        return f"line {self.line}: {'relative ' if self.relative else ''}{self.module}{name}"


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every import in *source*, the module *module*, with relative ones made absolute."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(Import(node.lineno, alias.name, None, False) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                if node.level > len(parts):
                    anchor = "<beyond the top-level package>"
                else:
                    anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found.extend(
                Import(node.lineno, base, alias.name, node.level > 0) for alias in node.names
            )
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in ("importlib.import_module", "import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append(Import(node.lineno, node.args[0].value, None, False))
    return found


def private_attribute_uses(source: str) -> list[str]:
    """``trio_aggregator._x`` written as attribute access (after ``import trio_aggregator``)."""
    return [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and ast.unparse(node.value) == PACKAGE
        and node.attr.startswith("_")
        and node.attr != "__version__"
    ]


def app_violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """How the app module *module* reaches past the public API, if it does."""
    public = public_names()
    problems = private_attribute_uses(source)
    for imp in imports_of(source, module, is_package=is_package):
        if imp.module == APP or imp.module.startswith(f"{APP}."):
            continue  # the app's own modules
        if imp.relative:
            problems.append(f"{imp!r}: a relative import reaching outside {APP}")
        elif imp.module != PACKAGE and not imp.module.startswith(f"{PACKAGE}."):
            continue  # trio, attrs, the standard library...
        elif imp.module not in PUBLIC_MODULES:
            problems.append(f"{imp!r}: a private module of the library")
        elif imp.name is None:
            continue  # import trio_aggregator, import trio_aggregator.prometheus
        elif imp.module == PACKAGE and imp.name not in public:
            problems.append(f"{imp!r}: not a public name of {PACKAGE}")
        elif imp.module != PACKAGE and imp.name.startswith("_"):
            problems.append(f"{imp!r}: a private name")
    return problems


def library_violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """The imports of the app in the library module *module*, if any."""
    return [
        repr(imp)
        for imp in imports_of(source, module, is_package=is_package)
        if any(t == APP or t.startswith(f"{APP}.") for t in imp.targets)
    ]


# ---------------------------------------------------------------------------- (a) at run time


def test_importing_the_library_imports_no_app_module() -> None:
    code = textwrap.dedent(
        """
        import sys

        def app_modules():
            app = ["trio_aggregator", "_serve"]
            return sorted(m for m in sys.modules if m.split(".")[:2] == app)

        import trio_aggregator
        print("library:", app_modules())
        import trio_aggregator.prometheus
        print("prometheus:", app_modules())
        import trio_aggregator._serve._cli  # the check sees app modules once they are loaded
        print("app:", bool(app_modules()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.splitlines() == ["library: []", "prometheus: []", "app: True"]


# ---------------------------------------------------------------------------- (b) the library


def test_the_scans_see_every_module() -> None:
    library = {module_name(path) for path in library_files()}
    app = {module_name(path) for path in app_files()}
    assert {PACKAGE, f"{PACKAGE}._aggregator", f"{PACKAGE}._sinks", f"{PACKAGE}.prometheus"} <= (
        library
    )
    assert {APP, f"{APP}._cli", f"{APP}._server", f"{APP}._lines", f"{APP}._options"} <= app
    assert not library & app
    assert f"{PACKAGE}.__main__" not in library | app


def test_no_library_module_imports_the_app() -> None:
    problems = {
        module_name(path): library_violations(
            path.read_text(), module_name(path), is_package=path.name == "__init__.py"
        )
        for path in library_files()
    }
    assert {module: found for module, found in problems.items() if found} == {}


def test_the_entry_point_imports_only_the_command() -> None:
    """``python -m trio_aggregator`` runs the app: its one import of the package is `main`."""
    found = [
        imp
        for imp in imports_of(ENTRY_POINT.read_text(), f"{PACKAGE}.__main__")
        if imp.module.split(".")[0] == PACKAGE
    ]
    assert [(imp.module, imp.name) for imp in found] == [(f"{APP}._cli", "main")]


@pytest.mark.parametrize(
    "source",
    [
        "from ._serve import _cli",
        "from ._serve._cli import main",
        "from . import _serve",
        "import trio_aggregator._serve._server",
        "from trio_aggregator._serve import _options",
        "import importlib\nimportlib.import_module('trio_aggregator._serve._cli')",
    ],
)
def test_the_library_scan_finds_imports_of_the_app(source: str) -> None:
    assert library_violations(source, f"{PACKAGE}._sinks")


def test_the_library_scan_lets_library_imports_through() -> None:
    source = "from ._errors import AggregatorError\nfrom . import _config\nimport trio"
    assert library_violations(source, f"{PACKAGE}._aggregator") == []


# ---------------------------------------------------------------------------- (c) the app


def test_the_app_uses_only_the_public_api() -> None:
    problems = {
        module_name(path): app_violations(
            path.read_text(), module_name(path), is_package=path.name == "__init__.py"
        )
        for path in app_files()
    }
    assert {module: found for module, found in problems.items() if found} == {}


def test_the_public_names_are_those_of_the_package() -> None:
    names = public_names()
    assert {"FileSink", "AggregatorConfig", "open_aggregator", "__version__"} <= names
    assert all(hasattr(trio_aggregator, name) for name in names)
    assert "annotations" not in names


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("from trio_aggregator._sinks import FileSink", "a private module"),
        ("import trio_aggregator._config", "a private module"),
        ("from trio_aggregator import _sinks", "not a public name"),
        ("from trio_aggregator import Counters", "not a public name"),
        ("from .. import FileSink", "relative import reaching outside"),
        ("from .._config import AggregatorConfig", "relative import reaching outside"),
        ("from ... import something", "relative import reaching outside"),
        ("from trio_aggregator.prometheus import _PREFIX", "a private name"),
        ("import trio_aggregator\ntrio_aggregator._sinks.FileSink", "trio_aggregator._sinks"),
        ("import importlib\nimportlib.import_module('trio_aggregator._config')", "private"),
    ],
)
def test_the_app_scan_finds_private_imports(source: str, problem: str) -> None:
    found = app_violations(source, f"{APP}._server")
    assert len(found) == 1
    assert problem in found[0]


def test_the_app_scan_lets_public_imports_through() -> None:
    source = textwrap.dedent(
        """
        import trio
        import trio_aggregator
        import trio_aggregator.prometheus
        from trio_aggregator import FileSink, __version__
        from trio_aggregator.prometheus import AggregatorCollector
        from ._lines import LineSplitter
        from . import _checks
        importlib.import_module("trio_aggregator.prometheus")
        trio_aggregator.__version__
        """
    )
    assert app_violations(source, f"{APP}._server") == []
    assert app_violations("from ._options import ServeOptions", APP, is_package=True) == []
