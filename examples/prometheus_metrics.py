"""Two aggregators exported to Prometheus through one collector, scraped once.

``register`` puts a collector for the first aggregator in prometheus-client's
default registry, ``add`` puts the second in the same collector (one metric family,
one series per label set), and prometheus-client's HTTP server serves the registry
from a thread of its own. The program then scrapes its own ``/metrics`` page, as
Prometheus would, and checks the written-items counter of each aggregator; it prints
``verified``.

Run it: ``python examples/prometheus_metrics.py [--port 9464]`` (needs the
``prometheus`` extra; ``--port 0``: any free port). It writes in a temporary
directory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import urllib.request
from pathlib import Path

import prometheus_client
import trio

from trio_aggregator import AggregatorConfig, FileSink, open_aggregator
from trio_aggregator.prometheus import register


async def main(directory: Path, port: int) -> str:
    access_sink = FileSink(directory / "access.log")
    audit_sink = FileSink(directory / "audit.log")
    access_config = AggregatorConfig(writer=access_sink.write, buffer_size=1000)
    audit_config = AggregatorConfig(writer=audit_sink.write, buffer_size=1000)
    async with (
        access_sink,
        audit_sink,
        trio.open_nursery() as nursery,
        open_aggregator(nursery, access_config) as access,
        open_aggregator(nursery, audit_config) as audit,
    ):
        collector = register(access, labels={"aggregator": "access_log"})
        collector.add(audit, labels={"aggregator": "audit_log"})
        server, thread = prometheus_client.start_http_server(port, addr="127.0.0.1")
        try:
            for i in range(3):
                await access.write(b"GET /page/%d\n" % i)
            await audit.write(b"login alice\n")
            await access.flush()
            await audit.flush()
            url = f"http://127.0.0.1:{server.server_port}/metrics"
            page = await trio.to_thread.run_sync(scrape, url)
        finally:
            server.shutdown()  # prometheus-client's server thread ends
            await trio.to_thread.run_sync(thread.join)
            collector.remove(audit)  # its series vanish from the next scrape
    return page


def scrape(url: str) -> str:
    """What Prometheus does: read the page (in a worker thread: urlopen blocks)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


EXPECTED = (
    'trio_aggregator_written_items_total{aggregator="access_log"} 3.0',
    'trio_aggregator_written_items_total{aggregator="audit_log"} 1.0',
)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="Export two aggregators and scrape them."
    )
    parser.add_argument("--port", type=int, default=9464, help="0: any free port")
    with tempfile.TemporaryDirectory() as tmp:
        text = trio.run(main, Path(tmp), parser.parse_args().port)
    found = [line for line in text.splitlines() if line in EXPECTED]
    print("\n".join(found))
    if found != list(EXPECTED):
        print("FAILED: the scrape misses", set(EXPECTED) - set(found), file=sys.stderr)
        sys.exit(1)
    print("verified")
