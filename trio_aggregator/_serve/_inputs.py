"""The inputs beside plain TCP and Unix sockets: TLS and UDP, `ServerInputs`.

A `LineServer` holds one `ServerInputs`: it wraps the TCP listeners in TLS
(``--tls-cert``, `_tls`), opens and reads the UDP sockets (``--udp``, `_udp`), and gives
their figures to the summary, the status line and the metrics (`InputStatistics`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ._tls import TlsCounts, TlsStatistics, server_context, wrap_tcp_listeners
from ._udp import UdpInput, UdpStatistics

if TYPE_CHECKING:
    import ssl
    from collections.abc import Awaitable, Callable, Sequence
    from contextlib import AsyncExitStack

    import trio

    from ._losses import Losses
    from ._metrics import MetricsEndpoint
    from ._options import ServeOptions
    from ._statistics import ServerStatistics

__all__ = ["InputStatistics", "ServerInputs"]


@attrs.frozen(kw_only=True)
class InputStatistics:
    """The TLS and UDP figures of a run (None: that input is not used)."""

    tls: TlsStatistics | None = None
    udp: UdpStatistics | None = None

    @property
    def lines(self) -> int:
        """Lines handed over by inputs other than the `LineCollector` (UDP records)."""
        return self.udp.records if self.udp is not None else 0

    @property
    def bytes_accepted(self) -> int:
        """Bytes of those lines."""
        return self.udp.bytes_accepted if self.udp is not None else 0

    def rows(self) -> list[tuple[str, str]]:
        """Summary rows: ``udp``, ``udp truncated``, ``udp kernel drops``, ``tls``."""
        rows: list[tuple[str, str]] = []
        udp, tls = self.udp, self.tls
        if udp is not None:
            rows += [
                (
                    "udp datagrams",
                    f"{udp.datagrams:,} ({udp.bytes_received:,} bytes; {udp.records:,} records,"
                    f" {udp.empty:,} empty)",
                ),
                (
                    "udp truncated",
                    f"{udp.truncated:,} ({udp.bytes_discarded:,} bytes discarded)",
                ),
                ("udp kernel drops", f"{_drops(udp)} (never read: not in the exit status)"),
            ]
        if tls is not None:
            rows.append(
                (
                    "tls handshakes",
                    f"{tls.handshakes:,} ok, {tls.handshake_failures:,} failed"
                    f" ({tls.handshake_timeouts:,} timed out)",
                )
            )
        return rows

    def status(self) -> str:
        """The status line's part: `` | udp N dgrams, D drops | tls failures F``."""
        text = ""
        if self.udp is not None:
            text += f" | udp {self.udp.datagrams:,} dgrams, {_drops(self.udp)} kernel drops"
        if self.tls is not None:
            text += f" | tls failures {self.tls.handshake_failures:,}"
        return text

    def metrics(self) -> list[tuple[str, str, int]]:
        """``(name, help, value)`` of each counter, for ``--metrics``."""
        prefix = "trio_aggregator_serve_"
        out: list[tuple[str, str, int]] = []
        udp, tls = self.udp, self.tls
        if udp is not None:
            out += [
                (f"{prefix}udp_datagrams", "UDP datagrams read.", udp.datagrams),
                (f"{prefix}udp_bytes", "Bytes of the UDP datagrams read.", udp.bytes_received),
                (f"{prefix}udp_records", "UDP records handed to the output.", udp.records),
                (f"{prefix}udp_empty_datagrams", "Empty UDP datagrams (no record).", udp.empty),
                (f"{prefix}udp_truncated_records", "UDP records truncated.", udp.truncated),
            ]
            if udp.kernel_drops is not None:
                out.append(
                    (
                        f"{prefix}udp_kernel_drops",
                        "UDP datagrams the kernel dropped before the server read them.",
                        udp.kernel_drops,
                    )
                )
        if tls is not None:
            out += [
                (f"{prefix}tls_handshakes", "TLS handshakes that succeeded.", tls.handshakes),
                (
                    f"{prefix}tls_handshake_failures",
                    "TLS handshakes that failed or timed out.",
                    tls.handshake_failures,
                ),
            ]
        return out


