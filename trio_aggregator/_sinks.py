"""Ready-made writers: `FileSink`, `RotatingFileSink` and `StreamSink`.

Each sink is meant to be the ``writer`` of one `Aggregator`, so it is called by one
task at a time and never needs to order writes itself. They all accept what the
aggregator hands over: `bytes` (``batch_join=True``, the default) or a `list` of
`bytes` (``batch_join=False``), which they join.

The file sinks never block the event loop: their ``async`` methods run the blocking
system calls (`os.write`, `os.fsync`, the renames of a rotation) in a worker thread with
`trio.to_thread.run_sync`. A cancelled call waits for its thread to finish, so a write
is never half-known. A file write is all or nothing: a write that fails part way (disk
full) cuts what it had appended, so the file only ever holds whole batches. The same
work is available as plain methods (`FileSink.write_blocking`, ...) for a writer run
with ``writer_thread=True`` or for code outside Trio.
"""

from __future__ import annotations

import os
import stat
import threading
from typing import TYPE_CHECKING, TypeAlias

import trio

from ._lowlevel import checkpoint

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["FileSink", "RotatingFileSink", "StreamSink"]

Data: TypeAlias = "bytes | bytearray | memoryview | list[bytes]"
"""What a sink accepts: one buffer, or the list of a ``batch_join=False`` batch."""

DEFAULT_FILE_MODE = 0o640
"""Permissions of a file a sink creates (before the umask is applied)."""

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def _as_buffer(data: Data) -> bytes | bytearray | memoryview:
    if isinstance(data, list):
        return b"".join(data)
    return data


def positive_int(name: str, value: object) -> int:
    """*value*, checked to be an int >= 1 (`ValueError` naming *name* if not)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, not {value!r}")
    return value


def _fd_number(value: object) -> int:
    # A bool would pass for an fd in the os functions: True is stdout.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"fd must be an int, not {type(value).__name__}")
    return value


def _undo_append(fd: int, count: int) -> bool:
    """Cut the last *count* bytes appended to the regular file *fd*; whether it could."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return False
        os.ftruncate(fd, max(0, info.st_size - count))
    except OSError:
        return False
    return True


