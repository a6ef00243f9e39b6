"""Threads: the guard that keeps other threads off a run's Trio state, and the bridge.

Trio's objects belong to the thread that runs Trio. A run records that thread's id and
its `trio.lowlevel.TrioToken` when it starts; every method that touches the run's state
compares `threading.get_ident` with the recorded id first (one integer comparison on the
hot path), and the bridge (`Aggregator.write_from_thread`) calls into the run with
`trio.from_thread`, in the run's system nursery.
"""

from __future__ import annotations

from contextlib import contextmanager
from threading import get_ident
from typing import TYPE_CHECKING, TypeVar

import trio

from ._errors import AggregatorClosedError
from ._lowlevel import in_run_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator

    from ._lowlevel import TrioToken

T = TypeVar("T")

__all__ = [
    "closed_when_run_ends",
    "foreign_thread_error",
    "get_ident",
    "run_in_trio",
    "run_sync_in_trio",
    "trio_token_for",
]

INSTEAD = (
    "from another thread, use Aggregator.write_from_thread() or write_from_thread_nowait(),"
    " or trio.from_thread.run() to call into the aggregator's Trio run"
)


def foreign_thread_error(method: str) -> RuntimeError:
    """The error for *method* (``"Aggregator.write"``) called from a foreign thread."""
    return RuntimeError(
        f"{method}() was called from a thread that is not the aggregator's Trio thread; {INSTEAD}"
    )


def trio_token_for(
    token: TrioToken | None, owner: int | None, method: str, instead: str
) -> TrioToken:
    """The token to call into the run with, from a thread other than its own.

    Raises:
        AggregatorClosedError: the aggregator was never started.
        RuntimeError: called from the run's own Trio thread (where *instead* is the way).
    """
    if token is None:
        raise AggregatorClosedError("the aggregator is not running")
    if get_ident() == owner and in_run_of(token):
        raise RuntimeError(
            f"Aggregator.{method}() was called from the aggregator's Trio thread, where it"
            f" would block the event loop: use {instead} there"
        )
    return token


@contextmanager
def closed_when_run_ends() -> Generator[None, None, None]:
    """Turn "the Trio run has ended (or is ending)" into `AggregatorClosedError`.

    The bridge always passes the token, so its calls run in the run's system nursery:
    `trio.Cancelled` there only means that the run is ending.
    """
    try:
        yield
    except trio.RunFinishedError:
        raise AggregatorClosedError("the aggregator's Trio run has ended") from None
    except trio.Cancelled as exc:
        raise AggregatorClosedError("the aggregator's Trio run is ending") from exc


def run_in_trio(token: TrioToken, afn: Callable[[bytes], Awaitable[T]], item: bytes) -> T:
    """``await afn(item)`` in the run of *token*, blocking this thread until it returns."""
    with closed_when_run_ends():
        return trio.from_thread.run(afn, item, trio_token=token)


def run_sync_in_trio(token: TrioToken, fn: Callable[[bytes], T], item: bytes) -> T:
    """``fn(item)`` in the run of *token*, as soon as the event loop takes it."""
    with closed_when_run_ends():
        return trio.from_thread.run_sync(fn, item, trio_token=token)
