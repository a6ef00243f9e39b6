"""``serve --metrics``: the aggregator's Prometheus metrics over HTTP, `MetricsEndpoint`.

prometheus-client's HTTP server runs in its own thread and serves a registry of its
own, where the server registers its aggregator with `trio_aggregator.prometheus`. It
needs the ``prometheus`` extra.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterator
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from trio_aggregator import Aggregator

    from ._losses import LossSnapshot
    from ._statistics import ServerStatistics

__all__ = ["MetricsEndpoint", "start_metrics_endpoint"]


class MetricsEndpoint:
    """A running metrics HTTP server: register an aggregator, `stop` it when done."""

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        httpd: WSGIServer,
        thread: threading.Thread,
    ) -> None:
        self.address = address
        """Where the metrics are served (the real port when asked for port 0)."""
        self._registry = registry
        self._httpd = httpd
        self._thread = thread

    def register(self, aggregator: Aggregator) -> None:
        """Serve the metrics of *aggregator* (on every scrape, one fresh snapshot)."""
        from trio_aggregator.prometheus import AggregatorCollector  # imported at start

        self._registry.register(AggregatorCollector(aggregator))

    def register_losses(self, losses: Callable[[], LossSnapshot]) -> None:
        """Serve the server's own counts of lines lost (*losses* gives a snapshot)."""
        self._registry.register(_LossCollector(losses))

    def register_input(self, statistics: Callable[[], ServerStatistics]) -> None:
        """Serve the counts of what the input's framing truncated, discarded or flagged."""
        self._registry.register(_InputCollector(statistics))

    def stop(self) -> None:
        """Stop serving; blocks up to 0.5 s (the server polls at that interval)."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


async def start_metrics_endpoint(host: str, port: int) -> MetricsEndpoint:
    """Serve metrics over HTTP on *host*, *port* (0: a free port).

    Raises:
        ImportError: prometheus-client is missing; the message names the extra.
        OSError: The address cannot be listened on.
    """
    # First: without prometheus-client, its ImportError names the extra to install.
    importlib.import_module("trio_aggregator.prometheus")
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    httpd, thread = await trio.to_thread.run_sync(
        functools.partial(start_http_server, port, addr=host, registry=registry)
    )
    return MetricsEndpoint((host, httpd.server_port), registry, httpd, thread)


class _LossCollector:
    """``trio_aggregator_serve_lost_{lines,bytes}_total{reason=...}``: losses in lines."""

    def __init__(self, losses: Callable[[], LossSnapshot]) -> None:
        self._losses = losses

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily

        snapshot = self._losses()
        for unit, counts in (("lines", snapshot.lines), ("bytes", snapshot.bytes)):
            family = CounterMetricFamily(
                f"trio_aggregator_serve_lost_{unit}",
                f"{unit.capitalize()} the server read and did not write, by reason.",
                labels=["reason"],
            )
            for reason, value in counts.items():
                family.add_metric([reason], value)
            yield family


_INPUT_COUNTERS = (
    ("lines_truncated", "Records cut to --max-line-bytes."),
    ("bytes_discarded", "Bytes of over-long records thrown away."),
    ("framing_errors", "Malformed frames, and octet-counted frames over --max-line-bytes."),
    ("binary_records", "Records holding NUL (where NUL does not end one) or invalid UTF-8."),
)


class _InputCollector:
    """``trio_aggregator_serve_{lines_truncated,bytes_discarded,...}_total``."""

    def __init__(self, statistics: Callable[[], ServerStatistics]) -> None:
        self._statistics = statistics

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily

        snapshot = self._statistics()
        for name, documentation in _INPUT_COUNTERS:
            yield CounterMetricFamily(
                f"trio_aggregator_serve_{name}", documentation, value=getattr(snapshot, name)
            )
