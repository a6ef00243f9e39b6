"""Shared pieces of the benchmark suite: parameters, payloads, sinks and the timing harness.

Every case is a plain function ``run(params) -> Measurement`` that does one whole
repetition on its own (its own ``trio.run``, ``asyncio.run`` or threads) and times
only the part where items flow, with `time.perf_counter`. Event-loop creation,
task or thread start-up and verification happen outside the timed region.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

#: Marker that starts a timestamped payload: three bytes that the filler never holds,
#: then the `time.perf_counter_ns` of the write as 16 hex digits.
MARK = b"\x00TS"
MARK_STR = "\x00TS"
_STAMP_LEN = len(MARK) + 16

#: Every ``SAMPLE_EVERY``-th write of a producer carries a timestamp in a latency pass.
SAMPLE_EVERY = 32


@dataclass(frozen=True)
class Params:
    """What one repetition of a case runs."""

    size: int
    """Bytes per item (a line ending in ``\\n`` for the file cases)."""
    producers: int
    """Concurrent producer tasks (threads for the logging case)."""
    items: int
    """Total items, a multiple of ``producers``."""
    buffer: int = 1024
    """Capacity of every bounded buffer (channel, queue, aggregator)."""
    latency: bool = False
    """Latency pass: timestamp every ``SAMPLE_EVERY``-th item and record write->writer."""
    workdir: str = "."
    """Where the file cases write their files."""

    @property
    def per_producer(self) -> int:
        """Items each producer writes."""
        return self.items // self.producers


Span = tuple[float, float]
"""(wall seconds by `time.perf_counter`, CPU seconds of the process by `time.process_time`)."""


def clock() -> Span:
    """Both clocks now: pass the result to `since`."""
    return time.perf_counter(), time.process_time()


def since(start: Span) -> Span:
    """Wall and CPU seconds elapsed since *start* (from `clock`)."""
    return time.perf_counter() - start[0], time.process_time() - start[1]


@dataclass
class Measurement:
    """The outcome of one timed repetition."""

    items: int
    nbytes: int
    elapsed: float
    """Wall-clock seconds (`time.perf_counter`): what the throughput figures use."""
    writer_calls: int
    latencies_ns: list[int] = field(default_factory=list[int])
    cpu: float = math.nan
    """CPU seconds the whole process (all its threads) used meanwhile."""

    @property
    def items_per_s(self) -> float:
        """Throughput in items per second (wall clock)."""
        return self.items / self.elapsed if self.elapsed > 0 else math.inf

    @property
    def items_per_cpu_s(self) -> float:
        """Items per CPU second of the process: what the machine's other load does not skew."""
        return self.items / self.cpu if self.cpu > 0 else math.nan


CaseFn = Callable[[Params], Measurement]


def payload(size: int, *, line: bool = False) -> bytes:
    """A payload of *size* bytes that never contains `MARK` (``\\n``-terminated if *line*)."""
    if line:
        return b"x" * (size - 1) + b"\n"
    return b"x" * size


def stamped(filler: bytes) -> bytes:
    """A copy of *filler* (same length) whose head carries the current `time.perf_counter_ns`."""
    return MARK + b"%016x" % time.perf_counter_ns() + filler[_STAMP_LEN:]


def stamped_str(filler: str) -> str:
    """`stamped` for `str` payloads (the logging case)."""
    return MARK_STR + f"{time.perf_counter_ns():016x}" + filler[_STAMP_LEN:]


class Sink:
    """The no-op writer every case hands its items to: counts calls and bytes, nothing else."""

    __slots__ = ("calls", "nbytes")

    def __init__(self) -> None:
        self.calls = 0
        self.nbytes = 0

    def __call__(self, data: Any) -> None:
        self.calls += 1
        self.nbytes += len(data)

    @property
    def latencies_ns(self) -> list[int]:
        """No latencies are recorded outside a latency pass."""
        return []


class LatencySink(Sink):
    """A `Sink` that also finds the timestamps in what it is handed (bytes, str or a list)."""

    __slots__ = ("_lat", "_mark")

    def __init__(self, *, text: bool = False) -> None:
        super().__init__()
        self._lat: list[int] = []
        self._mark: Any = MARK_STR if text else MARK

    def __call__(self, data: Any) -> None:
        now = time.perf_counter_ns()
        self.calls += 1
        if isinstance(data, list):
            for part in data:  # pyright: ignore[reportUnknownVariableType]
                self._scan(part, now)
                self.nbytes += len(part)  # pyright: ignore[reportUnknownArgumentType]
        else:
            self._scan(data, now)
            self.nbytes += len(data)

    def _scan(self, data: Any, now: int) -> None:
        mark = self._mark
        i = data.find(mark)
        while i >= 0:
            start = i + len(mark)
            self._lat.append(now - int(data[start : start + 16], 16))
            i = data.find(mark, start)

    @property
    def latencies_ns(self) -> list[int]:
        """write->writer delays of the sampled items, in nanoseconds."""
        return self._lat


