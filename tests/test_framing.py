"""Input framing (issue 10): octet-counted and traditional frames, NUL, escaping, binary."""

from __future__ import annotations

import io
import itertools
import re
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trio_aggregator._serve._binary import BinaryRecords, is_binary
from trio_aggregator._serve._collector import LineCollector
from trio_aggregator._serve._framing import (
    CheckedLineSplitter,
    FrameSplitter,
    FramingRules,
    escape_controls,
)
from trio_aggregator._serve._options import ServeOptions
from trio_aggregator._serve._server import LineServer, run_server

if TYPE_CHECKING:
    from pathlib import Path

    from trio_aggregator._serve._collector import CutRecords


def octet(record: bytes) -> bytes:
    return b"%d %s" % (len(record), record)


def split(
    chunks: list[bytes], rules: FramingRules | None = None, max_line_bytes: int = 100
) -> tuple[bytes, CheckedLineSplitter | FrameSplitter]:
    splitter = (rules or FramingRules()).splitter(max_line_bytes)
    out = b""
    for chunk in chunks:
        out += splitter.feed(chunk)
        assert splitter.pending_bytes <= max_line_bytes + 10
    return out + splitter.finish(), splitter


def every_cut(stream: bytes) -> list[list[bytes]]:
    """*stream* whole, byte by byte, and cut in two at every place."""
    cuts = [[stream], [stream[i : i + 1] for i in range(len(stream))]]
    cuts += [[stream[:i], stream[i:]] for i in range(1, len(stream))]
    return cuts


# ---------------------------------------------------------------------------- auto


def test_auto_reads_plain_lines_as_lines_splitter_does() -> None:
    out, splitter = split([b"hello\nwor", b"ld\n\nlast"])
    assert out == b"hello\nworld\n\nlast\n"
    assert (splitter.framing_errors, splitter.binary_records, splitter.partial_lines) == (0, 0, 1)


def test_auto_reads_octet_counted_frames_with_embedded_newlines_escaped() -> None:
    stream = octet(b"<13>one\ntwo") + octet(b"<13>tab\there\n") + octet(b"<13>x\x1b\r")
    for chunks in every_cut(stream):
        out, splitter = split(chunks)
        assert out == b"<13>one#012two\n<13>tab#011here\n<13>x#033#015\n", chunks
        assert splitter.framing_errors == 0


def test_auto_switches_between_framings_record_by_record() -> None:
    stream = b"plain\n" + octet(b"<14>a b") + b"<14>nul ended\0" + octet(b"c") + b"2026-12-07 x\n"
    for chunks in every_cut(stream):
        out, splitter = split(chunks)
        assert out == b"plain\n<14>a b\n<14>nul ended\nc\n2026-12-07 x\n", chunks
        assert (splitter.framing_errors, splitter.partial_lines) == (0, 0)


def test_auto_digits_not_followed_by_a_space_start_a_traditional_line() -> None:
    out, splitter = split([b"2026-12-07 start\n0 zero\n1234567890 ten digits\n42x\n"])
    assert out == b"2026-12-07 start\n0 zero\n1234567890 ten digits\n42x\n"
    assert splitter.framing_errors == 0


def test_nul_ends_a_traditional_frame_unless_told_otherwise() -> None:
    stream = b"<14>one\0<14>two\0"
    assert split([stream])[0] == b"<14>one\n<14>two\n"
    out, splitter = split([stream], FramingRules(nul_terminates=False))
    assert out == stream + b"\n"
    assert (splitter.binary_records, splitter.partial_lines) == (1, 1)


def test_an_over_long_octet_counted_frame_is_truncated_and_the_reader_stays_in_step() -> None:
    stream = octet(b"A" * 30) + octet(b"next")
    for chunks in ([stream], [stream[:5], stream[5:20], stream[20:]]):
        out, splitter = split(chunks, max_line_bytes=10)
        assert out == b"A" * 10 + b"\nnext\n"
        assert (splitter.framing_errors, splitter.lines_truncated) == (1, 1)
        assert splitter.bytes_discarded == 20


