"""The ``trio-aggregator`` command line app (``serve`` and ``demo``), apart from the library.

Nothing here is imported by ``import trio_aggregator``; the app is built on the public
API of `trio_aggregator` only.
"""

from __future__ import annotations
