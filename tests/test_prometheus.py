"""The Prometheus export (``trio_aggregator.prometheus``), against real prometheus-client.

Every test uses its own `CollectorRegistry` (one registers in the global one and takes
itself out again) and reads values back the way a scraper would: with
``registry.get_sample_value`` or by parsing ``generate_latest``. The last ones cover
``trio-aggregator serve --metrics``, in-process, scraped over real loopback HTTP.
"""

from __future__ import annotations

import importlib
import io
import math
import socket
import sys
import urllib.request
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

from trio_aggregator import Aggregator, AggregatorStatistics, open_aggregator
from trio_aggregator._serve._cli import build_parser, main
from trio_aggregator._serve._options import ServeOptions
from trio_aggregator._serve._server import LineServer, ServeError, run_server
from trio_aggregator.prometheus import DEFAULT_PREFIX, AggregatorCollector, register

from .conftest import Recorder, config, settle

if TYPE_CHECKING:
    from pathlib import Path

EXTRA_HINT = r"the 'prometheus' extra installs .*pip install prometheus-client"

GAUGES = {
    "running": "is_running",
    "uptime_seconds": "uptime",
    "buffer_capacity_items": "buffer_size",
    "processing_items": "nb_processing",
    "processing_bytes": "size_processing",
    "peak_processing_items": "peak_nb_processing",
    "waiting_writes": "nb_waiting",
    "waiting_bytes": "size_waiting",
    "open_senders": "open_senders",
}
"""Every gauge (after the prefix) and the `AggregatorStatistics` field it exports."""

COUNTERS = {
    "accepted_items_total": "items_accepted",
    "written_items_total": "items_written",
    "written_bytes_total": "bytes_written",
    "writer_calls_total": "writer_calls",
    "writer_errors_total": "writer_errors",
    "callback_errors_total": "callback_errors",
    "sync_runs_total": "sync_runs",
    "async_runs_total": "async_runs",
    "async_runs_skipped_total": "async_skipped",
}
"""Every counter sample but the dropped one, and its `AggregatorStatistics` field."""

REASONS = {
    "full": "dropped_full",
    "oldest": "dropped_oldest",
    "drain_timeout": "dropped_drain_timeout",
    "writer_error": "dropped_writer_error",
}


def generate_openmetrics(registry: CollectorRegistry) -> bytes:
    """The OpenMetrics exposition (what Prometheus asks for first)."""
    text: bytes = openmetrics_exposition.generate_latest(registry)  # type: ignore[no-untyped-call]
    return text


def parse_openmetrics(text: str) -> list[Metric]:
    """The families of an OpenMetrics exposition; this parser rejects any invalid one."""
    families: list[Metric] = list(
        openmetrics_parser.text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
    )
    return families


def sample(
    registry: CollectorRegistry,
    name: str,
    labels: dict[str, str] | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
) -> float | None:
    return registry.get_sample_value(f"{prefix}_{name}", labels)


def assert_exports(
    registry: CollectorRegistry,
    stats: AggregatorStatistics,
    labels: dict[str, str] | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
) -> None:
    """Every metric of *registry* equals the field of *stats* it exports."""
    labels = labels or {}
    for name, field in {**GAUGES, **COUNTERS}.items():
        expected = float(getattr(stats, field))
        assert sample(registry, name, labels, prefix=prefix) == expected, name
    for reason, field in REASONS.items():
        value = sample(registry, "dropped_items_total", {**labels, "reason": reason}, prefix=prefix)
        assert value == getattr(stats, field), reason
    for quantile, field in (("0.5", "buffered_time_p50"), ("0.99", "buffered_time_p99")):
        value = sample(
            registry, "buffered_time_seconds", {**labels, "quantile": quantile}, prefix=prefix
        )
        assert value == getattr(stats, field), quantile


# ---------------------------------------------------------------------------- values


