"""Benchmark suite of trio_aggregator: ``python -m benchmarks [--smoke]`` from the repository root.

See ``python -m benchmarks --help`` and docs/performance.rst.
"""

from __future__ import annotations