def test_a_frame_cut_short_by_the_client_is_kept_as_a_partial_record() -> None:
    out, splitter = split([b"10 <13>ab\ncd"])
    assert out == b"<13>ab#012cd\n"
    assert splitter.partial_lines == 1


def test_take_pending_gives_the_frame_being_read_escaped() -> None:
    splitter = FramingRules().splitter(100)
    assert splitter.feed(b"ok\n20 <13>half\nway") == b"ok\n"
    assert splitter.take_pending() == b"<13>half#012way"
    assert splitter.pending_bytes == 0
    assert splitter.feed(b"12") == b""  # an unfinished octet count is pending too
    assert splitter.pending_bytes == 2
    assert splitter.take_pending() == b"12"
    assert splitter.feed(b"5 ") == b""  # a frame has begun: its octet count is pending
    assert splitter.pending_bytes == 2
    assert splitter.feed(b"ab") == b""
    assert splitter.pending_bytes == 4


def test_a_huge_declared_length_costs_at_most_max_line_bytes() -> None:
    splitter = FramingRules().splitter(1000)
    assert splitter.feed(b"999999999 ") == b""
    for _ in range(20):
        assert splitter.feed(b"z" * 100_000) == b""
        assert splitter.pending_bytes <= 1000 + 10
    assert (splitter.framing_errors, splitter.lines_truncated) == (1, 1)
    assert splitter.bytes_discarded == 20 * 100_000 - 1000
    assert splitter.finish() == b"z" * 1000 + b"\n"  # the client gave up: kept, partial
    assert splitter.partial_lines == 1


# ---------------------------------------------------------------------------- octet-counted


def test_octet_counted_counts_a_malformed_frame_and_resynchronises_at_the_next_lf() -> None:
    rules = FramingRules(framing="octet-counted")
    stream = octet(b"a") + b"no count\n" + b"12x bad delimiter\n" + octet(b"b") + b"0 \n"
    for chunks in every_cut(stream):
        out, splitter = split(chunks, rules)
        assert out == b"a\nno count\n12x bad delimiter\nb\n0 \n", chunks
        assert splitter.framing_errors == 3


def test_octet_counted_malformed_frame_ends_at_nul_too() -> None:
    out, splitter = split([b"<14>x\0" + octet(b"y")], FramingRules(framing="octet-counted"))
    assert out == b"<14>x\ny\n"
    assert splitter.framing_errors == 1


# ---------------------------------------------------------------------------- property


record_text = st.one_of(
    st.binary(max_size=30),
    st.from_regex(rb"\A[0-9]{1,11}[ -]?[a-z]{0,5}\Z"),  # digits: a date, an octet count...
).filter(lambda r: b"\n" not in r and b"\0" not in r)
LOOKS_COUNTED = re.compile(rb"[1-9][0-9]{0,8} ").match
"""Whether a record starts as an octet count does (``auto`` reads it so)."""


@given(
    records=st.lists(st.tuples(st.booleans(), record_text), max_size=25),
    max_line_bytes=st.integers(1, 40),
    cuts=st.lists(st.integers(0, 900), max_size=12),
)
def test_auto_property(
    records: list[tuple[bool, bytes]], max_line_bytes: int, cuts: list[int]
) -> None:
    """Whatever the chunking: every record once, in order, one line each, bounded memory."""
    # A traditional record must not look like an octet count (that is auto's rule), and
    # an octet-counted one is not empty (a length of 0 is malformed).
    records = [
        (counted and bool(text), b"x" + text if not counted and LOOKS_COUNTED(text) else text)
        for counted, text in records
    ]
    stream = b"".join(octet(text) if counted else text + b"\n" for counted, text in records)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    out, splitter = split(chunks, max_line_bytes=max_line_bytes)
    expected = b"".join(
        (escape_controls(text[:max_line_bytes]) if counted else text[:max_line_bytes]) + b"\n"
        for counted, text in records
    )
    assert out == expected
    too_long = [len(text) > max_line_bytes for _, text in records]
    assert splitter.lines_truncated == sum(too_long)
    assert splitter.framing_errors == sum(
        long for (counted, _), long in zip(records, too_long, strict=True) if counted
    )


