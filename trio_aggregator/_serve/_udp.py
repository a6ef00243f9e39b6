"""UDP input for ``serve --udp``: one datagram, one record: `UdpInput`, `datagram_record`.

The record rule (`datagram_record`): trailing LF and NUL bytes are removed (syslog
senders end a datagram with either, or nothing); a record longer than ``max_line_bytes``
is truncated to that length and the rest discarded, both counted, as for a TCP line;
control characters left inside (an embedded LF, a NUL, a TAB...) are escaped as ``#``
and three octal digits (LF is ``#012``), the way rsyslog does by default, so one
datagram is always one line; then a LF is added. An empty datagram (nothing left once
stripped) holds no record: it is counted, not written.

Each socket has a task that waits until it is readable, then reads every datagram
already queued (up to `BATCH_DATAGRAMS`) without waiting, and hands their records to the
server's write function as one write, so a burst costs one aggregator write, not one per
datagram. When the aggregator is full, the task waits, and datagrams queue in the
kernel's receive buffer (the server asks for `RECEIVE_BUFFER` bytes; Linux caps that at
``net.core.rmem_max``); once that buffer is full, the kernel drops what comes: UDP has no
flow control.

What is counted, and its limit: the kernel counts the datagrams it dropped for a socket
(a full receive buffer); on Linux the server reads that running total with the first
datagram of each batch (``SO_RXQ_OVFL``; the other datagrams are read with the cheaper
``recv_into``) and, when the socket closes, from ``/proc/net/udp``. Elsewhere it is
unknown, and is shown so. A datagram lost on the way (another host, a full send buffer,
a firewall) is counted by nobody. Kernel drops never reached the server: they are shown
everywhere but do not make the exit status 1 (see the docs).

Shutdown (`UdpInput.stop`): the task stops waiting, reads what the kernel holds at once
(at most `DRAIN_LIMIT` datagrams), writes it, and stops; what is still queued after that
is read without being written and counted lost (``unread``). `UdpInput.abort` gives a
write waiting for room ``abort_grace`` seconds, then counts it lost (``forced_shutdown``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from typing import TYPE_CHECKING

import attrs
import trio

from ._errors import ServeError
from ._framing import escape_controls
from ._handover import Handover
from ._listeners import format_address

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._losses import Losses

__all__ = [
    "BATCH_DATAGRAMS",
    "DRAIN_LIMIT",
    "RECEIVE_BUFFER",
    "UdpInput",
    "UdpStatistics",
    "datagram_record",
    "escape_controls",
]

BATCH_DATAGRAMS = 256
"""The most datagrams read without waiting and handed over as one write."""

DRAIN_LIMIT = 100_000
"""At shutdown, the most datagrams read from a socket (and written) without waiting."""

RECEIVE_BUFFER = 4 * 1024 * 1024
"""The receive buffer asked for each socket (the kernel may give less)."""

MAX_DATAGRAM = 65536
"""Bytes read per datagram: more than any UDP payload."""

SO_RXQ_OVFL: int | None = getattr(socket, "SO_RXQ_OVFL", 40 if sys.platform == "linux" else None)
"""The Linux option that adds the socket's drop count to each datagram received."""

_TRAILING = b"\n\x00"


def datagram_record(data: bytes, max_line_bytes: int) -> tuple[bytes, int]:
    """The line to write for the datagram *data*, and the bytes discarded from it.

    See the module docs; the line is ``b""`` for an empty datagram.
    """
    body = data.rstrip(_TRAILING)
    if not body:
        return b"", 0
    discarded = max(len(body) - max_line_bytes, 0)
    if discarded:
        body = body[:max_line_bytes]
    return escape_controls(body) + b"\n", discarded


@attrs.frozen(kw_only=True)
class UdpStatistics:
    """What the UDP sockets received (a snapshot)."""

    sockets: int
    datagrams: int
    """Datagrams read (empty ones included)."""
    bytes_received: int
    records: int
    """Lines handed to the aggregator."""
    bytes_accepted: int
    """Bytes of those lines."""
    empty: int
    """Empty datagrams: no record, not written."""
    truncated: int
    bytes_discarded: int
    kernel_drops: int | None
    """Datagrams the kernel dropped before the server read them; None: not measurable."""


