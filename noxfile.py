"""Check sessions: `nox` runs lint, typecheck, tests, docs; `nox -s bench` runs benchmarks.

Not in the default run: ``nox -s tests_all`` (the tests on each Python 3.10-3.13 found
here), ``nox -s build`` (sdist and wheel, checked), ``nox -s bench`` and ``nox -s stress``
(a soak of the serve command, then of the library). The test and docs dependencies
are the ``test`` and ``docs`` extras of ``pyproject.toml``.
"""

from __future__ import annotations

import glob
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

LINT_DEPS = ["ruff>=0.15"]
TYPE_DEPS = ["mypy>=1.18", "pyright>=1.1.400"]  # with the test extra (prometheus-client)
BENCH_DEPS = ["anyio>=4.4", "matplotlib>=3.8"]
BUILD_DEPS = ["build>=1.2", "twine>=5"]

PYTHONS = ("3.10", "3.11", "3.12", "3.13")  # the versions the classifiers claim


def _find_python(version: str) -> str | bool:
    """``python<version>`` on PATH, else in pyenv's versions; False when there is none.

    pyenv puts a shim on PATH for every version, which fails for a version that is not
    selected: behind a shim, the interpreter is looked up in pyenv's versions directly.
    """
    found = shutil.which(f"python{version}")
    if found and f"{os.sep}shims{os.sep}" not in found:
        return found
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for path in sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin"))):
        if os.access(os.path.join(path, f"python{version}"), os.X_OK):
            return os.path.join(path, f"python{version}")
    return False


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite with branch coverage (fails under 95 %)."""
    session.install("-e", ".[test]")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "report", "--fail-under=95")


@nox.session
@nox.parametrize(("python", "version"), [(_find_python(v), v) for v in PYTHONS], ids=list(PYTHONS))
def tests_all(session: nox.Session, version: str) -> None:
    """Run the test suite on each Python 3.10-3.13 found here; a missing one is skipped."""
    if session.python is False:
        session.skip(f"Python {version} not found on this machine (looked on PATH and in pyenv)")
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*LINT_DEPS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict and pyright (strict) on the package."""
    session.install("-e", ".[test]", *TYPE_DEPS)
    session.run("mypy", "--strict", "trio_aggregator")
    python = session.run("python", "-c", "import sys; print(sys.executable)", silent=True)
    assert isinstance(python, str)
    session.run("pyright", "--pythonpath", python.strip(), "trio_aggregator")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx docs with warnings as errors (nitpicky), offline."""
    session.install("-e", ".[docs]")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-n", "-b", "html", "docs", "docs/_build/html"
    )


@nox.session
def build(session: nox.Session) -> None:
    """Build the sdist and the wheel, check them, and import the wheel in a fresh venv."""
    session.install(*BUILD_DEPS)
    dist = Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist), ".")
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        session.error(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}")
    session.run("twine", "check", "--strict", str(wheels[0]), str(sdists[0]))

    with zipfile.ZipFile(wheels[0]) as wheel:
        names = wheel.namelist()
    for wanted in ("trio_aggregator/py.typed", ".dist-info/licenses/LICENSE"):
        if not any(name == wanted or name.endswith(wanted) for name in names):
            session.error(f"{wheels[0].name} lacks {wanted}")
    session.log(f"{wheels[0].name} holds trio_aggregator/py.typed and LICENSE")
    with tarfile.open(sdists[0]) as sdist:
        names = [name.split("/", 1)[-1] for name in sdist.getnames()]
    for wanted in ("LICENSE", "CHANGELOG.md", "noxfile.py", "benchmarks/__main__.py"):
        if wanted not in names:
            session.error(f"{sdists[0].name} lacks {wanted}")
    session.log(f"{sdists[0].name} holds LICENSE, CHANGELOG.md and benchmarks/ (nox -s bench)")

    venv = dist.parent / "wheel-venv"
    shutil.rmtree(venv, ignore_errors=True)
    session.run("python", "-m", "venv", str(venv))
    python = str(venv / "bin" / "python")
    session.run(python, "-m", "pip", "install", "--quiet", str(wheels[0]), external=True)
    check = (
        "import trio_aggregator, importlib.metadata as m;"
        " assert trio_aggregator.__version__ == m.version('trio-aggregator'),"
        " (trio_aggregator.__version__, m.version('trio-aggregator'));"
        " print('installed wheel: trio-aggregator', trio_aggregator.__version__)"
    )
    session.run(python, "-c", check, external=True)
    session.run(str(venv / "bin" / "trio-aggregator"), "--version", external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmark suite (``nox -s bench -- --smoke`` for a tiny run)."""
    session.install("-e", ".", *BENCH_DEPS)
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def stress(session: nox.Session) -> None:
    """Soak ``serve``, then the library (1,000 producers x 1,000,000 items, then 10x).

    Arguments go to the serve soak: ``nox -s stress -- --duration 60 --clients 200``.
    """
    session.install("-e", ".")
    session.run("python", "-m", "benchmarks.serve_soak", *session.posargs)
    session.run("python", "-m", "benchmarks.library_soak")