@given(
    records=st.lists(st.tuples(st.booleans(), record_text), max_size=25),
    cuts=st.lists(st.integers(0, 900), max_size=12),
)
def test_octet_counted_property(records: list[tuple[bool, bytes]], cuts: list[int]) -> None:
    """Malformed frames amid good ones: each record once, in order; each error counted."""
    records = [
        (True, text) if counted and text else (False, b"x" + text) for counted, text in records
    ]
    stream = b"".join(octet(text) if counted else text + b"\n" for counted, text in records)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    out, splitter = split(chunks, FramingRules(framing="octet-counted"), max_line_bytes=40)
    expected = b"".join(
        (escape_controls(text) if counted else text) + b"\n" for counted, text in records
    )
    assert out == expected
    assert splitter.framing_errors == sum(not counted for counted, _ in records)


# ---------------------------------------------------------------------------- binary


def test_is_binary() -> None:
    assert not is_binary("héllo".encode(), nul=True)
    assert is_binary(b"\xff\xfe", nul=False)
    assert is_binary(b"a\0b", nul=True)
    assert not is_binary(b"a\0b", nul=False)


def test_binary_records_are_counted_and_kept_by_default() -> None:
    out, splitter = split([b"text\n\xff\xfe pickle\n" + octet(b"a\0b")])
    assert out == b"text\n\xff\xfe pickle\na#000b\n"
    assert splitter.binary_records == 2


def test_binary_records_rejected_are_handed_over_to_be_counted() -> None:
    rejected: list[bytes] = []
    rules = FramingRules(binary="reject")
    splitter = rules.splitter(100, rejected.append)
    stream = b"ok\n\xff\xfe\n" + octet(b"a\0b") + "é\n".encode() + b"\xc3"
    assert splitter.feed(stream) == "ok\né\n".encode()
    assert splitter.finish() == b""
    assert rejected == [b"\xff\xfe\n", b"a\0b\n", b"\xc3\n"]
    assert splitter.binary_records == 3