class _Socket:
    __slots__ = ("address", "buffer", "drops", "scope", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.address = format_address(*sock.getsockname()[:2])
        self.buffer = bytearray(MAX_DATAGRAM)
        self.drops = 0
        self.scope = trio.CancelScope()


class UdpInput:
    """The UDP sockets of a server, each read by a task, their records to *write*.

    Args:
        write: Called with the lines of each batch of datagrams (`Aggregator.write`).
        losses: Where records read and not written are counted.
        max_line_bytes: Longer records are truncated.
        abort_grace: After `abort`, the most seconds a write may still wait for room.
    """

    def __init__(
        self,
        write: Callable[[bytes], Awaitable[object]],
        losses: Losses,
        *,
        max_line_bytes: int,
        abort_grace: float = 30.0,
    ) -> None:
        self._losses = losses
        self._handover = Handover(write, losses, abort_grace)
        self._max = max_line_bytes
        self._sockets: list[_Socket] = []
        self._stopping = False
        self._nursery: trio.Nursery | None = None
        self._drops_known = SO_RXQ_OVFL is not None
        self.datagrams = self.bytes_received = self.records = self.bytes_accepted = 0
        self.empty = self.truncated = self.bytes_discarded = 0

    @property
    def addresses(self) -> list[str]:
        """``udp:HOST:PORT`` for each socket (the real port when asked for port 0)."""
        return [f"udp:{sock.address}" for sock in self._sockets]

    async def open(self, host: str, port: int) -> list[socket.socket]:
        """Bind a socket on each address *host* resolves to; the sockets (close them).

        Raises:
            ServeError: *host* does not resolve, or an address cannot be bound.
        """
        where = f"udp:{format_address(host, port)}"
        try:
            infos = await trio.socket.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
            )
        except OSError as exc:
            raise ServeError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        opened: list[socket.socket] = []
        for family, _type, proto, _name, sockaddr in dict.fromkeys(infos):
            sock = socket.socket(family, socket.SOCK_DGRAM, proto)
            opened.append(sock)
            try:
                self._bind(sock, sockaddr)
            except OSError as exc:
                for sock in opened:
                    sock.close()
                raise ServeError(f"cannot listen on {where}: {exc.strerror or exc}") from None
            self._sockets.append(_Socket(sock))
        return opened

    def _bind(self, sock: socket.socket, sockaddr: tuple[object, ...]) -> None:
        sock.setblocking(False)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        with contextlib.suppress(OSError):  # else the kernel keeps its default
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        if SO_RXQ_OVFL is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
            except OSError:  # pragma: no cover - an old kernel, or not Linux after all
                self._drops_known = False
        sock.bind(sockaddr)

    def statistics(self) -> UdpStatistics:
        """A snapshot of the counts."""
        return UdpStatistics(
            sockets=len(self._sockets),
            datagrams=self.datagrams,
            bytes_received=self.bytes_received,
            records=self.records,
            bytes_accepted=self.bytes_accepted,
            empty=self.empty,
            truncated=self.truncated,
            bytes_discarded=self.bytes_discarded,
            kernel_drops=sum(s.drops for s in self._sockets) if self._drops_known else None,
        )

    async def serve(self) -> None:
        """Read every socket until `stop`, then drain them (see the module docs)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for sock in self._sockets:
                nursery.start_soon(self._receive, sock)
        self._nursery = None

    def stop(self) -> None:
        """Stop waiting for datagrams: read what is queued, write it, and return."""
        self._stopping = True
        for sock in self._sockets:
            sock.scope.cancel()

    def abort(self) -> None:
        """Give writes waiting for room *abort_grace* seconds; a second call: none."""
        self.stop()
        if self._handover.force() and self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _receive(self, sock: _Socket) -> None:
        while not self._stopping:
            sock.scope = trio.CancelScope()  # `stop` cancels it
            with sock.scope:
                await trio.lowlevel.wait_readable(sock.sock)
            chunk, _ = self._read_ready(sock, BATCH_DATAGRAMS)
            if chunk and not await self._write(chunk):
                return
        drained = 0
        while drained < DRAIN_LIMIT:
            chunk, count = self._read_ready(sock, BATCH_DATAGRAMS)
            if not count:
                break
            drained += count
            if chunk and not await self._write(chunk):
                return
        self._count_unread(sock)

    def _count_unread(self, sock: _Socket) -> None:
        """Read what is still queued (once, bounded) and count it lost; and the drops."""
        chunk, _ = self._read_ready(sock, DRAIN_LIMIT)
        self._losses.add_data("unread", chunk)
        sock.drops = max(sock.drops, proc_drops(sock.sock))

    def _read_ready(self, sock: _Socket, limit: int) -> tuple[bytes, int]:
        """The records of the datagrams queued (up to *limit*), and how many were read."""
        records: list[bytes] = []
        count = 0
        view = memoryview(sock.buffer)
        ancillary = socket.CMSG_SPACE(4) if SO_RXQ_OVFL is not None else 0
        while count < limit:
            try:
                if count or not ancillary:
                    size = sock.sock.recv_into(view)
                else:  # the drop count is a running total: once a batch is enough
                    size, ancdata, _flags, _address = sock.sock.recvmsg_into([view], ancillary)
                    _note_drops(sock, ancdata)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # pragma: no cover - ICMP errors are not reported unconnected
                break
            count += 1
            self.bytes_received += size
            record, discarded = datagram_record(bytes(view[:size]), self._max)
            if not record:
                self.empty += 1
                continue
            if discarded:
                self.truncated += 1
                self.bytes_discarded += discarded
            records.append(record)
        self.datagrams += count
        return b"".join(records), count

    async def _write(self, chunk: bytes) -> bool:
        """Hand *chunk* over; False if `abort`'s grace ran out first (counted lost)."""
        if not await self._handover.write(chunk):
            return False
        self.records += chunk.count(b"\n")
        self.bytes_accepted += len(chunk)
        return True


def _note_drops(sock: _Socket, ancdata: list[tuple[int, int, bytes]]) -> None:
    """Keep the drop count that ``SO_RXQ_OVFL`` gave with a datagram."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(data) >= 4:
            sock.drops = max(sock.drops, int.from_bytes(data[:4], sys.byteorder))


def proc_drops(sock: socket.socket) -> int:
    """The kernel's drop count for *sock* from ``/proc/net/udp`` (Linux); 0 if unknown."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    name = "udp6" if sock.family == socket.AF_INET6 else "udp"
    try:
        with open(f"/proc/net/{name}", encoding="ascii") as table:
            for line in table:
                fields = line.split()
                if len(fields) > 12 and fields[9] == inode:
                    return int(fields[12])
    except (OSError, ValueError):
        pass
    return 0
