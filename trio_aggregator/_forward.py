"""Forwarding records to another collector over TCP (or TLS): `TcpForwardSink`.

What plain TCP can promise, and what it cannot:

* Bytes leave in the order they were written, and a record is never interleaved with
  another: the sink sends one batch at a time, whole.
* A batch whose send *failed* (the connection broke, was reset...) is sent again, whole,
  on the next connection. The receiver may already have read part of it, so a
  reconnect can **duplicate** records (never reorder them); `TcpForwardStatistics`
  counts the records sent again, an upper bound on those duplicates.
* A send that *succeeded* only means the local kernel took the bytes. If the receiver
  goes away before reading them (it stopped, crashed, or was restarted), they vanish
  without an error: the sink cannot know. Before each send the sink checks, without
  waiting, whether the peer has closed the connection (as rsyslog's TCP sender does),
  and reconnects first. And after a lost connection it sends again, first, the batches
  it sent in the last ``resend_seconds`` (the *resend window*), so what the receiver
  had not read yet arrives after all, perhaps twice. What is lost is only what the
  receiver did not read and that was sent before the window (a receiver that stopped
  reading long before it closed, a host that vanished without a reset). Only an
  application-level acknowledgement (RELP, for example) closes that gap.

While the target is down the writer call does not return: it retries, with capped
exponential backoff and jitter, until it has sent the batch (or is cancelled). Behind an
`Aggregator` that means the aggregator's buffer fills, and then its ``when_full`` policy
decides (``block`` holds the writers back; a ``drop_*`` policy drops, counted).
"""

from __future__ import annotations

import math
import random
import ssl

import attrs
import trio

from ._lowlevel import checkpoint
from ._resend import ResendWindow
from ._sinks import AsyncWith, Data, positive_int
from ._tcp import peer_closed, set_keepalive
from ._wire import FRAMINGS, Framing, as_list, count_records, frame_lines, frame_octet_counted

__all__ = ["TcpForwardSink", "TcpForwardStatistics"]


_DRAIN_SIZE = 64 * 1024


@attrs.frozen(kw_only=True)
class TcpForwardStatistics:
    """The counters of a `TcpForwardSink` (a snapshot, from `TcpForwardSink.statistics`)."""

    connected: bool
    """Whether a connection is open now."""

    connects: int
    """Connections opened (the TLS handshake included), the first one included."""

    reconnects: int
    """Connections opened after an earlier one was lost (``connects`` less the first)."""

    connect_failures: int
    """Attempts to connect that failed (refused, timed out, TLS handshake failed...)."""

    failed_sends: int
    """Sends that failed part way; each batch is then sent again, whole."""

    peer_closed: int
    """Connections found closed by the peer before a send (the batch was not yet sent)."""

    batches_sent: int
    """Writer calls whose data was sent (each once, however many attempts it took)."""

    records_sent: int
    """Records in those batches (a record re-sent counts once here)."""

    records_resent: int
    """Records sent again after a failed send: an upper bound on the duplicates the
    receiver may see. A batch sent three times counts twice."""

    bytes_sent: int
    """Bytes of the batches sent, framing included (re-sent bytes counted once)."""