async def test_exports_a_running_aggregator(autojump_clock: trio.testing.MockClock) -> None:
    registry = CollectorRegistry()
    writer = Recorder(delay=0.001)
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, config(writer, buffer_size=64)) as agg:
            collector = register(agg, registry)
            assert sample(registry, "running") == 1.0
            assert sample(registry, "buffer_capacity_items") == 64.0
            # No buffered-time sample yet: no quantile series.
            assert sample(registry, "buffered_time_seconds", {"quantile": "0.5"}) is None
            async with agg.sender():
                for i in range(40):
                    await agg.write(b"line %02d\n" % i)
                assert sample(registry, "open_senders") == 1.0
                assert sample(registry, "processing_items") == agg.nb_processing > 0
                assert sample(registry, "processing_bytes") == agg.size_processing
            await agg.flush()
            await trio.sleep(5)
            stats = agg.statistics()
            assert stats.uptime == pytest.approx(5 + 40 * 0.001)
            assert stats.buffered_time_p99 is not None
            assert_exports(registry, stats)
            assert sample(registry, "accepted_items_total") == 40.0
            assert sample(registry, "written_bytes_total") == 40 * 8
            assert sample(registry, "peak_processing_items") == stats.peak_nb_processing > 1
            assert sample(registry, "open_senders") == 0.0
            assert (sample(registry, "buffered_time_seconds", {"quantile": "0.99"}) or 0) > 0
        # Stopped: the collector still exports it, as not running.
        stats = agg.statistics()
        assert (stats.is_running, stats.uptime) == (False, 0.0)
        assert_exports(registry, stats)
        assert sample(registry, "running") == 0.0
    assert collector.aggregators == (agg,)
    assert (collector.prefix, collector.label_names) == (DEFAULT_PREFIX, ())


async def test_scrape_from_another_thread(autojump_clock: trio.testing.MockClock) -> None:
    registry = CollectorRegistry()
    gate = trio.Event()
    writer = Recorder(gate=gate)
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, config(writer, buffer_size=2)) as agg:
            register(agg, registry, labels={"aggregator": "access_log"})
            await settle()
            await agg.write(b"busy\n")  # the writer holds this one
            await settle()
            await agg.write(b"one\n")
            await agg.write(b"two\n")
            nursery.start_soon(agg.write, b"blocked\n")  # the buffer is full: it waits
            await settle()
            await trio.sleep(3)
            text = await trio.to_thread.run_sync(generate_latest, registry)
            # What a Prometheus server would read: the text format, parsed.
            values = {
                (s.name, s.labels.get("reason")): s.value
                for family in text_string_to_metric_families(text.decode())
                for s in family.samples
                if s.labels.get("aggregator") == "access_log"
            }
            assert values[(f"{DEFAULT_PREFIX}_running", None)] == 1.0
            assert values[(f"{DEFAULT_PREFIX}_processing_items", None)] == 2.0
            assert values[(f"{DEFAULT_PREFIX}_processing_bytes", None)] == 8.0
            assert values[(f"{DEFAULT_PREFIX}_waiting_writes", None)] == 1.0
            assert values[(f"{DEFAULT_PREFIX}_waiting_bytes", None)] == 8.0
            assert values[(f"{DEFAULT_PREFIX}_accepted_items_total", None)] == 3.0
            assert values[(f"{DEFAULT_PREFIX}_written_items_total", None)] == 0.0
            assert values[(f"{DEFAULT_PREFIX}_dropped_items_total", "full")] == 0.0
            # Outside Trio's thread the uptime is read on time.monotonic, not the mock
            # clock: a real (short) time, while Trio's clock says 3 s.
            assert 0.0 <= values[(f"{DEFAULT_PREFIX}_uptime_seconds", None)] < 3.0
            assert agg.uptime == pytest.approx(3.0)
            gate.set()
            await settle()  # the blocked write gets in
            await agg.flush()
    assert writer.items() == [b"busy\n", b"one\n", b"two\n", b"blocked\n"]