def _drops(udp: UdpStatistics) -> str:
    return "unknown" if udp.kernel_drops is None else f"{udp.kernel_drops:,}"


class ServerInputs:
    """The TLS and UDP inputs of one server (see the module docs).

    Args:
        options: The server's options (``tls_cert``, ``tls_key``, ``udp``...).
        write: The server's write function (UDP records go there).
        losses: The server's account of lines read and not written.
    """

    def __init__(
        self,
        options: ServeOptions,
        write: Callable[[bytes], Awaitable[object]],
        losses: Losses,
    ) -> None:
        self._options = options
        self._tls = TlsCounts() if options.tls_cert is not None else None
        self._context: ssl.SSLContext | None = None
        self._udp = (
            UdpInput(
                write,
                losses,
                max_line_bytes=options.max_line_bytes,
                abort_grace=options.drain_timeout,
            )
            if options.udp
            else None
        )

    @property
    def used(self) -> bool:
        """Whether TLS or UDP is used at all."""
        return self._tls is not None or self._udp is not None

    @property
    def addresses(self) -> list[str]:
        """The UDP addresses, as printed: ``udp:HOST:PORT``."""
        return self._udp.addresses if self._udp is not None else []

    def load_tls(self) -> ssl.SSLContext | None:
        """Read the TLS certificate and key, if TLS is asked for (before anything opens).

        Raises:
            ServeError: The certificate or key is not usable.
        """
        opts = self._options
        if opts.tls_cert is not None and opts.tls_key is not None:
            self._context = server_context(opts.tls_cert, opts.tls_key)
        return self._context

    async def open(
        self, stack: AsyncExitStack, listeners: Sequence[trio.SocketListener]
    ) -> list[trio.abc.Listener[trio.abc.Stream]]:
        """Open the UDP sockets; *listeners*, the TCP ones in TLS if asked.

        Raises:
            ServeError: The certificate or key is not usable, or a UDP address cannot
                be listened on.
        """
        opts = self._options
        out: list[trio.abc.Listener[trio.abc.Stream]] = list(listeners)
        if self._tls is not None:
            context = self._context if self._context is not None else self.load_tls()
            assert context is not None
            out = wrap_tcp_listeners(listeners, context, self._tls, opts.tls_handshake_timeout)
        if self._udp is not None:
            for host, port in opts.udp:
                for sock in await self._udp.open(host, port):
                    stack.callback(sock.close)
        return out

    async def serve(self) -> None:
        """Read the UDP sockets until `stop`; then drain them."""
        if self._udp is not None:
            await self._udp.serve()

    def stop(self) -> None:
        """Stop reading UDP (what is queued is still read and written)."""
        if self._udp is not None:
            self._udp.stop()

    def abort(self) -> None:
        """Stop now: UDP writes waiting for room get ``drain_timeout`` (then: lost)."""
        if self._udp is not None:
            self._udp.abort()

    def accepted(self, server: ServerStatistics) -> tuple[int, int]:
        """Lines and bytes handed to the outputs: *server*'s (TCP, Unix) and UDP's."""
        inputs = self.statistics()
        return server.lines + inputs.lines, server.bytes_accepted + inputs.bytes_accepted

    def register_metrics(self, endpoint: MetricsEndpoint) -> None:
        """Serve the TLS and UDP counters on *endpoint* (nothing if neither is used)."""
        if self.used:
            endpoint.register_counts(lambda: self.statistics().metrics())

    def statistics(self) -> InputStatistics:
        """A snapshot of the TLS and UDP counts."""
        return InputStatistics(
            tls=self._tls.snapshot() if self._tls is not None else None,
            udp=self._udp.statistics() if self._udp is not None else None,
        )