def _check_delay(name: str, value: object, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(
            f"{name} must be a finite number {'>' if positive else '>='} 0, not {value!r}"
        )
    return float(value)


def _is_ssl_context(value: object) -> bool:
    return value is None or isinstance(value, ssl.SSLContext)


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


class TcpForwardSink(AsyncWith):
    """Sends every write to ``host:port`` over TCP (optionally TLS), reconnecting.

    The ``writer`` of an aggregator (``writer=sink.write``): each call's records are
    framed and sent as one batch. It takes what the other sinks take, `bytes` or the
    `list` of a ``batch_join=False`` batch, and reads it as records ended by LF (a last
    record without one is one record too). It connects at the first write; what TCP
    does and does not promise, and how it reconnects, is in the module docs.

    Example, forwarding to a central rsyslog::

        sink = TcpForwardSink("logs.example.net", 514, framing="octet-counted")
        config = AggregatorConfig(writer=sink.write, buffer_size=10_000, batch_max_items=64)
        async with sink, open_aggregator(nursery, config) as agg:
            await agg.write(b"a record\\n")

    Args:
        host: The receiver's host name or address.
        port: The receiver's TCP port.
        framing: ``"lines"`` (each record ends with LF; one is added to a buffer that
            lacks it) or ``"octet-counted"`` (each line as ``LEN SP MSG``, RFC 6587, the
            LF left out; rsyslog's imtcp detects it by itself).
        ssl_context: Wrap the connection in TLS with this context (None: plain TCP).
        server_hostname: The name the certificate must match (default: *host*).
        backoff_initial: Seconds before the first retry after a failed connect or send.
        backoff_max: The most seconds between two attempts.
        backoff_multiplier: Each wait is this many times the previous one, up to the cap.
        jitter: Each wait is cut by a random fraction up to this (0 to 1), so many
            senders do not retry in step.
        connect_timeout: Seconds an attempt to connect (handshake included) may take.
        keepalive_idle: TCP keepalive: seconds of silence before the first probe (then
            probes every ``keepalive_interval`` s; ``keepalive_count`` lost ones drop
            the connection). Where the system lacks an option, its own default applies.
        keepalive_interval: See *keepalive_idle*.
        keepalive_count: See *keepalive_idle*.
        close_timeout: Seconds `aclose` waits for the receiver to confirm it read
            everything (its end of the connection closing after ours), then closes anyway.
        resend_seconds: After a lost connection, send again, first, the batches sent in
            the last this many seconds (0: none), as the module docs explain.
        resend_max_bytes: The most bytes kept for that.
        rng: Where the jitter comes from (default: a new `random.Random`).

    Raises:
        ValueError: A setting is out of range, or *framing* is unknown.
        TypeError: A setting has the wrong type.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        framing: Framing = "lines",
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 10.0,
        backoff_multiplier: float = 2.0,
        jitter: float = 0.5,
        connect_timeout: float = 10.0,
        keepalive_idle: int = 60,
        keepalive_interval: int = 10,
        keepalive_count: int = 6,
        close_timeout: float = 2.0,
        resend_seconds: float = 1.0,
        resend_max_bytes: int = 8 * 1024 * 1024,
        rng: random.Random | None = None,
    ) -> None:
        if framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {FRAMINGS}, not {framing!r}")
        if not _is_port(port):
            raise ValueError(f"port must be an int from 1 to 65535, not {port!r}")
        if not _is_ssl_context(ssl_context):
            raise TypeError(
                f"ssl_context must be an ssl.SSLContext, not {type(ssl_context).__name__}"
            )
        self._host = host
        self._port = port
        self._framing: Framing = framing
        self._frame = frame_lines if framing == "lines" else frame_octet_counted
        self._ssl_context = ssl_context
        self._server_hostname = server_hostname or host
        self._backoff_initial = _check_delay("backoff_initial", backoff_initial)
        self._backoff_max = max(_check_delay("backoff_max", backoff_max), self._backoff_initial)
        self._backoff_multiplier = _check_delay("backoff_multiplier", backoff_multiplier)
        if self._backoff_multiplier < 1:
            raise ValueError(f"backoff_multiplier must be >= 1, not {backoff_multiplier!r}")
        self._jitter = _check_delay("jitter", jitter, positive=False)
        if self._jitter > 1:
            raise ValueError(f"jitter must be from 0 to 1, not {jitter!r}")
        self._connect_timeout = _check_delay("connect_timeout", connect_timeout)
        self._close_timeout = _check_delay("close_timeout", close_timeout, positive=False)
        self._keepalive = (
            positive_int("keepalive_idle", keepalive_idle),
            positive_int("keepalive_interval", keepalive_interval),
            positive_int("keepalive_count", keepalive_count),
        )
        self._rng = random.Random() if rng is None else rng
        self._window = ResendWindow(
            _check_delay("resend_seconds", resend_seconds, positive=False),
            positive_int("resend_max_bytes", resend_max_bytes),
        )
        self._stream: trio.abc.Stream | None = None
        self._socket: trio.socket.SocketType | None = None
        self._closed = False
        self._failures = 0  # consecutive failed attempts, for the backoff
        self._connects = self._connect_failures = self._failed_sends = 0
        self._peer_closed = self._batches = self._records = self._resent = self._bytes = 0

    @property
    def address(self) -> tuple[str, int]:
        """Where the sink sends: ``(host, port)``."""
        return (self._host, self._port)

    @property
    def framing(self) -> Framing:
        """How records are framed: ``"lines"`` or ``"octet-counted"``."""
        return self._framing

    @property
    def closed(self) -> bool:
        """Whether `aclose` was called."""
        return self._closed

    def statistics(self) -> TcpForwardStatistics:
        """A snapshot of the sink's counters."""
        return TcpForwardStatistics(
            connected=self._stream is not None,
            connects=self._connects,
            reconnects=max(self._connects - 1, 0),  # each after the first follows a loss
            connect_failures=self._connect_failures,
            failed_sends=self._failed_sends,
            peer_closed=self._peer_closed,
            batches_sent=self._batches,
            records_sent=self._records,
            records_resent=self._resent,
            bytes_sent=self._bytes,
        )

    def backoff_delay(self, failures: int) -> float:
        """Seconds to wait after *failures* consecutive failed attempts (>= 1), jitter included."""
        exponent = min(failures - 1, 64)
        delay = min(self._backoff_max, self._backoff_initial * self._backoff_multiplier**exponent)
        return delay * (1.0 - self._jitter * self._rng.random())

    async def write(self, data: Data) -> None:
        """Send all of *data*, reconnecting (with backoff) until it is sent.

        Returns once the kernel has taken every byte of the batch. Cancelling it leaves
        the batch unsent as far as the sink knows (the connection is closed, since part of
        the batch may have gone: the next write reconnects).

        Raises:
            trio.ClosedResourceError: The sink is closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("the TcpForwardSink is closed")
        buffers = as_list(data)
        payload = self._frame(buffers)
        if not payload:
            await checkpoint()
            return
        records = count_records(buffers)
        attempts = 0
        while True:
            stream = await self._connected_stream()
            batches = [*self._window.pending, (payload, records)]
            self._resent += sum(n for _, n in batches[:-1]) + (records if attempts else 0)
            attempts += 1
            if await self._send(stream, b"".join(data for data, _ in batches)):
                break
        self._window.sent(trio.current_time(), batches)
        self._failures = 0
        self._batches += 1
        self._records += records
        self._bytes += len(payload)

    async def _send(self, stream: trio.abc.Stream, payload: bytes) -> bool:
        """Send *payload* on *stream*; False (connection dropped, backoff slept) if it failed."""
        try:
            await stream.send_all(payload)
        except (trio.BrokenResourceError, OSError):
            self._failed_sends += 1
            await self._drop_connection()
            await self._sleep_backoff()
            return False
        except BaseException:
            await self._drop_connection()
            raise
        return True

    async def _connected_stream(self) -> trio.abc.Stream:
        """The open connection, checked; a new one (retrying with backoff) if there is none."""
        stream = self._stream
        if stream is not None:
            assert self._socket is not None
            if not peer_closed(self._socket):
                return stream
            self._peer_closed += 1
            await self._drop_connection()
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the TcpForwardSink is closed")
            try:
                with trio.fail_after(self._connect_timeout):
                    stream = await self._connect()
            except (OSError, trio.TooSlowError, trio.BrokenResourceError):
                self._connect_failures += 1
                await self._sleep_backoff()
                continue
            self._connects += 1
            self._stream = stream
            return stream

    async def _connect(self) -> trio.abc.Stream:
        tcp = await trio.open_tcp_stream(self._host, self._port)
        try:
            set_keepalive(tcp.socket, *self._keepalive)
            if self._ssl_context is None:
                self._socket = tcp.socket
                return tcp
            tls = trio.SSLStream(tcp, self._ssl_context, server_hostname=self._server_hostname)
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        self._socket = tcp.socket
        return tls

    async def _drop_connection(self) -> None:
        stream, self._stream, self._socket = self._stream, None, None
        if stream is not None:
            self._window.connection_lost(trio.current_time())
            await trio.aclose_forcefully(stream)

    async def _sleep_backoff(self) -> None:
        self._failures += 1
        await trio.sleep(self.backoff_delay(self._failures))

    async def aclose(self) -> None:
        """Close the connection (idempotent); writes after this raise `trio.ClosedResourceError`.

        On plain TCP it first ends its side of the connection and waits, up to
        ``close_timeout``, for the receiver to close its own: a receiver that does so has
        read everything sent. With TLS it sends the TLS close notification.
        """
        self._closed = True
        stream, self._stream, self._socket = self._stream, None, None
        if stream is None:
            await checkpoint()
            return
        try:
            with trio.move_on_after(self._close_timeout):
                if isinstance(stream, trio.SocketStream):
                    await stream.send_eof()
                    while await stream.receive_some(_DRAIN_SIZE):
                        pass
                await stream.aclose()
        except (trio.BrokenResourceError, OSError):
            pass  # the receiver is gone: nothing left to confirm
        finally:
            await trio.aclose_forcefully(stream)

    def __repr__(self) -> str:
        tls = " tls" if self._ssl_context is not None else ""
        state = "closed" if self._closed else ("connected" if self._stream else "not connected")
        return f"<TcpForwardSink {self._host}:{self._port} {self._framing}{tls} {state}>"
