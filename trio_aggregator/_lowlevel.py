"""The only module that uses `trio.lowlevel`: checkpoints, KI protection, the task guard.

It also reads the run's `trio.lowlevel.TrioToken`, which `trio.from_thread` needs to
call into the aggregator's run from other threads.

Writes follow Trio's own `trio.MemorySendChannel.send`: a cancellation check before
anything happens, and a shielded checkpoint after it succeeded. Sections that change
several counts together are protected from `KeyboardInterrupt` the way Trio's own
primitives are, with `enable_ki_protection`.
"""

from __future__ import annotations

from contextvars import ContextVar

from trio.lowlevel import (
    Task,
    TrioToken,
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
    current_task,
    current_trio_token,
    enable_ki_protection,
)

__all__ = [
    "ReceiverGuard",
    "TrioToken",
    "cancel_shielded_checkpoint",
    "checkpoint",
    "checkpoint_if_cancelled",
    "current_trio_token",
    "enable_ki_protection",
    "in_run_of",
]

_RECEIVER: ContextVar[ReceiverGuard | None] = ContextVar("trio_aggregator_receiver", default=None)
"""Set in the receiver task: a worker thread it starts (``writer_thread``) copies it, and so
does a `trio.from_thread` call from that thread."""


def in_run_of(token: TrioToken) -> bool:
    """Whether the calling thread is inside the Trio run of *token*."""
    try:
        return current_trio_token() is token
    except RuntimeError:  # not in a Trio run
        return False


class ReceiverGuard:
    """Knows the receiver task, so that what would wait for it from inside it fails loudly.

    The writer, ``sync_fn`` and the dead-letter hook run in the receiver task: a write
    that waits for room, a `flush` or a `stop` from there would wait for itself. So would
    a `Aggregator.write_from_thread` that waits, from a writer run in a worker thread
    (``writer_thread``): the receiver's context travels with it.
    """

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: Task | None = None

    def enter(self) -> None:
        """Called by the receiver task as it starts."""
        self._task = current_task()
        _RECEIVER.set(self)

    def refuse(self, what: str) -> None:
        """Raise `RuntimeError` if the current task is the receiver, or acts for it."""
        if self._task is not None and (current_task() is self._task or _RECEIVER.get() is self):
            raise RuntimeError(
                f"{what}() cannot wait from inside the writer, sync_fn or the dead-letter hook:"
                " the receiver task would wait for itself"
            )
