"""Issue 9: `AggregatorHandler`, a `logging.Handler` fed from tasks and threads at once.

Every wait for a thread is bounded (`in_thread`, `join`): a deadlock fails the test
within seconds instead of hanging.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

import trio_aggregator._logging_handler as handler_module
from trio_aggregator import (
    Aggregator,
    AggregatorConfig,
    AggregatorHandler,
    open_aggregator,
)

from .conftest import Recorder, config, gated_aggregator, settle
from .test_threads import BOUND, in_thread, join, join_all, start_thread


class Recording(AggregatorHandler):
    """An `AggregatorHandler` that keeps what `handleError` was called for."""

    def __init__(self, aggregator: Aggregator, **kwargs: Any) -> None:
        super().__init__(aggregator, **kwargs)
        self.errors: list[tuple[logging.LogRecord, BaseException | None]] = []

    def handleError(self, record: logging.LogRecord) -> None:
        import sys

        self.errors.append((record, sys.exc_info()[1]))


_loggers = iter(range(1_000_000))


@pytest.fixture
def make_logger() -> Iterator[Any]:
    """A fresh logger (not propagating) with the given handler; removed afterwards."""
    made: list[tuple[logging.Logger, logging.Handler]] = []

    def make(handler: logging.Handler) -> logging.Logger:
        logger = logging.getLogger(f"tests.aggregator_handler.{next(_loggers)}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        made.append((logger, handler))
        return logger

    yield make
    for logger, handler in made:
        logger.removeHandler(handler)


def lines(recorder: Recorder) -> list[bytes]:
    return recorder.items()


# ---------------------------------------------------------------------------- together


async def test_threads_and_tasks_log_at_once_through_one_block_mode_handler(
    make_logger: Any,
) -> None:
    recorder = Recorder(checkpoint=True)
    n, per = 4, 200
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config(recorder, buffer_size=16)) as agg,
    ):
        handler = AggregatorHandler(agg, when_full="block")
        log = make_logger(handler)

        def thread_logs(t: int) -> None:
            for i in range(per):
                log.info("thread %d record %d", t, i)

        async def task_logs(t: int) -> None:
            for i in range(per):
                log.info("task %d record %d", t, i)
                await trio.sleep(0)

        with trio.fail_after(BOUND):
            threads = [start_thread(lambda t=t: thread_logs(t)) for t in range(n)]
            async with trio.open_nursery() as tasks:
                for t in range(n):
                    tasks.start_soon(task_logs, t)
            await join_all(threads)
            await agg.flush()
    written = lines(recorder)
    for t in range(n):  # every thread record, in each thread's order
        mine = [line for line in written if line.startswith(b"thread %d " % t)]
        assert mine == [b"thread %d record %d\n" % (t, i) for i in range(per)]
    task_lines = [line for line in written if line.startswith(b"task ")]
    assert len(task_lines) + handler.dropped == n * per  # written, or counted
    for t in range(n):
        mine = [int(line.split()[-1]) for line in task_lines if line.startswith(b"task %d " % t)]
        assert mine == sorted(mine)
    assert len(written) == n * per + len(task_lines)
    assert (
        agg.statistics().dropped == 0
    )  # the handler dropped on the Trio thread, not the aggregator


async def test_drop_mode_counts_exactly(make_logger: Any) -> None:
    async with gated_aggregator(buffer_size=5) as g:
        handler = AggregatorHandler(g.agg)  # when_full="drop" by default
        assert handler.when_full == "drop"
        assert handler.aggregator is g.agg
        log = make_logger(handler)
        await g.busy(b"first\n")

        def thread_logs() -> None:
            for i in range(100):
                log.info("thread %d", i)

        await in_thread(thread_logs)
        await settle()  # the event loop applies what the thread posted
        assert handler.dropped == 95
        for i in range(10):  # the buffer is still full
            log.warning("task %d", i)
        assert handler.dropped == 105
        g.release()
        await g.agg.flush()
        log.info("task after")
        await g.agg.flush()
    assert lines(g.writer) == [
        b"first\n",
        *(b"thread %d\n" % i for i in range(5)),
        b"task after\n",
    ]
    assert handler.dropped == 105
    assert g.agg.statistics().dropped == 0


def test_a_drop_mode_handler_never_blocks_a_thread(make_logger: Any) -> None:
    """While the Trio thread itself is stuck (here: joining the thread), a drop-mode
    thread still goes through all its records; the loop applies them afterwards."""

    async def main() -> tuple[AggregatorHandler, Recorder]:
        recorder = Recorder()
        with trio.fail_after(BOUND):
            async with (
                trio.open_nursery() as nursery,
                open_aggregator(nursery, config(recorder, buffer_size=50)) as agg,
            ):
                handler = AggregatorHandler(agg, when_full="drop")
                log = make_logger(handler)
                thread = start_thread(lambda: [log.info("line %d", i) for i in range(200)])
                join(thread)  # blocks the event loop: the thread must not need it
                await settle()
                # The first goes straight to the waiting receiver, 50 fill the buffer.
                assert handler.dropped == 149
                await agg.flush()
        return handler, recorder

    handler, recorder = trio.run(main)
    assert lines(recorder) == [b"line %d\n" % i for i in range(51)]
    assert handler.dropped == 149


async def test_records_in_flight_are_bounded(
    make_logger: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler_module, "MAX_IN_FLIGHT", 3)
    recorder = Recorder()
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config(recorder, buffer_size=100)) as agg,
    ):
        handler = AggregatorHandler(agg)
        log = make_logger(handler)
        thread = start_thread(lambda: [log.info("line %d", i) for i in range(10)])
        join(thread)  # the loop is stuck: 3 wait for it, 7 are dropped at once
        assert handler.dropped == 7
        await settle()
        await agg.flush()
    assert lines(recorder) == [b"line 0\n", b"line 1\n", b"line 2\n"]
    assert handler.dropped == 7


async def test_block_mode_waits_for_room_from_a_thread(make_logger: Any) -> None:
    async with gated_aggregator(buffer_size=1) as g:
        handler = AggregatorHandler(g.agg, when_full="block")
        log = make_logger(handler)
        await g.busy(b"first\n")
        g.fill(b"second\n")
        thread = start_thread(lambda: log.info("third"))
        with trio.fail_after(BOUND):
            while g.agg.nb_waiting != 1:
                await trio.sleep(0.001)
        log.info("from a task")  # the Trio thread never blocks: dropped and counted
        assert handler.dropped == 1
        g.release()
        await join_all([thread])
        await g.agg.flush()
    assert lines(g.writer) == [b"first\n", b"second\n", b"third\n"]
    assert handler.dropped == 1


async def test_block_mode_on_a_thread_counts_what_the_aggregator_drops(
    make_logger: Any,
) -> None:
    async with gated_aggregator(buffer_size=1, when_full="drop_newest") as g:
        handler = AggregatorHandler(g.agg, when_full="block")
        log = make_logger(handler)
        await g.busy(b"first\n")
        g.fill(b"second\n")
        await in_thread(log.info, "dropped by the aggregator")
        assert handler.dropped == 1
        log.info("dropped on the Trio thread too")
        assert handler.dropped == 2
        g.release()
    assert g.agg.statistics().dropped_full == 2


# ---------------------------------------------------------------------------- stopped


async def test_after_stop_nothing_raises_and_everything_is_counted(
    make_logger: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config(Recorder())) as agg,
    ):
        drop, block = AggregatorHandler(agg), AggregatorHandler(agg, when_full="block")
        log = make_logger(drop)
        log.addHandler(block)
        await agg.stop()
        log.info("from a task")

        def thread_logs() -> None:
            for i in range(3):
                log.info("from a thread %d", i)

        await in_thread(thread_logs)
        await settle()
        assert (drop.dropped, block.dropped) == (4, 4)
    assert capsys.readouterr().err == ""


def test_after_the_trio_run_ended_nothing_raises_and_everything_is_counted(
    make_logger: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    never_started = Aggregator(AggregatorConfig(writer=Recorder()))

    async def main() -> Aggregator:
        with trio.fail_after(BOUND):
            async with (
                trio.open_nursery() as nursery,
                open_aggregator(nursery, config(Recorder())) as agg,
            ):
                await agg.write(b"x")
        return agg

    agg = trio.run(main)
    handlers = [
        AggregatorHandler(agg),
        AggregatorHandler(agg, when_full="block"),
        AggregatorHandler(never_started),
        AggregatorHandler(never_started, when_full="block"),
    ]
    log = make_logger(handlers[0])
    for handler in handlers[1:]:
        log.addHandler(handler)
    log.info("from the thread that ran Trio")
    join(start_thread(lambda: log.info("from another thread")))
    assert [h.dropped for h in handlers] == [2, 2, 2, 2]
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------- rules


async def test_records_of_the_package_logger_are_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Attached to the root logger, the handler does not feed the aggregator's own
    reports (a drop warning, a writer error) back into it."""
    recorder = Recorder()
    recorder.fail_on = lambda data: data == b"bad\n"
    root = logging.getLogger()
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config(recorder, buffer_size=1, when_full="drop_newest")) as agg,
    ):
        handler = AggregatorHandler(agg)
        root.addHandler(handler)
        try:
            await agg.write(b"bad\n")
            await agg.flush()
            logging.getLogger("trio_aggregator.child").error("also ignored")
            logging.getLogger("app").warning("kept")
            await agg.flush()
        finally:
            root.removeHandler(handler)
    assert any(r.name == "trio_aggregator" for r in caplog.records)  # it did log
    assert recorder.calls == [b"kept\n"]
    assert handler.dropped == 0