async def test_exposition_names_types_and_units() -> None:
    registry = CollectorRegistry()
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, config(Recorder(), buffer_size=4)) as agg:
            register(agg, registry)
            text = generate_latest(registry).decode()
            openmetrics = generate_openmetrics(registry).decode()
    types = {
        family.name: family.type
        for family in text_string_to_metric_families(text)
        if family.name.startswith(DEFAULT_PREFIX)
    }
    expected = {f"{DEFAULT_PREFIX}_{name}": "gauge" for name in GAUGES}
    expected[f"{DEFAULT_PREFIX}_buffered_time_seconds"] = "gauge"
    expected.update(
        {f"{DEFAULT_PREFIX}_{name.removesuffix('_total')}": "counter" for name in COUNTERS}
    )
    expected[f"{DEFAULT_PREFIX}_dropped_items"] = "counter"
    assert types == expected
    assert f"# TYPE {DEFAULT_PREFIX}_written_bytes_total counter\n" in text
    assert f'{DEFAULT_PREFIX}_dropped_items_total{{reason="oldest"}} 0.0\n' in text
    # OpenMetrics (what Prometheus asks for first) carries the units, and its strict
    # parser accepts the whole exposition.
    assert f"# UNIT {DEFAULT_PREFIX}_uptime_seconds seconds\n" in openmetrics
    assert f"# UNIT {DEFAULT_PREFIX}_written_bytes bytes\n" in openmetrics
    assert len(parse_openmetrics(openmetrics)) == len(expected)


async def test_unbounded_buffer_is_plus_inf() -> None:
    registry = CollectorRegistry()
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, config(Recorder(), buffer_size=math.inf)) as agg:
            register(agg, registry)
            assert sample(registry, "buffer_capacity_items") == math.inf
            assert (
                f"{DEFAULT_PREFIX}_buffer_capacity_items +Inf\n"
                in generate_latest(registry).decode()
            )


async def test_callback_counters(autojump_clock: trio.testing.MockClock) -> None:
    registry = CollectorRegistry()

    def failing_sync() -> None:
        raise OSError("fsync failed")

    async def slow_async() -> None:
        await trio.sleep(2.5)

    cfg = config(
        Recorder(),
        sync_fn=failing_sync,
        sync_interval=1.0,
        async_fn=slow_async,
        async_interval=1.0,
        async_max=1,
    )
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, cfg) as agg:
            register(agg, registry, prefix="app_log")
            await trio.sleep(10.5)
            stats = agg.statistics()
            assert stats.sync_runs >= 10
            assert stats.callback_errors == stats.sync_runs
            assert stats.async_runs >= 3
            assert stats.async_skipped >= 3
            assert_exports(registry, stats, prefix="app_log")
            assert sample(registry, "sync_runs_total", prefix="app_log") == stats.sync_runs
            assert (sample(registry, "async_runs_skipped_total", prefix="app_log") or 0) > 0


# ---------------------------------------------------------------------------- drops


async def test_drops_by_reason_full_and_writer_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = CollectorRegistry()
    gate = trio.Event()
    writer = Recorder(gate=gate)
    writer.fail_on = lambda data: data == b"bad\n"
    cfg = config(writer, buffer_size=1, when_full="drop_newest")
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, cfg) as agg:
            register(agg, registry, labels={"aggregator": "access_log"})
            labels = {"aggregator": "access_log"}
            await settle()
            await agg.write(b"bad\n")  # the writer holds it, and will fail on it
            await settle()
            assert await agg.write(b"kept\n") == 5  # the bytes accepted
            for _ in range(3):
                assert await agg.write(b"lost\n") == 0  # full: dropped on arrival
            assert sample(registry, "dropped_items_total", {**labels, "reason": "full"}) == 3.0
            gate.set()
            await agg.flush()
            stats = agg.statistics()
            assert_exports(registry, stats, labels)
    assert sample(registry, "dropped_items_total", {**labels, "reason": "writer_error"}) == 1.0
    assert sample(registry, "writer_errors_total", labels) == 1.0
    assert sample(registry, "written_items_total", labels) == 1.0
    assert sample(registry, "dropped_items_total", {**labels, "reason": "oldest"}) == 0.0


