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
    from collections.abc import Callable, Iterator, Sequence
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from trio_aggregator import Aggregator

    from ._losses import LossSnapshot
    from ._outputs import ForwardOutput, Outputs
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

    def register_outputs(self, outputs: Outputs) -> None:
        """Serve the first output's aggregator metrics (as `register`) and, for each
        forward target, its aggregator's and its sink's, labelled ``output="HOST:PORT"``
        (``trio_aggregator_serve_forward_...``)."""
        from trio_aggregator.prometheus import AggregatorCollector

        aggregator = outputs.primary.aggregator
        assert aggregator is not None
        self.register(aggregator)
        forwards = outputs.forwards
        if not forwards:
            return
        collector: AggregatorCollector | None = None
        for out in forwards:
            assert out.aggregator is not None
            labels = {"output": out.name}
            if collector is None:
                collector = AggregatorCollector(
                    out.aggregator, prefix=FORWARD_PREFIX, labels=labels
                )
            else:
                collector.add(out.aggregator, labels=labels)
        assert collector is not None
        self._registry.register(collector)
        self._registry.register(_ForwardCollector(forwards))

    def register_losses(self, losses: Callable[[], LossSnapshot]) -> None:
        """Serve the server's own counts of lines lost (*losses* gives a snapshot)."""
        self._registry.register(_LossCollector(losses))

    def register_counts(self, counts: Callable[[], Sequence[tuple[str, str, int]]]) -> None:
        """Serve counters given by *counts* as ``(name, help, value)`` (on every scrape)."""
        self._registry.register(_CountsCollector(counts))

    def register_input(self, statistics: Callable[[], ServerStatistics]) -> None:
        """Serve the counts of what the input's framing truncated, discarded or flagged."""
        self.register_counts(lambda: input_counts(statistics()))

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


FORWARD_PREFIX = "trio_aggregator_serve_forward"
"""The start of the names of the forward targets' metrics."""

_FORWARD_COUNTERS = (
    ("connects", "Connections opened to the forward target."),
    ("reconnects", "Connections opened after one was lost."),
    ("connect_failures", "Attempts to connect that failed."),
    ("failed_sends", "Sends that failed part way (the batch was sent again, whole)."),
    ("records_sent", "Records sent (a re-sent one counted once)."),
    ("records_resent", "Records sent again after a failed send (possible duplicates)."),
)


class _ForwardCollector:
    """The forward sinks' counters, labelled ``output="HOST:PORT"``."""

    def __init__(self, forwards: list[ForwardOutput]) -> None:
        self._forwards = forwards

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        stats = [
            (out.name, out.sink.statistics(), out.account.lines_lost) for out in self._forwards
        ]
        connected = GaugeMetricFamily(
            f"{FORWARD_PREFIX}_connected", "1 if connected to the target.", labels=["output"]
        )
        for name, fwd, _ in stats:
            connected.add_metric([name], 1.0 if fwd.connected else 0.0)
        yield connected
        for field, help_text in _FORWARD_COUNTERS:
            family = CounterMetricFamily(f"{FORWARD_PREFIX}_{field}", help_text, labels=["output"])
            for name, fwd, _ in stats:
                family.add_metric([name], getattr(fwd, field))
            yield family
        lost = CounterMetricFamily(
            f"{FORWARD_PREFIX}_lost_lines", "Lines this output lost.", labels=["output"]
        )
        for name, _, lines in stats:
            lost.add_metric([name], lines)
        yield lost


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


def input_counts(snapshot: ServerStatistics) -> list[tuple[str, str, int]]:
    """``trio_aggregator_serve_{lines_truncated,bytes_discarded,...}`` of *snapshot*."""
    return [
        (f"trio_aggregator_serve_{name}", documentation, getattr(snapshot, name))
        for name, documentation in _INPUT_COUNTERS
    ]


class _CountsCollector:
    """Counters from a function giving ``(name, help, value)`` triples (name sans ``_total``)."""

    def __init__(self, counts: Callable[[], Sequence[tuple[str, str, int]]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily

        for name, documentation, value in self._counts():
            yield CounterMetricFamily(name, documentation, value=value)
