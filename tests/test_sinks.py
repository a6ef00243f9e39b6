"""The sinks (issue 4): FileSink, RotatingFileSink, StreamSink, alone and behind an aggregator."""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from trio_aggregator import (
    AggregatorConfig,
    FileSink,
    RotatingFileSink,
    StreamSink,
    open_aggregator,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path


def read(path: Path | str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


# ---------------------------------------------------------------------------- FileSink


async def test_file_sink_appends_every_kind_of_buffer(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    sink = FileSink(path)
    await sink.write(b"one\n")
    await sink.write(bytearray(b"two\n"))
    await sink.write(memoryview(b"three\n"))
    await sink.write([b"four\n", b"five\n"])
    sink.write_blocking(b"six\n")
    assert sink.bytes_written == sink.size == len(read(path))
    await sink.aclose()
    assert read(path) == b"one\ntwo\nthree\nfour\nfive\nsix\n"
    assert sink.path == str(path)


async def test_file_sink_creates_the_file_with_mode_0640(tmp_path: Path) -> None:
    path = tmp_path / "new.log"
    umask = os.umask(0)
    os.umask(umask)
    with FileSink(path):
        pass
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640 & ~umask
    custom = tmp_path / "custom.log"
    with FileSink(custom, mode=0o600):
        pass
    assert stat.S_IMODE(os.stat(custom).st_mode) == 0o600 & ~umask


async def test_file_sink_keeps_what_the_file_had(tmp_path: Path) -> None:
    path = tmp_path / "old.log"
    path.write_bytes(b"before\n")
    async with FileSink(path) as sink:
        assert sink.size == 7
        assert sink.bytes_written == 0
        await sink.write(b"after\n")
        assert sink.size == 13
    assert read(path) == b"before\nafter\n"


async def test_file_sink_writes_everything_despite_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def one_byte_at_a_time(fd: int, data: memoryview) -> int:
        return real_write(fd, data[:1])

    monkeypatch.setattr(os, "write", one_byte_at_a_time)
    with FileSink(tmp_path / "short.log") as sink:
        sink.write_blocking(b"hello world\n")
    assert read(tmp_path / "short.log") == b"hello world\n"


async def test_file_sink_fsync_and_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    async with FileSink(tmp_path / "f.log") as sink:
        await sink.write(b"x\n")
        await sink.fsync()
        await sink.sync()
        sink.fsync_blocking()
    assert len(synced) == 3


async def test_file_sink_close_is_idempotent_and_final(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "c.log")
    assert not sink.closed
    assert "open" in repr(sink)
    sink.close()
    sink.close()
    await sink.aclose()
    assert sink.closed
    assert "closed" in repr(sink)
    with pytest.raises(trio.ClosedResourceError):
        await sink.write(b"late\n")
    with pytest.raises(trio.ClosedResourceError):
        await sink.fsync()


async def test_file_sink_aclose_closes_even_when_cancelled(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "cancel.log")
    with trio.CancelScope() as scope:
        scope.cancel()
        await sink.aclose()
    assert sink.closed


async def test_file_sink_bad_path_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        FileSink(tmp_path)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        FileSink(tmp_path / "file" / "below.log")


async def test_file_sink_from_fd_does_not_close_the_fd(tmp_path: Path) -> None:
    path = tmp_path / "fd.log"
    path.write_bytes(b"before\n")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        sink = FileSink.from_fd(fd, "<fd>")
        assert (sink.path, sink.size, sink.closed) == ("<fd>", 7, False)
        assert repr(sink) == "<FileSink '<fd>' open>"
        await sink.write(b"via fd\n")
        await sink.fsync()
        assert (sink.size, sink.bytes_written) == (14, 7)
        await sink.aclose()
        assert sink.closed
        with pytest.raises(trio.ClosedResourceError):
            await sink.write(b"not any more\n")
        os.write(fd, b"still open\n")
    finally:
        os.close(fd)
    assert read(path) == b"before\nvia fd\nstill open\n"


async def test_file_sink_from_fd_of_a_pipe(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        with FileSink.from_fd(write_end) as sink:
            assert (sink.path, sink.size) == (f"<fd {write_end}>", 0)
            await sink.write([b"one\n", b"two\n"])
            assert sink.size == 8
            with pytest.raises(OSError):  # noqa: PT011 - EINVAL: a pipe cannot be fsynced
                await sink.fsync()
        assert os.read(read_end, 100) == b"one\ntwo\n"
        os.write(write_end, b"open\n")  # closing the sink left it open
        assert os.read(read_end, 100) == b"open\n"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_file_sink_from_fd_rejects_bad_input() -> None:
    with pytest.raises(OSError, match="Bad file descriptor"):
        FileSink.from_fd(-1)
    with pytest.raises(TypeError, match="fd must be an int, not str"):
        FileSink.from_fd("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fd must be an int, not bool"):
        FileSink.from_fd(True)
    with pytest.raises(TypeError, match="RotatingFileSink rotates by path"):
        RotatingFileSink.from_fd(1)


@pytest.mark.parametrize("writer_thread", [False, True])
async def test_file_sink_behind_an_aggregator(
    tmp_path: Path, writer_thread: bool, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "agg.log"
    async with FileSink(path) as sink:
        config = AggregatorConfig(
            writer=sink.write_blocking if writer_thread else sink.write,
            writer_thread=writer_thread,
            sync_fn=sink.sync,
            sync_interval=0.001,
            buffer_size=64,
            batch_max_items=16,
            drain_timeout=math.inf,  # the mock clock jumps while a thread writes
        )
        async with trio.open_nursery() as nursery, open_aggregator(nursery, config) as agg:
            async with trio.open_nursery() as producers:
                for task in range(8):
                    # The pauses (1 ms of mock time) move the clock, so syncs come between
                    # the writes whatever the threads' speed.
                    producers.start_soon(write_lines, agg.write, task, 200, 10)
        statistics = agg.statistics()
    assert statistics.writer_errors == statistics.callback_errors == 0
    assert statistics.sync_runs > 0
    check_lines(read(path), tasks=8, count=200)


async def write_lines(
    write: Callable[[bytes], Awaitable[object]], task: int, count: int, pause_every: int = 0
) -> None:
    for n in range(count):
        await write(b"task %d line %d\n" % (task, n))
        if pause_every and n % pause_every == 0:
            await trio.sleep(0.001)


def check_lines(content: bytes, *, tasks: int, count: int) -> None:
    """Every line whole, each task's lines all there and in order."""
    seen: dict[int, list[int]] = {task: [] for task in range(tasks)}
    for line in content.splitlines():
        _, task, _, n = line.split()
        seen[int(task)].append(int(n))
    assert all(numbers == list(range(count)) for numbers in seen.values())


# ---------------------------------------------------------------------------- RotatingFileSink


@pytest.mark.parametrize(
    ("max_bytes", "backup_count"), [(0, 1), (10, 0), (-1, 3), (True, 3), (10, 1.5), ("10", 2)]
)
async def test_rotating_sink_rejects_bad_settings(
    tmp_path: Path, max_bytes: object, backup_count: object
) -> None:
    with pytest.raises(ValueError, match="must be an int >= 1"):
        RotatingFileSink(tmp_path / "r.log", max_bytes, backup_count)  # type: ignore[arg-type]
    assert not (tmp_path / "r.log").exists()


async def test_rotating_sink_rotates_only_from_sync(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    async with RotatingFileSink(path, max_bytes=10, backup_count=3) as sink:
        assert (sink.max_bytes, sink.backup_count, sink.rotations) == (10, 3, 0)
        await sink.write(b"0123456789abcdef\n")  # past max_bytes, but a write never rotates
        assert sink.rotations == 0
        assert sink.size == 17
        await sink.sync()
        assert sink.rotations == 1
        assert sink.size == 0
        await sink.write(b"small\n")
        await sink.sync()  # below max_bytes: no rotation
        assert sink.rotations == 1
    assert read(path) == b"small\n"
    assert read(tmp_path / "r.log.1") == b"0123456789abcdef\n"
    assert sink.backup_path(2) == f"{path}.2"


async def test_rotating_sink_keeps_backup_count_files_like_the_stdlib(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    async with RotatingFileSink(path, max_bytes=1, backup_count=3) as sink:
        for n in range(6):
            await sink.write(b"generation %d\n" % n)
            assert await sink.rotate_if_needed()
        assert not await sink.rotate_if_needed()  # the new file is empty
    assert sorted(os.listdir(tmp_path)) == ["app.log", "app.log.1", "app.log.2", "app.log.3"]
    assert read(path) == b""
    assert read(f"{path}.1") == b"generation 5\n"
    assert read(f"{path}.2") == b"generation 4\n"
    assert read(f"{path}.3") == b"generation 3\n"


async def test_rotating_sink_forced_rotation_and_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "f.log"
    path.write_bytes(b"old content\n")
    sink = RotatingFileSink(path, max_bytes=1000, backup_count=2)
    assert sink.size == 12
    await sink.rotate()
    sink.rotate_blocking()
    assert sink.rotations == 2
    assert not sink.rotate_if_needed_blocking()
    sink.close()
    assert read(f"{path}.2") == b"old content\n"
    assert read(f"{path}.1") == b""
    with pytest.raises(trio.ClosedResourceError):
        await sink.rotate_if_needed()
    with pytest.raises(trio.ClosedResourceError):
        sink.sync_blocking()


async def test_rotating_sink_keeps_writing_when_the_new_file_cannot_be_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keep.log"
    sink = RotatingFileSink(path, max_bytes=5, backup_count=2)
    await sink.write(b"first\n")

    def refuse() -> tuple[int, int]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sink, "_open", refuse)
    with pytest.raises(PermissionError):
        await sink.sync()
    await sink.write(b"second\n")  # lands in the old file, now named keep.log.1
    sink.close()
    assert read(f"{path}.1") == b"first\nsecond\n"
    assert not path.exists()


async def test_rotating_sink_whose_file_was_removed(tmp_path: Path) -> None:
    path = tmp_path / "gone.log"
    async with RotatingFileSink(path, max_bytes=1, backup_count=2) as sink:
        await sink.write(b"unlinked\n")
        path.unlink()
        await sink.sync()
        await sink.write(b"new file\n")
    assert read(path) == b"new file\n"
    assert not os.path.exists(f"{path}.1")


async def test_rotation_while_many_tasks_write(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """No line is split between two files, none lost, each task's order kept."""
    path = tmp_path / "busy.log"
    async with RotatingFileSink(path, max_bytes=4000, backup_count=100) as sink:
        config = AggregatorConfig(
            writer=sink.write,
            sync_fn=sink.sync,
            sync_interval=0.002,
            buffer_size=32,
            batch_max_items=8,
            # The mock clock jumps while a write runs in its thread: a finite drain
            # deadline would be reached at once.
            drain_timeout=math.inf,
        )
        async with trio.open_nursery() as nursery, open_aggregator(nursery, config) as agg:
            async with trio.open_nursery() as producers:
                for task in range(10):
                    producers.start_soon(write_lines, agg.write, task, 300, 10)
        assert agg.statistics().callback_errors == 0
        rotations = sink.rotations
    assert 5 <= rotations < 100
    files = [f"{path}.{n}" for n in range(rotations, 0, -1)] + [str(path)]
    contents = [read(name) for name in files]
    assert all(content == b"" or content.endswith(b"\n") for content in contents)
    check_lines(b"".join(contents), tasks=10, count=300)


# ---------------------------------------------------------------------------- StreamSink


async def test_stream_sink_sends_everything_and_closes() -> None:
    send, receive = trio.testing.memory_stream_pair()
    async with StreamSink(send) as sink:
        assert sink.stream is send
        assert "StreamSink" in repr(sink)
        await sink.write(b"one\n")
        await sink.write([b"two\n", b"three\n"])
        await sink.write(memoryview(b"four\n"))
        assert sink.bytes_written == 19
    received = b""
    while chunk := await receive.receive_some():
        received += chunk
    assert received == b"one\ntwo\nthree\nfour\n"


async def test_stream_sink_behind_an_aggregator_over_a_socket() -> None:
    left, right = trio.socket.socketpair()
    sink = StreamSink(trio.SocketStream(left))
    reader = trio.SocketStream(right)
    received = bytearray()

    async def read_all() -> None:
        while chunk := await reader.receive_some():
            received.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        config = AggregatorConfig(writer=sink.write, buffer_size=16, batch_max_items=4)
        async with trio.open_nursery() as inner, open_aggregator(inner, config) as agg:
            async with trio.open_nursery() as producers:
                for task in range(5):
                    producers.start_soon(write_lines, agg.write, task, 100)
        await sink.aclose()
    await reader.aclose()
    check_lines(bytes(received), tasks=5, count=100)


async def test_stream_sink_broken_stream_is_a_writer_error() -> None:
    send, receive = trio.testing.memory_stream_pair()
    await receive.aclose()
    sink = StreamSink(send)
    config = AggregatorConfig(writer=sink.write)
    async with trio.open_nursery() as nursery, open_aggregator(nursery, config) as agg:
        await agg.write(b"lost\n")
        await agg.flush()
    assert agg.statistics().writer_errors == 1
    assert isinstance(agg.last_error, trio.BrokenResourceError)
    assert sink.bytes_written == 0


# ---------------------------------------------------------------------------- short writes
# Issue 11, item 2: a write that fails part way (disk full) must leave no partial record,
# and a retry must not write the batch twice.

RECORDS = [b"record %d %s\n" % (n, b"x" * (n % 7)) for n in range(300)]


def make_sink(kind: str, path: Path) -> FileSink:
    if kind == "rotating":
        return RotatingFileSink(path, max_bytes=10**9, backup_count=1)
    return FileSink(path)


def check_whole_records(content: bytes, written: int) -> None:
    """*content* is whole records from `RECORDS`, in order, each at most once."""
    lines = content.splitlines(keepends=True)
    assert b"".join(lines) == content
    positions = [RECORDS.index(line) for line in lines]  # a partial line is not in RECORDS
    assert positions == sorted(set(positions))
    assert len(lines) == written


def disk_of(monkeypatch: pytest.MonkeyPatch, capacity: int, *, fail_once: bool = False) -> None:
    """Make `os.write` behave as on a disk of *capacity* bytes: a short write, then ENOSPC.

    With *fail_once*, the disk is full only for the first write that reaches it, then
    has room again (a retry succeeds).
    """
    real_write = os.write
    full = [False]

    def write(fd: int, data: memoryview) -> int:
        room = capacity - os.fstat(fd).st_size
        if (fail_once and full[0]) or len(data) <= room:
            return real_write(fd, data)
        if room <= 0:
            full[0] = True
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data[:room])

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("kind", ["file", "rotating"])
def test_file_sink_undoes_a_write_that_fails_part_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    path = tmp_path / "full.log"
    disk_of(monkeypatch, 25)
    with make_sink(kind, path) as sink:
        sink.write_blocking(b"0123456789\n")
        with pytest.raises(OSError, match="No space"):
            sink.write_blocking([b"abcdefghij\n", b"klmnopqrst\n"])  # 11 of 22 bytes fit
        assert read(path) == b"0123456789\n"
        assert (sink.size, sink.bytes_written) == (11, 11)
        sink.write_blocking(b"short\n")  # a smaller record still fits after the undo
    assert read(path) == b"0123456789\nshort\n"


def test_file_sink_cannot_undo_on_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    real_write = os.write
    calls = [0]

    def write(fd: int, data: memoryview) -> int:
        calls[0] += 1
        if calls[0] > 1:
            raise OSError(errno.EPIPE, "Broken pipe")
        return real_write(fd, data[:3])

    monkeypatch.setattr(os, "write", write)
    try:
        with FileSink.from_fd(write_end) as sink:
            with pytest.raises(OSError, match="Broken pipe"):
                sink.write_blocking(b"abcdef")
            assert sink.bytes_written == 3  # sent: it cannot be taken back
        assert os.read(read_end, 100) == b"abc"
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize("kind", ["file", "rotating"])
@pytest.mark.parametrize("fail_once", [False, True], ids=["disk-stays-full", "retry-succeeds"])
async def test_a_full_disk_behind_an_aggregator_leaves_whole_records_counted_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, fail_once: bool
) -> None:
    path = tmp_path / "full.log"
    disk_of(monkeypatch, 1000, fail_once=fail_once)
    async with make_sink(kind, path) as sink:
        config = AggregatorConfig(
            writer=sink.write,
            buffer_size=64,
            batch_max_items=8,
            writer_retries=1,
            writer_retry_backoff=0,
        )
        async with trio.open_nursery() as nursery, open_aggregator(nursery, config) as agg:
            for record in RECORDS:
                await agg.write(record)
        stats = agg.statistics()
    content = read(path)
    check_whole_records(content, stats.items_written)
    assert stats.bytes_written == len(content) == sink.size
    assert stats.items_accepted == len(RECORDS)
    assert stats.items_written + stats.dropped_writer_error == len(RECORDS)
    assert stats.dropped == stats.dropped_writer_error
    if fail_once:  # the retry wrote the batch once, whole
        assert content == b"".join(RECORDS)
        assert stats.writer_errors == 1
    else:
        assert 900 < len(content) <= 1000
        assert stats.dropped_writer_error > 0


_FSIZE_SCRIPT = """
import json, resource, signal, sys
import trio
from trio_aggregator import AggregatorConfig, FileSink, RotatingFileSink, open_aggregator

path, kind, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
records = [b"record %d %s\\n" % (n, b"x" * (n % 7)) for n in range(300)]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a killed process
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

async def main():
    sink = FileSink(path) if kind == "file" else RotatingFileSink(path, 10**9, 1)
    async with sink:
        config = AggregatorConfig(
            writer=sink.write, buffer_size=64, batch_max_items=8,
            writer_retries=1, writer_retry_backoff=0,
        )
        async with trio.open_nursery() as nursery, open_aggregator(nursery, config) as agg:
            for record in records:
                await agg.write(record)
    stats = agg.statistics()
    print(json.dumps({"written": stats.items_written, "bytes": stats.bytes_written,
                      "dropped": stats.dropped, "writer_error": stats.dropped_writer_error,
                      "size": sink.size}))

trio.run(main)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE, SIGXFSZ")
@pytest.mark.parametrize("kind", ["file", "rotating"])
def test_rlimit_fsize_leaves_whole_records_counted_right(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "limited.log"
    done = subprocess.run(
        [sys.executable, "-c", _FSIZE_SCRIPT, str(path), kind, "1000"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    stats = json.loads(done.stdout)
    content = read(path)
    check_whole_records(content, stats["written"])
    assert stats["bytes"] == stats["size"] == len(content)
    assert 900 < len(content) <= 1000
    assert stats["written"] + stats["writer_error"] == len(RECORDS)
    assert stats["dropped"] == stats["writer_error"] > 0


def test_file_sink_counts_what_it_could_not_undo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    disk_of(monkeypatch, 4)
    monkeypatch.setattr(os, "ftruncate", no_truncate)
    with FileSink(tmp_path / "eio.log") as sink:
        with pytest.raises(OSError, match="No space"):
            sink.write_blocking(b"abcdef")
        assert (sink.size, sink.bytes_written) == (4, 4)  # the sink's count says what is there
    assert read(tmp_path / "eio.log") == b"abcd"
