"""Issue 11, the server's side: nothing read is lost silently.

Every loss is counted in lines and bytes, by reason, and shown in the status line, the
summary, the metrics and the exit status. Loopback sockets, real clock, no sleeps: the
tests wait for explicit conditions.
"""

from __future__ import annotations

import io
import os
import urllib.request
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from trio_aggregator._serve._server import run_server

from .test_serve import finish, options, send

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")


@needs_dev_full
async def test_summary_counts_lost_lines_not_chunks(tmp_path: Path) -> None:
    """Item 5: 10,000 lines into /dev/full are 10,000 lines lost, not "dropped 286"."""
    data = b"".join(b"line %05d\n" % n for n in range(10_000))
    stderr = io.StringIO()
    opts = options(tmp_path, output="/dev/full", fsync_interval=0)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=stderr))
        await send(server.tcp_addresses[0], data, chunk=350)
        assert await finish(server) == 1
    summary = server.summary
    assert summary is not None
    assert summary.losses.lines["writer_error"] == 10_000
    assert summary.losses.bytes["writer_error"] == len(data)
    assert summary.losses.total_lines == 10_000
    text = stderr.getvalue()
    assert f"lost lines       10,000 ({len(data):,} bytes; writer error 10,000)" in text
    assert "dropped writes" in text  # the aggregator's count, named for what it counts


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll *condition* (cheap) until true; fail after *timeout* seconds."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.005)


@needs_dev_full
async def test_metrics_count_lost_lines_by_reason(tmp_path: Path) -> None:
    """Item 5: ``--metrics`` shows the losses in lines and bytes, by reason."""
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    data = b"".join(b"metric line %04d\n" % n for n in range(1000))
    opts = options(tmp_path, output="/dev/full", fsync_interval=0, metrics=("127.0.0.1", 0))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        await send(server.tcp_addresses[0], data, chunk=500)
        await wait_for(lambda: server.losses.snapshot().total_lines == 1000)
        assert server.metrics_address is not None
        url = f"http://127.0.0.1:{server.metrics_address[1]}/metrics"
        text = await trio.to_thread.run_sync(http_get, url)
        assert await finish(server) == 1
    samples = {
        (sample.name, sample.labels.get("reason")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if family.name.startswith("trio_aggregator_serve_lost_")
    }
    assert samples[("trio_aggregator_serve_lost_lines_total", "writer_error")] == 1000
    assert samples[("trio_aggregator_serve_lost_bytes_total", "writer_error")] == len(data)
    assert samples[("trio_aggregator_serve_lost_lines_total", "forced_shutdown")] == 0


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()
