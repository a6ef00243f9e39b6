"""Records that are not text: `BinaryRecords` counts them, and rejects them if told to.

A *binary record* holds a NUL byte (where NUL does not end a record: ``--framing lines``,
``--no-nul-terminator``, any octet-counted frame) or is not valid UTF-8: a pickle from
`logging.handlers.SocketHandler`, a compressed or encrypted stream sent to the wrong
port. With the ``keep`` policy (the default) it is written like any other record and
counted; with ``reject`` it is not written, and counted lost (reason ``binary``), in
lines and bytes.

The check costs two C scans of each chunk of complete records (``isascii`` and a search
for NUL); only a chunk that fails them is looked at record by record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["BINARY_POLICIES", "BinaryPolicy", "BinaryRecords", "is_binary"]

BinaryPolicy = Literal["keep", "reject"]
BINARY_POLICIES: tuple[BinaryPolicy, ...] = ("keep", "reject")


def is_binary(record: bytes, *, nul: bool) -> bool:
    """Whether *record* is invalid UTF-8, or holds a NUL byte when *nul* is true."""
    if nul and b"\0" in record:
        return True
    if record.isascii():
        return False
    try:
        record.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


class BinaryRecords:
    """Counts the binary records of one connection; drops them under ``reject``.

    Args:
        policy: ``"keep"`` (write them) or ``"reject"`` (hand them to *on_reject*).
        nul_is_binary: Whether a NUL byte makes a record binary (False where NUL ends
            a record, so none is left in one).
        on_reject: Called with each rejected record, newline included (the server
            counts it lost).
    """

    __slots__ = ("_nul", "_on_reject", "_reject", "records")

    def __init__(
        self,
        policy: BinaryPolicy,
        *,
        nul_is_binary: bool,
        on_reject: Callable[[bytes], object] | None = None,
    ) -> None:
        if policy not in BINARY_POLICIES:
            raise ValueError(f"binary policy must be 'keep' or 'reject', not {policy!r}")
        self._reject = policy == "reject"
        self._nul = nul_is_binary
        self._on_reject = on_reject
        self.records = 0
        """Binary records met (written or rejected)."""

    def check(self, chunk: bytes) -> bytes:
        """*chunk* (records, each ending in a newline) less the binary ones it rejects."""
        if chunk.isascii():
            if not self._nul or b"\0" not in chunk:
                return chunk
        elif not self._nul or b"\0" not in chunk:
            try:
                chunk.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                return chunk
        return self._per_record(chunk)

    def _per_record(self, chunk: bytes) -> bytes:
        records = chunk.split(b"\n")
        last = records.pop()  # b"" when the chunk ends with a newline
        kept = [record for record in records if self.keep(record, self._nul)]
        kept.append(last if not last or self.keep(last, self._nul, newline=b"") else b"")
        return b"\n".join(kept)

    def keep(self, record: bytes, nul: bool, *, newline: bytes = b"\n") -> bool:
        """Count *record* if it is binary; whether to write it (False: rejected, counted)."""
        if not is_binary(record, nul=nul):
            return True
        self.records += 1
        if not self._reject:
            return True
        if self._on_reject is not None:
            self._on_reject(record + newline)
        return False
