"""Export `Aggregator.statistics` to Prometheus, through prometheus-client.

An optional part of the package: it needs ``prometheus-client``, which the
``prometheus`` extra installs (``python -m pip install '.[prometheus]'`` from a clone),
and is imported explicitly, as ``trio_aggregator.prometheus``.

`AggregatorCollector` is a prometheus-client custom collector: each scrape takes one
`Aggregator.statistics` snapshot per aggregator it exports and turns it into metric
families (gauges for the current state, counters for the totals). A scrape runs in
whatever thread serves it (prometheus-client's HTTP server thread, a web framework's
worker); `Aggregator.statistics` may be called from any thread (it has the Trio thread
make the copy), so the collector needs nothing more.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING

try:
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
except ImportError as exc:  # tests/test_prometheus.py hides prometheus_client to cover this
    raise ImportError(
        "trio_aggregator.prometheus needs prometheus-client (>= 0.20), which the 'prometheus'"
        " extra installs ('.[prometheus]' from a clone);"
        " or: python -m pip install prometheus-client"
        f" (the import failed: {exc})"
    ) from exc

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from prometheus_client.metrics_core import Metric

    from ._aggregator import Aggregator
    from ._statistics import AggregatorStatistics

__all__ = ["DEFAULT_PREFIX", "AggregatorCollector", "register"]

DEFAULT_PREFIX = "trio_aggregator"
"""The start of every metric name unless told otherwise: ``trio_aggregator_...``."""

_PREFIX = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_RESERVED_LABELS = frozenset({"reason", "quantile"})
"""Label names that some of the exported metrics use themselves."""

_QUANTILES = (("0.5", "buffered_time_p50"), ("0.99", "buffered_time_p99"))
_DROP_REASONS = (
    ("full", "dropped_full"),
    ("oldest", "dropped_oldest"),
    ("drain_timeout", "dropped_drain_timeout"),
    ("writer_error", "dropped_writer_error"),
)

# (name after the prefix, AggregatorStatistics field, unit, help text); a unit, when
# given, is already the end of the name (OpenMetrics wants it there and in ``# UNIT``).
_GAUGES = (
    ("running", "is_running", "", "1 while the aggregator accepts writes, else 0."),
    ("uptime_seconds", "uptime", "seconds", "Seconds since the current run started (0 stopped)."),
    (
        "buffer_capacity_items",
        "buffer_size",
        "",
        "Configured capacity of the buffer, in items (+Inf: unbounded).",
    ),
    (
        "processing_items",
        "nb_processing",
        "",
        "Items accepted and not yet handed to the writer.",
    ),
    ("processing_bytes", "size_processing", "bytes", "Bytes of the items in processing_items."),
    (
        "peak_processing_items",
        "peak_nb_processing",
        "",
        "Highest processing_items seen since the current run started.",
    ),
    ("waiting_writes", "nb_waiting", "", "Writes blocked because the buffer was full."),
    ("waiting_bytes", "size_waiting", "bytes", "Bytes of the writes in waiting_writes."),
    ("open_senders", "open_senders", "", "Senders handed out in this run and not closed yet."),
)
# Counter names without ``_total``: prometheus-client adds it.
_COUNTERS = (
    ("accepted_items", "items_accepted", "", "Writes accepted into the buffer."),
    ("written_items", "items_written", "", "Items handed to the writer by successful calls."),
    ("written_bytes", "bytes_written", "bytes", "Bytes of the items in written_items."),
    ("writer_calls", "writer_calls", "", "Calls made to the writer, retries included."),
    ("writer_errors", "writer_errors", "", "Writer calls that raised an exception."),
    (
        "callback_errors",
        "callback_errors",
        "",
        "Periodic callback or dead-letter hook runs that raised an exception.",
    ),
    ("sync_runs", "sync_runs", "", "Runs of sync_fn started."),
    ("async_runs", "async_runs", "", "Runs of async_fn started."),
    (
        "async_runs_skipped",
        "async_skipped",
        "",
        "async_fn ticks skipped because async_max runs were already going.",
    ),
)


class AggregatorCollector(Collector):
    """A prometheus-client collector: the statistics of aggregators, as metric families.

    Register it in a ``prometheus_client.CollectorRegistry`` (or use `register`); every
    scrape then calls `collect`, from the scraping thread. Each exported aggregator is
    one series of every metric family, told apart by its *labels*; the families are
    named ``PREFIX_...`` (see :doc:`metrics` for the list).

    Several aggregators are exported side by side through one collector: `add` the
    others, each with labels of the same names and different values. (Two collectors
    with the same prefix in one registry would emit each family twice, which the
    exposition formats forbid: the registry refuses the second one.)

    Args:
        aggregator: The first aggregator to export.
        prefix: The start of every metric name (letters, digits, ``_`` and ``:``).
        labels: Constant labels of *aggregator*'s series, such as
            ``{"aggregator": "access_log"}``. Their names fix the label names of every
            aggregator this collector exports; ``reason`` and ``quantile`` are taken.

    Raises:
        ValueError: A bad prefix, label name or label value.
    """

    def __init__(
        self,
        aggregator: Aggregator,
        *,
        prefix: str = DEFAULT_PREFIX,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self._prefix = _metric_prefix(prefix)
        self._label_names = tuple(_label_name(name) for name in labels or {})
        self._lock = threading.Lock()
        self._exported: dict[Aggregator, tuple[str, ...]] = {}
        self.add(aggregator, labels=labels)

    @property
    def prefix(self) -> str:
        """The start of every metric name."""
        return self._prefix

    @property
    def label_names(self) -> tuple[str, ...]:
        """The names of the constant labels each exported aggregator has."""
        return self._label_names

    @property
    def aggregators(self) -> tuple[Aggregator, ...]:
        """The aggregators exported, in the order they were added."""
        with self._lock:
            return tuple(self._exported)

    def add(self, aggregator: Aggregator, *, labels: Mapping[str, str] | None = None) -> None:
        """Export *aggregator* too, its series labelled *labels*.

        Raises:
            ValueError: *aggregator* is already exported, *labels* do not have the
                collector's label names, or another aggregator has the same values.
        """
        given = dict(labels or {})
        if set(given) != set(self._label_names):
            raise ValueError(
                f"labels must have the names {sorted(self._label_names)}, not {sorted(given)}"
            )
        values = tuple(_label_value(name, given[name]) for name in self._label_names)
        with self._lock:
            if aggregator in self._exported:
                raise ValueError("this aggregator is already exported by this collector")
            if values in self._exported.values():
                raise ValueError(
                    f"another aggregator is exported with the labels {given}: each needs"
                    " its own label values"
                )
            self._exported[aggregator] = values

    def remove(self, aggregator: Aggregator) -> None:
        """Stop exporting *aggregator* (its series vanish from the next scrape).

        Raises:
            KeyError: It is not exported by this collector.
        """
        with self._lock:
            del self._exported[aggregator]

    def describe(self) -> list[Metric]:
        """The metric families, without samples: what a registry checks names with."""
        return self._families(())

    def collect(self) -> list[Metric]:
        """The metric families, from one `~trio_aggregator.Aggregator.statistics` call each.

        Called by the registry at each scrape, in the scraping thread.
        """
        with self._lock:
            exported = tuple(self._exported.items())
        return self._families(
            [(values, aggregator.statistics()) for aggregator, values in exported]
        )

    def _families(
        self, snapshots: Sequence[tuple[tuple[str, ...], AggregatorStatistics]]
    ) -> list[Metric]:
        prefix, names = self._prefix, list(self._label_names)
        families: list[Metric] = []
        for suffix, field, unit, help_text in _GAUGES:
            gauge = GaugeMetricFamily(f"{prefix}_{suffix}", help_text, labels=names, unit=unit)
            for values, stats in snapshots:
                gauge.add_metric(values, float(getattr(stats, field)))
            families.append(gauge)
        buffered = GaugeMetricFamily(
            f"{prefix}_buffered_time_seconds",
            "Seconds from accepted to handed to the writer: quantiles over the last 1024"
            " sampled items (absent before the first sample).",
            labels=[*names, "quantile"],
            unit="seconds",
        )
        for values, stats in snapshots:
            for quantile, field in _QUANTILES:
                seconds: float | None = getattr(stats, field)
                if seconds is not None:
                    buffered.add_metric([*values, quantile], seconds)
        families.append(buffered)
        for suffix, field, unit, help_text in _COUNTERS:
            counter = CounterMetricFamily(f"{prefix}_{suffix}", help_text, labels=names, unit=unit)
            for values, stats in snapshots:
                counter.add_metric(values, getattr(stats, field))
            families.append(counter)
        dropped = CounterMetricFamily(
            f"{prefix}_dropped_items",
            "Items discarded, by reason: full (on arrival, drop_newest), oldest (evicted,"
            " drop_oldest), drain_timeout (undelivered at a stop), writer_error (failed for good).",
            labels=[*names, "reason"],
        )
        for values, stats in snapshots:
            for reason, field in _DROP_REASONS:
                dropped.add_metric([*values, reason], getattr(stats, field))
        families.append(dropped)
        return families


def _metric_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise ValueError(
            f"prefix must be a metric name (letters, digits, '_' and ':'), not {prefix!r}"
        )
    return prefix


def _label_name(name: object) -> str:
    if not isinstance(name, str) or not _LABEL_NAME.match(name) or name.startswith("__"):
        raise ValueError(f"not a label name: {name!r}")
    if name in _RESERVED_LABELS:
        raise ValueError(f"the label name {name!r} is used by the exported metrics")
    return name


def _label_value(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"the value of label {name!r} must be a str, not {value!r}")
    return value


def register(
    aggregator: Aggregator,
    registry: CollectorRegistry | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    labels: Mapping[str, str] | None = None,
) -> AggregatorCollector:
    """Export *aggregator* through a new `AggregatorCollector` registered in *registry*.

    Args:
        aggregator: The aggregator to export.
        registry: Where to register (default: prometheus-client's global ``REGISTRY``,
            which its ``start_http_server`` and ``generate_latest`` serve).
        prefix: The start of every metric name.
        labels: Constant labels of its series, such as ``{"aggregator": "access_log"}``.

    Returns:
        The new collector. `AggregatorCollector.add` exports more aggregators through
        it; ``registry.unregister(collector)`` stops the export.

    Raises:
        ValueError: A bad prefix or labels, or *registry* already has metrics of these
            names (from another collector with this prefix: add to that one instead).
    """
    collector = AggregatorCollector(aggregator, prefix=prefix, labels=labels)
    try:
        (REGISTRY if registry is None else registry).register(collector)
    except ValueError as exc:  # prometheus-client's DuplicateTimeseries
        raise ValueError(
            f"the registry already has metrics named {prefix}_...: export this aggregator"
            " through the collector registered first (collector.add(aggregator, labels=...))"
            f" or give it another prefix ({exc})"
        ) from exc
    return collector
