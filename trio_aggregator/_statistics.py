"""`AggregatorStatistics`: one consistent snapshot of what an aggregator is doing."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class AggregatorStatistics:
    """A snapshot returned by `Aggregator.statistics`; every count is since the first start."""

    is_running: bool
    """Whether the aggregator was running when the snapshot was taken."""

    uptime: float
    """Seconds since the current run started (0.0 when stopped)."""

    buffer_size: int | float
    """The configured capacity of the buffer, in items."""

    nb_waiting: int
    """Writes blocked because the buffer was full."""

    size_waiting: int
    """Bytes of the writes counted in ``nb_waiting``."""

    nb_processing: int
    """Items accepted and not yet handed to the writer (the one it is working on is not counted)."""

    size_processing: int
    """Bytes of the items counted in ``nb_processing``."""

    nb_held: int
    """Of ``nb_processing``, the items taken out of the buffer for the next writer call.

    The writer task holds them while it gathers a batch (``batch_max_items`` > 1). The
    rest, ``nb_processing - nb_held``, are in the buffer, plus at most one item that the
    channel has just handed to the waiting writer task.
    """

    peak_nb_processing: int
    """The highest ``nb_processing`` seen since the current run started."""

    open_senders: int
    """`AggregatorSender` objects handed out in this run and not closed yet."""

    items_accepted: int
    """Writes accepted into the buffer (non-empty, not dropped on arrival)."""

    items_written: int
    """Items handed to the writer by a call that returned without raising."""

    bytes_written: int
    """Bytes of the items counted in ``items_written``."""

    writer_calls: int
    """Calls made to the writer, retries included: fewer than items when batching."""

    writer_errors: int
    """Writer calls that raised an `Exception`."""

    callback_errors: int
    """Periodic callback or dead-letter hook runs that raised an `Exception`."""

    sync_runs: int
    """Runs of ``sync_fn`` started."""

    async_runs: int
    """Runs of ``async_fn`` started."""

    async_skipped: int
    """``async_fn`` ticks skipped because ``async_max`` runs were already going."""

    dropped_full: int
    """Writes discarded on arrival because the buffer was full (``when_full="drop_newest"``)."""

    dropped_oldest: int
    """Buffered items evicted to make room (``when_full="drop_oldest"``)."""

    dropped_drain_timeout: int
    """Items still undelivered when a stop ran out of ``drain_timeout``."""

    dropped_writer_error: int
    """Items whose writer call failed for good (after retries), dead-lettered or not."""

    dropped: int
    """The sum of the four ``dropped_*`` counters."""

    buffered_time_p50: float | None
    """Median seconds from accepted to handed to the writer, over the last 1024 sampled items.

    One in 16 of the items accepted without waiting is sampled (its place in the channel
    is then known); None: no sample yet.
    """

    buffered_time_p99: float | None
    """99th percentile of the same window (None: no sample)."""