async def test_failures_go_to_handle_error_and_are_counted(make_logger: Any) -> None:
    recorder = Recorder()
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config(recorder, max_item_bytes=20)) as agg,
    ):
        drop, block = Recording(agg), Recording(agg, when_full="block")
        log = make_logger(drop)
        log.addHandler(block)
        log.info("%d", "not a number")  # formatting fails
        log.info("x" * 30)  # larger than max_item_bytes, on the Trio thread
        await in_thread(log.info, "y" * 30)  # ... and from a thread
        await settle()
        log.info("fits")
        await agg.flush()
    assert recorder.calls == [b"fits\n", b"fits\n"]
    for handler in (drop, block):
        assert handler.dropped == 3
        assert [type(exc) for _, exc in handler.errors] == [TypeError, ValueError, ValueError]


async def test_a_filter_may_refuse_or_replace_the_record(make_logger: Any) -> None:
    recorder = Recorder()
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config(recorder, buffer_size=10)) as agg,
    ):
        handler = AggregatorHandler(agg, level=logging.WARNING)
        handler.addFilter(lambda record: "secret" not in record.getMessage())
        log = make_logger(handler)
        log.info("below the handler's level")
        log.warning("a secret")
        log.warning("public")
        assert handler.handle(logging.makeLogRecord({"msg": "secret"})) is False
        assert handler.handle(logging.makeLogRecord({"msg": "direct"})) is True
        await agg.flush()
        assert handler.dropped == 0
    assert recorder.calls == [b"public\n", b"direct\n"]


