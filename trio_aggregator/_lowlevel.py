"""The only module that uses `trio.lowlevel`: checkpoints, KI protection, the task guard.

Writes follow Trio's own `trio.MemorySendChannel.send`: a cancellation check before
anything happens, and a shielded checkpoint after it succeeded. Sections that change
several counts together are protected from `KeyboardInterrupt` the way Trio's own
primitives are, with `enable_ki_protection`.
"""

from __future__ import annotations

from trio.lowlevel import (
    Task,
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
    current_task,
    enable_ki_protection,
)

__all__ = [
    "ReceiverGuard",
    "cancel_shielded_checkpoint",
    "checkpoint",
    "checkpoint_if_cancelled",
    "enable_ki_protection",
]


class ReceiverGuard:
    """Knows the receiver task, so that what would wait for it from inside it fails loudly.

    The writer, ``sync_fn`` and the dead-letter hook run in the receiver task: a write
    that waits for room, a `flush` or a `stop` from there would wait for itself.
    """

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: Task | None = None

    def enter(self) -> None:
        """Called by the receiver task as it starts."""
        self._task = current_task()

    def refuse(self, what: str) -> None:
        """Raise `RuntimeError` if the current task is the receiver."""
        if self._task is not None and current_task() is self._task:
            raise RuntimeError(
                f"{what}() cannot wait from inside the writer, sync_fn or the dead-letter hook:"
                " the receiver task would wait for itself"
            )
