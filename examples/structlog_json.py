"""structlog to JSON lines in one file, from Trio tasks and a worker thread at once.

structlog's processor chain ends in `structlog.processors.JSONRenderer`; the
rendered line goes to a standard `logging` logger whose only handler is an
`AggregatorHandler`, which hands it to the aggregator (on the Trio thread without
ever blocking the event loop; from the worker thread, with ``when_full="block"``,
waiting for room). The aggregator appends each line, whole, to the file.

Run it: ``python examples/structlog_json.py`` (needs structlog). It checks the file
and exits 0 if every line is valid JSON and each source's lines are in order.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import structlog
import trio
import trio.lowlevel

from trio_aggregator import (
    AggregatorConfig,
    AggregatorHandler,
    FileSink,
    open_aggregator,
)

TASKS = 3
PER_SOURCE = 100


def configure(handler: logging.Handler) -> None:
    """structlog renders JSON; the stdlib logger ``app`` hands it to the aggregator."""
    app = logging.getLogger("app")
    app.handlers[:] = [handler]
    app.setLevel(logging.INFO)
    app.propagate = False
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


async def task(n: int) -> None:
    log = structlog.get_logger("app").bind(source=f"task-{n}")
    for i in range(PER_SOURCE):
        log.info("tick", i=i)
        await trio.lowlevel.checkpoint()


def worker() -> None:
    """Blocking work in a thread, logging as it goes."""
    log = structlog.get_logger("app").bind(source="thread")
    for i in range(PER_SOURCE):
        log.info("tick", i=i)


async def main(path: Path) -> tuple[int, int]:
    sink = FileSink(path)
    config = AggregatorConfig(writer=sink.write, buffer_size=1000, batch_max_items=64)
    async with sink, trio.open_nursery() as nursery:
        async with open_aggregator(nursery, config) as agg:
            handler = AggregatorHandler(agg, when_full="block")
            configure(handler)
            async with trio.open_nursery() as producers:
                for n in range(TASKS):
                    producers.start_soon(task, n)
                producers.start_soon(trio.to_thread.run_sync, worker)
        return TASKS * PER_SOURCE + PER_SOURCE, handler.dropped


def check(path: Path, sent: int, dropped: int) -> None:
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(events) + dropped == sent, (len(events), dropped, sent)
    sources = {event["source"] for event in events}
    for source in sources:
        ticks = [event["i"] for event in events if event["source"] == source]
        assert ticks == sorted(ticks), f"{source}: out of order"
    assert [e["i"] for e in events if e["source"] == "thread"] == list(
        range(PER_SOURCE)
    )
    counts = f"{len(events)} JSON lines from {len(sources)} sources, {dropped} dropped"
    print(f"structlog: {counts}")
    print(f"  first: {json.dumps(events[0], sort_keys=True)}")
    print("verified")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "app.jsonl"
        sent, dropped = trio.run(main, out)
        try:
            check(out, sent, dropped)
        except AssertionError as exc:
            print(f"FAILED: {exc}")
            sys.exit(1)
