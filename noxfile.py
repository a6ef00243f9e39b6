"""Check sessions: `nox` runs lint, typecheck, tests, docs; `nox -s bench` runs benchmarks.

`nox -s stress` soaks the serve command (not in the default run).
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

TEST_DEPS = [
    "pytest>=9",
    "pytest-trio>=0.8",
    "hypothesis>=6.150",
    "coverage[toml]>=7.10",
    "prometheus-client>=0.20",  # the optional trio_aggregator.prometheus (tests, typecheck)
    "radon>=6",  # tests/test_code_shape.py: no function of the library above complexity 12
]
LINT_DEPS = ["ruff>=0.15"]
TYPE_DEPS = ["mypy>=1.18", "pyright>=1.1.400", *TEST_DEPS]
DOCS_DEPS = ["sphinx>=8", "sphinxcontrib-trio>=1.1", "furo>=2024.8"]
BENCH_DEPS = ["anyio>=4.4", "matplotlib>=3.8"]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite with branch coverage (fails under 95 %)."""
    session.install("-e", ".", *TEST_DEPS)
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "report", "--fail-under=95")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*LINT_DEPS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict and pyright (strict) on the package."""
    session.install("-e", ".", *TYPE_DEPS)
    session.run("mypy", "--strict", "trio_aggregator")
    python = session.run("python", "-c", "import sys; print(sys.executable)", silent=True)
    assert isinstance(python, str)
    session.run("pyright", "--pythonpath", python.strip(), "trio_aggregator")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx docs with warnings as errors (nitpicky)."""
    session.install("-e", ".[prometheus]", *DOCS_DEPS)  # the extra: its API page
    session.run(
        "sphinx-build", "-W", "--keep-going", "-n", "-b", "html", "docs", "docs/_build/html"
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmark suite (``nox -s bench -- --smoke`` for a tiny run)."""
    session.install("-e", ".", *BENCH_DEPS)
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def stress(session: nox.Session) -> None:
    """Soak ``serve`` (``nox -s stress -- --duration 60 --clients 200 --garbage 20``)."""
    session.install("-e", ".")
    session.run("python", "-m", "stress.serve_soak", *session.posargs)