async def test_drops_by_reason_oldest_and_drain_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = CollectorRegistry()
    writer = Recorder(gate=trio.Event())  # never opens
    cfg = config(writer, buffer_size=2, when_full="drop_oldest", drain_timeout=1.0)
    async with trio.open_nursery() as nursery:
        async with open_aggregator(nursery, cfg) as agg:
            register(agg, registry)
            await settle()
            for i in range(5):
                await agg.write(b"%d\n" % i)
                await settle()
            # "0" is with the writer, "1" and "2" were evicted, "3" and "4" are buffered.
            assert sample(registry, "dropped_items_total", {"reason": "oldest"}) == 2.0
            assert sample(registry, "processing_items") == 2.0
        # The stop gave up after drain_timeout with "0", "3", "4" undelivered.
    stats = agg.statistics()
    assert stats.dropped_drain_timeout == 3
    assert_exports(registry, stats)
    assert sample(registry, "dropped_items_total", {"reason": "drain_timeout"}) == 3.0


# ---------------------------------------------------------------------------- several


async def test_several_aggregators_side_by_side(autojump_clock: trio.testing.MockClock) -> None:
    registry = CollectorRegistry()
    async with trio.open_nursery() as nursery:
        async with (
            open_aggregator(nursery, config(Recorder(), buffer_size=8)) as access,
            open_aggregator(nursery, config(Recorder(), buffer_size=16)) as audit,
        ):
            collector = register(access, registry, labels={"aggregator": "access_log"})
            collector.add(audit, labels={"aggregator": "audit_log"})
            assert collector.aggregators == (access, audit)
            assert collector.label_names == ("aggregator",)
            await access.write(b"a\n")
            for _ in range(3):
                await audit.write(b"bb\n")
            await access.flush()
            await audit.flush()
            assert_exports(registry, access.statistics(), {"aggregator": "access_log"})
            assert_exports(registry, audit.statistics(), {"aggregator": "audit_log"})
            assert sample(registry, "written_bytes_total", {"aggregator": "audit_log"}) == 9.0
            # One family per metric, each with a series per aggregator: the strict
            # OpenMetrics parser accepts it.
            families = parse_openmetrics(generate_openmetrics(registry).decode())
            written = next(f for f in families if f.name == f"{DEFAULT_PREFIX}_written_items")
            assert {s.labels["aggregator"]: s.value for s in written.samples} == {
                "access_log": 1.0,
                "audit_log": 3.0,
            }

            # A second collector with the same prefix would repeat every family: refused,
            # with the way out in the message.
            with pytest.raises(ValueError, match=r"collector\.add\(aggregator"):
                register(audit, registry, labels={"aggregator": "other"})
            # Another prefix is another set of families.
            register(audit, registry, prefix="audit")
            assert sample(registry, "written_items_total", prefix="audit") == 3.0

            collector.remove(audit)
            assert list(collector.aggregators) == [access]
            assert sample(registry, "running", {"aggregator": "audit_log"}) is None
            assert sample(registry, "running", {"aggregator": "access_log"}) == 1.0
            with pytest.raises(KeyError):
                collector.remove(audit)
            registry.unregister(collector)
            assert sample(registry, "running", {"aggregator": "access_log"}) is None


