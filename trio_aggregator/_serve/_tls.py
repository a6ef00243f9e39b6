"""TLS over the TCP listeners of ``serve``: `server_context`, `TlsListener`, `TlsCounts`.

Every TCP listener is wrapped (``--tls-cert``/``--tls-key``); Unix sockets stay plain:
they are local, and their file permissions (``--unix-mode``) say who may connect.

A connection is accepted at once, and its handshake is done by the task that reads it,
on its first read: a client that is slow to handshake, or never does, holds only its own
task, never the accept loop. The handshake must finish within ``handshake_timeout``
seconds (the idle timeout and shutdown also end it); one that fails or times out is
counted (`TlsCounts`) and the connection is closed as if the client had closed it, with
nothing read: a plain-text client, a port scanner, a client that does not trust the
certificate. Clients that close without a TLS ``close_notify`` (many syslog senders) end
the connection cleanly: the lines are framed by newlines, and a last line without one is
kept like any other.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import attrs
import trio

from ._errors import ServeError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "TlsCounts",
    "TlsListener",
    "TlsServerStream",
    "TlsStatistics",
    "server_context",
    "wrap_tcp_listeners",
]

HANDSHAKE_TIMEOUT = 10.0
"""Default seconds a client gets to finish its TLS handshake."""


def _no_password() -> bytes:
    raise ServeError("the TLS key is encrypted: give a key file without a passphrase")


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side `ssl.SSLContext` with the certificate chain *cert* and its *key*.

    Raises:
        ServeError: A file cannot be read, is not PEM, or the key does not match.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as exc:
        reason = exc.reason or exc.strerror or str(exc)
        raise ServeError(
            f"cannot use TLS certificate {cert!r} with key {key!r}: {reason}"
        ) from None
    except OSError as exc:
        raise ServeError(
            f"cannot read TLS certificate {cert!r} or key {key!r}: {exc.strerror or exc}"
        ) from None
    return context


@attrs.frozen(kw_only=True)
class TlsStatistics:
    """TLS handshakes so far (a snapshot of `TlsCounts`)."""

    handshakes: int
    """Handshakes that succeeded."""
    handshake_failures: int
    """Handshakes that failed or timed out (the timeouts included)."""
    handshake_timeouts: int


class TlsCounts:
    """The handshake counts of every `TlsListener` of a server."""

    __slots__ = ("handshake_failures", "handshake_timeouts", "handshakes")

    def __init__(self) -> None:
        self.handshakes = self.handshake_failures = self.handshake_timeouts = 0

    def snapshot(self) -> TlsStatistics:
        """A copy of the counts."""
        return TlsStatistics(
            handshakes=self.handshakes,
            handshake_failures=self.handshake_failures,
            handshake_timeouts=self.handshake_timeouts,
        )


class TlsServerStream(trio.abc.Stream):
    """A `trio.SSLStream` whose first read does the handshake, bounded and counted."""

    def __init__(
        self, stream: trio.SSLStream[trio.SocketStream], counts: TlsCounts, timeout: float
    ):
        self._ssl = stream
        self._counts = counts
        self._timeout = timeout
        self._handshaken = False
        self._failed = False

    @property
    def handshake_done(self) -> bool:
        """Whether the handshake succeeded (before it, no line can have been sent)."""
        return self._handshaken

    @property
    def transport_stream(self) -> trio.SocketStream:
        """The TCP connection beneath (for the peer's address)."""
        return self._ssl.transport_stream

    async def _handshake(self) -> bool:
        """Do the handshake; False (counted) if it failed or timed out."""
        with trio.move_on_after(self._timeout) as scope:
            try:
                await self._ssl.do_handshake()
            except trio.BrokenResourceError:
                self._counts.handshake_failures += 1
                return False
            self._counts.handshakes += 1
            return True
        assert scope.cancelled_caught
        self._counts.handshake_failures += 1
        self._counts.handshake_timeouts += 1
        return False

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Decrypted bytes; ``b""`` at the end, or when the handshake failed."""
        if not self._handshaken:
            if self._failed:
                await trio.lowlevel.checkpoint()
                return b""
            self._failed = not await self._handshake()
            self._handshaken = not self._failed
            if self._failed:
                return b""
        return await self._ssl.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send *data* (the server never does; here for the `trio.abc.Stream` interface)."""
        await self._ssl.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """See `trio.abc.SendStream.wait_send_all_might_not_block`."""
        await self._ssl.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Close the TLS session (if it began) and the connection."""
        await self._ssl.aclose()


class TlsListener(trio.abc.Listener[trio.abc.Stream]):
    """Accepts TCP connections from *transport* and serves TLS on them (see the module docs)."""

    def __init__(
        self,
        transport: trio.SocketListener,
        context: ssl.SSLContext,
        counts: TlsCounts,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.transport = transport
        self._ssl = trio.SSLListener(transport, context, https_compatible=True)
        self._counts = counts
        self._timeout = handshake_timeout

    async def accept(self) -> trio.abc.Stream:
        """The next connection, its handshake not yet done."""
        stream = await self._ssl.accept()
        return TlsServerStream(stream, self._counts, self._timeout)

    async def aclose(self) -> None:
        """Stop listening."""
        await self._ssl.aclose()


def wrap_tcp_listeners(
    listeners: Sequence[trio.SocketListener],
    context: ssl.SSLContext,
    counts: TlsCounts,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
) -> list[trio.abc.Listener[trio.abc.Stream]]:
    """*listeners*, each TCP one wrapped in a `TlsListener` (Unix sockets as they are)."""
    tcp_families = (trio.socket.AF_INET, trio.socket.AF_INET6)
    return [
        TlsListener(listener, context, counts, handshake_timeout)
        if listener.socket.family in tcp_families
        else listener
        for listener in listeners
    ]