class AsyncWith:
    """``async with sink:`` for the sinks: entering checkpoints, leaving awaits `aclose`."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await checkpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class FileSink(AsyncWith):
    """Appends every write to a file, from a worker thread.

    The file is opened (created with *mode*, minus the umask, if it does not exist) when
    the sink is constructed, so a bad path fails at once with `OSError`. It is opened
    with ``O_APPEND``: writes go to the end even if something else appends too.

    Use it with an aggregator like this::

        sink = FileSink("app.log")
        config = AggregatorConfig(
            writer=sink.write, sync_fn=sink.sync, sync_interval=1.0, batch_max_items=64
        )
        async with sink, open_aggregator(nursery, config) as agg:
            ...

    (The aggregator is closed, and so drained, before the sink.)

    Args:
        path: The file to append to.
        mode: Permissions used when the file is created.

    Raises:
        OSError: The file cannot be opened for appending.
    """

    _fd: int | None  # None once closed

    def __init__(self, path: str | os.PathLike[str], *, mode: int = DEFAULT_FILE_MODE) -> None:
        self._setup(os.fspath(path), mode, closefd=True)
        self._fd, self._size = self._open()

    def _setup(self, path: str, mode: int, *, closefd: bool) -> None:
        self._path = path
        self._mode = mode
        self._lock = threading.Lock()
        self._closefd = closefd
        self._bytes_written = 0
        self._fd = None
        self._size = 0

    @classmethod
    def from_fd(cls, fd: int, name: str | None = None) -> FileSink:
        """A sink that writes to the already open file descriptor *fd*, e.g. 1 for stdout.

        The sink does not own *fd*: `close` stops the sink from writing but leaves *fd*
        open. Writes go where *fd* points, so open it for writing (and with
        ``O_APPEND`` to append to a file). `fsync` works only if *fd* supports it: a
        pipe or a terminal raises `OSError` (``EINVAL``). `size` starts at the
        size of the file *fd* refers to (0 for a pipe, a socket or a terminal).

        Example, every write to standard output::

            sink = FileSink.from_fd(1, "<stdout>")
            config = AggregatorConfig(writer=sink.write)

        Args:
            fd: An open file descriptor to write to.
            name: What `path` and the sink's ``repr`` show (default ``"<fd N>"``).

        Returns:
            The new sink. (`RotatingFileSink` refuses: rotation needs a path.)

        Raises:
            TypeError: *fd* is not an `int`, or this is called on `RotatingFileSink`.
            OSError: *fd* is not an open file descriptor.
        """
        fd = _fd_number(fd)
        if issubclass(cls, RotatingFileSink):
            raise TypeError(f"{cls.__name__} rotates by path: it cannot write to a bare fd")
        info = os.fstat(fd)
        sink = cls.__new__(cls)
        sink._setup(f"<fd {fd}>" if name is None else name, DEFAULT_FILE_MODE, closefd=False)
        sink._fd = fd
        sink._size = info.st_size if stat.S_ISREG(info.st_mode) else 0
        return sink

    def _open(self) -> tuple[int, int]:
        fd = os.open(self._path, _OPEN_FLAGS, self._mode)
        try:
            size = os.fstat(fd).st_size
        except BaseException:  # pragma: no cover - fstat of a fresh fd does not fail
            os.close(fd)
            raise
        return fd, size

    @property
    def path(self) -> str:
        """The path of the file written to (for a sink made by `from_fd`, its name)."""
        return self._path

    @property
    def closed(self) -> bool:
        """Whether `close` (or `aclose`) was called."""
        return self._fd is None

    @property
    def bytes_written(self) -> int:
        """Bytes written by this sink since it was created (across rotations)."""
        return self._bytes_written

    @property
    def size(self) -> int:
        """The size of the current file as this sink knows it (its size at open, plus writes)."""
        return self._size

    def _require_fd(self) -> int:
        if self._fd is None:
            raise trio.ClosedResourceError(f"the sink for {self._path!r} is closed")
        return self._fd

    def write_blocking(self, data: Data) -> None:
        """Write all of *data* now, blocking the calling thread: all of it, or none of it.

        Short writes are completed. If a write fails part way (disk full, ``EFBIG``),
        the part already written is cut off again (`os.ftruncate` back to where this
        call started), so the file never holds a partial record and a retry of the same
        data never duplicates bytes. That undo needs a regular file that nothing else
        appends to at the same moment; on a pipe or a terminal, what was sent before the
        error stays sent. Suitable as the ``writer`` of an aggregator with
        ``writer_thread=True``.

        Raises:
            trio.ClosedResourceError: The sink is closed.
            OSError: The write failed (the file is as it was before the call, on a
                regular file).
        """
        view = memoryview(_as_buffer(data)).cast("B")
        with self._lock:
            fd = self._require_fd()
            done = 0
            try:
                while done < len(view):
                    done += os.write(fd, view[done:])
            except BaseException:
                if done and not _undo_append(fd, done):
                    self._size += done  # it stays in the file (a pipe, a terminal)
                    self._bytes_written += done
                raise
            self._size += done
            self._bytes_written += done

    async def write(self, data: Data) -> None:
        """Write all of *data* from a worker thread; the ``writer`` of an aggregator.

        Raises:
            trio.ClosedResourceError: The sink is closed.
            OSError: The write failed; as with `write_blocking`, none of *data* stays
                in a regular file.
        """
        await trio.to_thread.run_sync(self.write_blocking, data)

    def fsync_blocking(self) -> None:
        """Flush the file's data to the storage device (`os.fsync`), blocking.

        Raises:
            trio.ClosedResourceError: The sink is closed.
            OSError: The fsync failed.
        """
        with self._lock:
            os.fsync(self._require_fd())

    async def fsync(self) -> None:
        """`os.fsync` the file from a worker thread; usable as ``sync_fn``."""
        await trio.to_thread.run_sync(self.fsync_blocking)

    async def sync(self) -> None:
        """The periodic callback to give the aggregator as ``sync_fn``: here, `fsync`."""
        await self.fsync()

    def close(self) -> None:
        """Close the file (idempotent). Writes after this raise `trio.ClosedResourceError`."""
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None and self._closefd:
                os.close(fd)

    async def aclose(self) -> None:
        """Close the file, as `close` does; it is closed even if this call is cancelled."""
        self.close()
        await checkpoint()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{type(self).__name__} {self._path!r} {state}>"


class RotatingFileSink(FileSink):
    """A `FileSink` that rotates its file by size, with the names `logging.handlers` uses.

    When the file has reached *max_bytes*, ``path`` becomes ``path.1``, ``path.1``
    becomes ``path.2``, and so on up to ``path.<backup_count>`` (the oldest is deleted),
    and a new, empty ``path`` is opened.

    Rotation is never done by a write: it is done by `sync` (or `rotate_if_needed`),
    which the aggregator runs as its ``sync_fn``, between two writer calls. So no write
    is ever in progress during a rotation, every batch lands whole in one file, and the
    files only ever end between two batches. The price: a file can grow past
    *max_bytes* by what is written between two checks (one ``sync_interval``).

    Args:
        path: The file to append to.
        max_bytes: The size, in bytes, at which the file is rotated (>= 1).
        backup_count: How many rotated files are kept (>= 1).
        mode: Permissions used when a file is created.

    Raises:
        ValueError: *max_bytes* or *backup_count* is less than 1.
        OSError: The file cannot be opened for appending.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int,
        backup_count: int,
        *,
        mode: int = DEFAULT_FILE_MODE,
    ) -> None:
        self._max_bytes = positive_int("max_bytes", max_bytes)
        self._backup_count = positive_int("backup_count", backup_count)
        self._rotations = 0
        super().__init__(path, mode=mode)

    @property
    def max_bytes(self) -> int:
        """The size at which the file is rotated."""
        return self._max_bytes

    @property
    def backup_count(self) -> int:
        """How many rotated files are kept."""
        return self._backup_count

    @property
    def rotations(self) -> int:
        """How many rotations this sink has done."""
        return self._rotations

    def backup_path(self, n: int) -> str:
        """The name of the *n*-th rotated file: ``path.n`` (1 is the most recent)."""
        return f"{self._path}.{n}"

    def _rotate_locked(self) -> None:
        old_fd = self._require_fd()
        for n in range(self._backup_count - 1, 0, -1):
            source = self.backup_path(n)
            if os.path.lexists(source):
                os.replace(source, self.backup_path(n + 1))
        if os.path.lexists(self._path):  # it may have been removed behind our back
            os.replace(self._path, self.backup_path(1))
        # The old file stays open (now named path.1) until the new one is: if opening the
        # new file fails, writes keep going to the old one and nothing is lost.
        self._fd, self._size = self._open()
        self._rotations += 1
        os.close(old_fd)

    def rotate_blocking(self) -> None:
        """Rotate now, whatever the size, blocking the calling thread.

        Raises:
            trio.ClosedResourceError: The sink is closed.
            OSError: A rename, or opening the new file, failed.
        """
        with self._lock:
            self._rotate_locked()

    def rotate_if_needed_blocking(self) -> bool:
        """Rotate if the file has reached `max_bytes`; return whether it did."""
        with self._lock:
            self._require_fd()
            if self._size < self._max_bytes:
                return False
            self._rotate_locked()
            return True

    async def rotate(self) -> None:
        """`rotate_blocking` from a worker thread (call it between writes only)."""
        await trio.to_thread.run_sync(self.rotate_blocking)

    async def rotate_if_needed(self) -> bool:
        """`rotate_if_needed_blocking` from a worker thread; usable as ``sync_fn``."""
        return await trio.to_thread.run_sync(self.rotate_if_needed_blocking)

    def sync_blocking(self) -> None:
        """`os.fsync` the file, then rotate it if it has reached `max_bytes`."""
        with self._lock:
            os.fsync(self._require_fd())
            if self._size >= self._max_bytes:
                self._rotate_locked()

    async def sync(self) -> None:
        """The ``sync_fn`` of this sink: fsync, then rotate if the size is reached.

        Runs in a worker thread. The aggregator runs ``sync_fn`` between writer calls,
        which is what makes the rotation safe.
        """
        await trio.to_thread.run_sync(self.sync_blocking)


class StreamSink(AsyncWith):
    """Sends every write to a `trio.abc.SendStream` (TCP, Unix socket, TLS, pipe...).

    ``writer=sink.write`` sends each batch with `~trio.abc.SendStream.send_all`. A failed
    send (`trio.BrokenResourceError`) is a writer error for the aggregator; the sink does
    not reconnect.

    Args:
        stream: Where to send; the sink owns it and closes it in `aclose`.
    """

    def __init__(self, stream: trio.abc.SendStream) -> None:
        self._stream = stream
        self._bytes_written = 0

    @property
    def stream(self) -> trio.abc.SendStream:
        """The stream written to."""
        return self._stream

    @property
    def bytes_written(self) -> int:
        """Bytes sent successfully by this sink."""
        return self._bytes_written

    async def write(self, data: Data) -> None:
        """Send all of *data*; the ``writer`` of an aggregator."""
        buffer = _as_buffer(data)
        await self._stream.send_all(buffer)
        self._bytes_written += memoryview(buffer).nbytes

    async def aclose(self) -> None:
        """Close the stream (gracefully if it can, as `trio.abc.AsyncResource.aclose` does)."""
        await self._stream.aclose()

    def __repr__(self) -> str:
        return f"<StreamSink {self._stream!r}>"