def make_sink(params: Params, *, text: bool = False) -> Sink:
    """A `LatencySink` in a latency pass, else the plain `Sink`."""
    return LatencySink(text=text) if params.latency else Sink()


def measurement(params: Params, sink: Sink, elapsed: Span) -> Measurement:
    """The `Measurement` of a repetition whose writer was *sink*, once its bytes are checked.

    A case that lost or duplicated bytes fails loudly: numbers from a broken run are
    worthless.
    """
    expected = params.items * params.size
    if sink.nbytes != expected:
        raise AssertionError(f"expected {expected} bytes at the writer, got {sink.nbytes}")
    return Measurement(
        items=params.items,
        nbytes=sink.nbytes,
        elapsed=elapsed[0],
        cpu=elapsed[1],
        writer_calls=sink.calls,
        latencies_ns=sink.latencies_ns,
    )


def file_measurement(
    params: Params, path: str, elapsed: Span, writer_calls: int, who: str
) -> Measurement:
    """The `Measurement` of a file case: checks the size of the file at *path*, removes it."""
    nbytes = os.path.getsize(path)
    os.unlink(path)
    expected = params.items * params.size
    if nbytes != expected:
        raise AssertionError(f"{who} wrote {nbytes} bytes, expected {expected}")
    return Measurement(
        items=params.items,
        nbytes=nbytes,
        elapsed=elapsed[0],
        cpu=elapsed[1],
        writer_calls=writer_calls,
    )


def percentile(values: list[int] | list[float], q: float) -> float:
    """The *q*-quantile (0..1) of *values*, nearest-rank; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return float(ordered[k])


def round_items(items: int, producers: int) -> int:
    """*items* rounded up to a positive multiple of *producers*."""
    per = max(1, math.ceil(items / producers))
    return per * producers


@dataclass
class CaseResult:
    """The best repetition of a case plus its latency pass."""

    best: Measurement
    reps: list[float]
    """items/s of every timed repetition."""
    best_cpu: float = math.nan
    """The best items per CPU second over the repetitions."""
    p50_us: float = math.nan
    p99_us: float = math.nan
    samples: int = 0


def calibrate(fn: CaseFn, base: Params, min_time: float) -> int:
    """How many items make one repetition of *fn* last about *min_time* seconds."""
    items = round_items(max(2_000, 16 * base.producers), base.producers)
    while True:
        m = _timed(fn, replace(base, items=items))
        if m.elapsed >= min_time / 4 or items >= 50_000_000:
            break
        grow = min(64.0, max(2.0, min_time / max(m.elapsed, 1e-6)))
        items = round_items(int(items * grow), base.producers)
    return round_items(max(items, int(m.items_per_s * min_time)), base.producers)


def run_group(
    cases: dict[str, CaseFn],
    base: Params,
    *,
    min_time: float,
    repeat: int,
    fixed_items: int | None = None,
    latency: bool = True,
) -> dict[str, CaseResult]:
    """Measure *cases* side by side at the same size and producer count.

    Each case is first calibrated to about *min_time* seconds a repetition (with
    *fixed_items*, the smoke run, every repetition writes that many items instead).
    The timed repetitions are then interleaved, case after case, *repeat* rounds,
    so that load from elsewhere on a shared machine hits every case alike; the best
    repetition of each case is kept. A latency pass per case follows.
    """
    items: dict[str, int] = {}
    for name, fn in cases.items():
        if fixed_items is not None:
            items[name] = round_items(fixed_items, base.producers)
        else:
            items[name] = calibrate(fn, base, min_time)
    best: dict[str, Measurement] = {}
    rates: dict[str, list[float]] = {name: [] for name in cases}
    cpu_rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(max(1, repeat)):
        for name, fn in cases.items():
            m = _timed(fn, replace(base, items=items[name]))
            rates[name].append(m.items_per_s)
            cpu_rates[name].append(m.items_per_cpu_s)
            if name not in best or m.items_per_s > best[name].items_per_s:
                best[name] = m
    results = {
        name: CaseResult(best=best[name], reps=rates[name], best_cpu=max(cpu_rates[name]))
        for name in cases
    }
    if latency:
        for name, fn in cases.items():
            n = round_items(max(items[name] // 2, SAMPLE_EVERY * base.producers), base.producers)
            lat = _timed(fn, replace(base, items=n, latency=True)).latencies_ns
            result = results[name]
            result.samples = len(lat)
            result.p50_us = percentile(lat, 0.50) / 1000
            result.p99_us = percentile(lat, 0.99) / 1000
    return results


def run_case(
    fn: CaseFn,
    base: Params,
    *,
    min_time: float,
    repeat: int,
    fixed_items: int | None = None,
    latency: bool = True,
) -> CaseResult:
    """`run_group` of one case."""
    return run_group(
        {"case": fn},
        base,
        min_time=min_time,
        repeat=repeat,
        fixed_items=fixed_items,
        latency=latency,
    )["case"]


def _timed(fn: CaseFn, params: Params) -> Measurement:
    gc.collect()
    return fn(params)


def median(values: list[float]) -> float:
    """`statistics.median`, NaN when empty."""
    return statistics.median(values) if values else math.nan
