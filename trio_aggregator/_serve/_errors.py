"""`ServeError`: why ``serve`` cannot start, in one line (its own module: every input raises it)."""

from __future__ import annotations

__all__ = ["ServeError"]


class ServeError(Exception):
    """The server cannot start (output not writable, address in use, ...): one clear line."""