async def test_add_checks_labels_and_duplicates() -> None:
    async with trio.open_nursery() as nursery:
        async with (
            open_aggregator(nursery, config(Recorder())) as one,
            open_aggregator(nursery, config(Recorder())) as two,
        ):
            collector = AggregatorCollector(one, labels={"aggregator": "one", "host": "h1"})
            with pytest.raises(ValueError, match="already exported"):
                collector.add(one, labels={"aggregator": "x", "host": "h1"})
            with pytest.raises(ValueError, match="must have the names"):
                collector.add(two, labels={"aggregator": "two"})
            with pytest.raises(ValueError, match="must have the names"):
                collector.add(two)
            with pytest.raises(ValueError, match="its own label values"):
                collector.add(two, labels={"host": "h1", "aggregator": "one"})
            with pytest.raises(ValueError, match="must be a str"):
                collector.add(two, labels={"aggregator": "two", "host": 1})  # type: ignore[dict-item]
            collector.add(two, labels={"host": "h1", "aggregator": "two"})
            assert collector.aggregators == (one, two)
            # No labels at all: one aggregator only, any other would repeat its series.
            bare = AggregatorCollector(one)
            with pytest.raises(ValueError, match="its own label values"):
                bare.add(two)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prefix": ""}, "prefix must be a metric name"),
        ({"prefix": "1abc"}, "prefix must be a metric name"),
        ({"prefix": "my-app"}, "prefix must be a metric name"),
        ({"prefix": None}, "prefix must be a metric name"),
        ({"labels": {"my-label": "x"}}, "not a label name"),
        ({"labels": {"__name": "x"}}, "not a label name"),
        ({"labels": {1: "x"}}, "not a label name"),
        ({"labels": {"reason": "x"}}, "used by the exported metrics"),
        ({"labels": {"quantile": "x"}}, "used by the exported metrics"),
        ({"labels": {"aggregator": b"x"}}, "must be a str"),
    ],
)
def test_bad_prefix_or_labels(kwargs: dict[str, object], message: str) -> None:
    agg = Aggregator(config(Recorder()))
    with pytest.raises(ValueError, match=message):
        AggregatorCollector(agg, **kwargs)  # type: ignore[arg-type]


def test_describe_names_the_families_without_reading_statistics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agg = Aggregator(config(Recorder()))
    collector = AggregatorCollector(agg, prefix="ns:app")

    def no_statistics() -> AggregatorStatistics:
        raise AssertionError("describe() must not take a snapshot")

    monkeypatch.setattr(agg, "statistics", no_statistics)
    families = collector.describe()
    assert all(not family.samples for family in families)
    assert {family.name for family in families} == {
        f"ns:app_{name.removesuffix('_total')}" for name in {**GAUGES, **COUNTERS}
    } | {"ns:app_buffered_time_seconds", "ns:app_dropped_items"}


def test_register_defaults_to_the_global_registry() -> None:
    agg = Aggregator(config(Recorder()))  # never started: exported as stopped
    collector = register(agg, prefix="test_trio_aggregator_global")
    try:
        assert REGISTRY.get_sample_value("test_trio_aggregator_global_running") == 0.0
        assert REGISTRY.get_sample_value("test_trio_aggregator_global_buffer_capacity_items") == 1
    finally:
        REGISTRY.unregister(collector)
    assert REGISTRY.get_sample_value("test_trio_aggregator_global_running") is None


# ---------------------------------------------------------------------------- the extra