def test_lines_framing_is_line_splitter_with_binary_lines_counted() -> None:
    rejected: list[bytes] = []
    splitter = FramingRules(framing="lines", binary="reject").splitter(100, rejected.append)
    assert isinstance(splitter, CheckedLineSplitter)
    assert splitter.feed(b"5 not a count\nnul\0inside\n<14>x\0") == b"5 not a count\n"
    assert splitter.take_pending() == b""
    assert rejected == [b"nul\0inside\n", b"<14>x\0"]
    assert (splitter.binary_records, splitter.framing_errors) == (2, 0)


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="framing"):
        FramingRules(framing="syslog")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="binary"):
        BinaryRecords("drop", nul_is_binary=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        FramingRules(nul_terminates=1)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- collector


class Written:
    def __init__(self) -> None:
        self.data = b""

    async def __call__(self, chunk: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.data += chunk


async def test_collector_counts_framing_errors_binary_records_and_rejections() -> None:
    written = Written()
    rules = FramingRules(framing="octet-counted", binary="reject")
    collector = LineCollector(written, framing=rules)
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.handle, server)
        await client.send_all(octet(b"<13>a\nb") + b"oops\n" + octet(b"\xff"))
        await client.aclose()
    assert written.data == b"<13>a#012b\noops\n"
    stats = collector.statistics()
    assert (stats.lines, stats.framing_errors, stats.binary_records) == (2, 1, 1)
    losses = collector.losses.snapshot()
    assert (losses.lines["binary"], losses.bytes["binary"]) == (1, 2)


# ---------------------------------------------------------------------------- server


async def test_the_summary_and_exit_status_show_framing_errors_and_binary_records(
    tmp_path: Path,
) -> None:
    stderr = io.StringIO()
    options = ServeOptions(
        tcp=(("127.0.0.1", 0),),
        output=str(tmp_path / "out.log"),
        quiet=True,
        shutdown_idle=0.01,
        framing="octet-counted",
        binary="reject",
    )
    async with trio.open_nursery() as nursery:
        server: LineServer = await nursery.start(partial(run_server, options, stderr=stderr))
        stream = await trio.open_tcp_stream(*server.tcp_addresses[0])
        async with stream:
            await stream.send_all(octet(b"<13>ok") + b"no count\n" + octet(b"\xff\xfe"))
        await trio.testing.wait_all_tasks_blocked()
        server.shutdown()
        await server.wait_finished()
    assert (tmp_path / "out.log").read_bytes() == b"<13>ok\nno count\n"
    assert server.exit_code == 1
    text = stderr.getvalue()
    assert "  framing errors   1 (malformed or over-long frames)\n" in text
    assert "  binary records   1 (NUL or invalid UTF-8; see --binary)\n" in text
    assert "  lost lines       1 (3 bytes; binary 1)\n" in text


async def test_newline_input_with_default_options_exits_0(tmp_path: Path) -> None:
    """Truncated lines and binary records kept are counted, and leave the exit status 0."""
    options = ServeOptions(
        tcp=(("127.0.0.1", 0),),
        output=str(tmp_path / "out.log"),
        quiet=True,
        shutdown_idle=0.01,
        max_line_bytes=4,
    )
    async with trio.open_nursery() as nursery:
        server: LineServer = await nursery.start(partial(run_server, options))
        stream = await trio.open_tcp_stream(*server.tcp_addresses[0])
        async with stream:
            await stream.send_all(b"2026-12 ok\nlonger\n\xff\n")
        await trio.testing.wait_all_tasks_blocked()
        server.shutdown()
        await server.wait_finished()
    assert (tmp_path / "out.log").read_bytes() == b"2026\nlong\n\xff\n"
    assert server.exit_code == 0
    assert server.summary is not None
    stats = server.summary.server
    assert (stats.lines_truncated, stats.binary_records, stats.framing_errors) == (2, 1, 0)


async def test_a_frame_cut_at_the_idle_timeout_is_marked_escaped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    written = Written()
    collector = LineCollector(written, idle_timeout=5.0)
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.handle, server)
        await client.send_all(octet(b"<13>whole") + b"30 <13>half\nway")
        await trio.sleep(10)
    assert written.data == b"<13>whole\n<13>half#012way [cut by trio-aggregator: idle timeout]\n"
    assert collector.statistics().cut_records == 1


@pytest.mark.parametrize("policy", ["mark", "drop"])
async def test_a_frame_cut_after_its_octet_count_only_is_a_cut_record(
    policy: CutRecords, autojump_clock: trio.testing.MockClock
) -> None:
    """Only ``123 `` came: the record was started, so its cut is marked or counted lost."""
    written = Written()
    collector = LineCollector(written, idle_timeout=5.0, cut_records=policy)
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.handle, server)
        await client.send_all(octet(b"<13>whole") + b"123 ")
        await trio.sleep(10)
    losses = collector.losses.snapshot()
    if policy == "mark":
        assert written.data == b"<13>whole\n [cut by trio-aggregator: idle timeout]\n"
        assert losses.total_lines == 0
    else:
        assert written.data == b"<13>whole\n"
        assert losses.lines["cut"] == 1
    assert collector.statistics().cut_records == 1


async def test_a_binary_frame_rejected_as_it_is_cut_is_not_also_a_cut_record(
    autojump_clock: trio.testing.MockClock,
) -> None:
    written = Written()
    framing = FramingRules(binary="reject")
    collector = LineCollector(written, idle_timeout=5.0, framing=framing)
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.handle, server)
        await client.send_all(b"10 \xff\xfe")
        await trio.sleep(10)
    assert written.data == b""
    assert collector.statistics().cut_records == 0
    assert collector.losses.snapshot().lines["binary"] == 1


async def test_a_binary_frame_kept_as_it_is_cut_is_a_cut_record(
    autojump_clock: trio.testing.MockClock,
) -> None:
    written = Written()
    collector = LineCollector(written, idle_timeout=5.0)
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.handle, server)
        await client.send_all(b"10 \xff\xfe")
        await trio.sleep(10)
    assert written.data == b"\xff\xfe [cut by trio-aggregator: idle timeout]\n"
    assert collector.statistics().cut_records == 1
