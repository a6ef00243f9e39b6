"""Soak runs, outside the default checks: ``nox -s stress``."""

from __future__ import annotations
