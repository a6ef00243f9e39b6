"""``python -m trio_aggregator``: the ``trio-aggregator`` command."""

from __future__ import annotations

from ._serve._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