def test_when_full_is_checked() -> None:
    agg = Aggregator(AggregatorConfig(writer=Recorder()))
    with pytest.raises(ValueError, match="'drop' or 'block'"):
        AggregatorHandler(agg, when_full="wait")  # type: ignore[arg-type]


async def test_a_thread_holding_the_handler_lock_does_not_stop_the_trio_thread(
    make_logger: Any,
) -> None:
    """`logging.Handler.handle` would take the handler's lock around `emit`; this one
    does not, so a task logs while a thread waits for room through the same handler."""
    async with gated_aggregator(buffer_size=1) as g:
        handler = AggregatorHandler(g.agg, when_full="block")
        log = make_logger(handler)
        await g.busy(b"first\n")
        g.fill(b"second\n")
        thread = start_thread(lambda: log.info("waits"))
        with trio.fail_after(BOUND):
            while g.agg.nb_waiting != 1:
                await trio.sleep(0.001)
        with trio.fail_after(BOUND):
            log.info("a task logs meanwhile")  # would deadlock on the lock
        g.release()
        await join_all([thread])
    assert lines(g.writer) == [b"first\n", b"second\n", b"waits\n"]
    assert handler.dropped == 1


async def test_a_record_returned_by_filter_replaces_the_original(
    make_logger: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.12 lets a filter return the record to use instead; the handler follows."""
    recorder = Recorder()
    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config(recorder, buffer_size=10)) as agg,
    ):
        handler = AggregatorHandler(agg)
        replacement = logging.makeLogRecord({"name": "app", "msg": "replaced"})
        monkeypatch.setattr(handler, "filter", lambda record: replacement)
        log = make_logger(handler)
        log.info("original")
        await agg.flush()
    assert recorder.calls == [b"replaced\n"]


async def test_a_recursion_error_propagates_as_in_the_standard_handlers(make_logger: Any) -> None:
    class Deep(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            raise RecursionError("too deep")

    async with (
        trio.open_nursery() as nursery,
        open_aggregator(nursery, config(Recorder())) as agg,
    ):
        handler = AggregatorHandler(agg)
        handler.setFormatter(Deep())
        with pytest.raises(RecursionError):
            handler.handle(logging.makeLogRecord({"name": "app", "msg": "x"}))
        assert handler.dropped == 0