def hide_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if prometheus-client were not installed: importing it (or us) fails."""
    for name in list(sys.modules):
        if name == "prometheus_client" or name.startswith("prometheus_client."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "trio_aggregator.prometheus")


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_prometheus_client(monkeypatch)
    with pytest.raises(ImportError, match=EXTRA_HINT) as info:
        importlib.import_module("trio_aggregator.prometheus")
    assert "needs prometheus-client" in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)
    # The package itself never needed it.
    assert importlib.import_module("trio_aggregator").Aggregator is Aggregator


# ---------------------------------------------------------------------------- serve --metrics


def serve_options(tmp_path: Path, **kwargs: object) -> ServeOptions:
    values: dict[str, object] = {
        "tcp": (("127.0.0.1", 0),),
        "output": str(tmp_path / "out.log"),
        "quiet": True,
        "shutdown_idle": 0.01,
        "metrics": ("127.0.0.1", 0),
    }
    values.update(kwargs)
    return ServeOptions(**values)  # type: ignore[arg-type]


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def test_cli_metrics_address() -> None:
    parse = build_parser().parse_args
    assert parse(["serve", "--metrics", "9464"]).metrics == ("127.0.0.1", 9464)
    assert parse(["serve", "--metrics", "0.0.0.0:9100"]).metrics == ("0.0.0.0", 9100)
    assert parse(["serve", "--metrics", "[::1]:0"]).metrics == ("::1", 0)
    assert parse(["serve"]).metrics is None


@pytest.mark.parametrize("bad", ["", "nohost", "127.0.0.1:99999", "70000"])
def test_cli_bad_metrics_address(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--metrics", bad]) == 2
    assert "argument --metrics" in capsys.readouterr().err


def test_cli_metrics_without_the_extra_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    hide_prometheus_client(monkeypatch)
    argv = ["serve", "--tcp", "127.0.0.1:0", "-o", str(tmp_path / "x.log"), "--metrics", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: --metrics: trio_aggregator.prometheus needs prometheus-client" in err
    assert "python -m pip install prometheus-client" in err
    assert not (tmp_path / "x.log").exists()  # nothing was started


async def test_serve_exposes_metrics_over_http(tmp_path: Path) -> None:
    stderr = io.StringIO()
    options = serve_options(tmp_path, announce=True)
    async with trio.open_nursery() as nursery:
        server: LineServer = await nursery.start(partial(run_server, options, stderr=stderr))
        assert server.metrics_address is not None
        host, port = server.metrics_address
        assert (host, port > 0) == ("127.0.0.1", True)
        url = f"http://127.0.0.1:{port}/metrics"
        assert f"metrics on {url}\n" in stderr.getvalue()
        stream = await trio.open_tcp_stream(*server.tcp_addresses[0])
        async with stream:
            await stream.send_all(b"one\ntwo\nthree\n")
        await trio.testing.wait_all_tasks_blocked()
        # prometheus-client's server thread scrapes the running aggregator.
        text = await trio.to_thread.run_sync(http_get, url)
        values = {
            family.name: family.samples[0].value
            for family in text_string_to_metric_families(text)
            if family.samples and "reason" not in family.samples[0].labels
        }
        assert values[f"{DEFAULT_PREFIX}_running"] == 1.0
        assert values[f"{DEFAULT_PREFIX}_buffer_capacity_items"] == options.buffer
        assert values[f"{DEFAULT_PREFIX}_accepted_items"] >= 1.0
        server.shutdown()
        await server.wait_finished()
    assert server.exit_code == 0
    assert (tmp_path / "out.log").read_bytes() == b"one\ntwo\nthree\n"
    # The metrics server stopped with the run.
    with pytest.raises(OSError, match="refused"):
        await trio.to_thread.run_sync(http_get, url)


async def test_serve_metrics_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        options = serve_options(tmp_path, metrics=("127.0.0.1", port))
        with pytest.raises(ServeError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            await run_server(options)


async def test_serve_metrics_without_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hide_prometheus_client(monkeypatch)
    with pytest.raises(ServeError, match=EXTRA_HINT):
        await run_server(serve_options(tmp_path))


async def test_serve_metrics_count_what_the_input_framing_found(tmp_path: Path) -> None:
    options = serve_options(tmp_path, framing="octet-counted", max_line_bytes=8)
    async with trio.open_nursery() as nursery:
        server: LineServer = await nursery.start(partial(run_server, options))
        assert server.metrics_address is not None
        url = f"http://127.0.0.1:{server.metrics_address[1]}/metrics"
        stream = await trio.open_tcp_stream(*server.tcp_addresses[0])
        async with stream:
            # A malformed frame, one 4 bytes over the limit, and a binary record.
            await stream.send_all(b"not counted\n12 <13>12345678" + b"3 a\xffb")
        await trio.testing.wait_all_tasks_blocked()
        text = await trio.to_thread.run_sync(http_get, url)
        values = {
            family.name: family.samples[0].value
            for family in text_string_to_metric_families(text)
            if family.name.startswith("trio_aggregator_serve_") and family.samples
        }
        server.shutdown()
        await server.wait_finished()
    assert values["trio_aggregator_serve_framing_errors"] == 2.0
    assert values["trio_aggregator_serve_lines_truncated"] == 2.0  # "not coun" and the frame
    assert values["trio_aggregator_serve_bytes_discarded"] == 3.0 + 4.0
    assert values["trio_aggregator_serve_binary_records"] == 1.0
    assert server.exit_code == 1  # framing errors make the exit status 1
