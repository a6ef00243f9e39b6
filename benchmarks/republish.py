"""Redraw the docs' charts and tables from a published run, without running anything.

``python -m benchmarks.republish`` reads ``docs/_static/benchmarks.json`` (the run that
``python -m benchmarks --publish`` published), draws the charts into ``docs/_static``
and rewrites the tables of ``docs/performance.rst``: the figures stay those of that
run. Use it after changing how the charts or tables look.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .aggregator_cases import MemoryResult
from .charts import draw_charts
from .report import Row, Target, full_report, published_header, update_docs_page
from .scaling import BlockedResult

if TYPE_CHECKING:
    from collections.abc import Sequence

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "docs" / "_static"
DOCS_PAGE = ROOT / "docs" / "performance.rst"


def _build(cls: type[Any], data: dict[str, Any]) -> Any:
    """An instance of the dataclass *cls* from its JSON dict (null back to NaN)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: math.nan if v is None else v for k, v in data.items() if k in names})


def republish(path: Path, static: Path, page: Path) -> list[Path]:
    """Draw the charts of *path* into *static* and rewrite the tables of *page*."""
    data = json.loads(path.read_text())
    rows = [_build(Row, r) for r in data["rows"]]
    tables = full_report(
        rows,
        [_build(MemoryResult, m) for m in data["memory"]],
        data["startstop"],
        data["micro_ns"],
        [_build(Target, t) for t in data["targets"]],
        data["meta"].get("skipped", {}),
        [_build(BlockedResult, b) for b in data["blocked"]],
        rst=True,
    )
    if not update_docs_page(page, published_header(data["meta"]) + "\n\n" + tables):
        raise SystemExit(f"{page} has no benchmark-results markers")
    charts = draw_charts(static, "benchmarks", rows)
    if charts is None:
        raise SystemExit("the charts need matplotlib: python -m pip install matplotlib")
    return charts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.republish", description=__doc__)
    parser.add_argument("--json", type=Path, default=STATIC / "benchmarks.json")
    args = parser.parse_args(argv)
    for chart in republish(args.json, STATIC, DOCS_PAGE):
        print(f"chart: {chart}")
    print(f"tables: {DOCS_PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
