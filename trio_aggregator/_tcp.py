"""Two things a long-lived TCP sender needs from its socket: keepalive, and noticing a
peer that has gone, without waiting."""

from __future__ import annotations

import select
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trio

__all__ = ["peer_closed", "set_keepalive"]

_PEEK_SIZE = 64 * 1024
_POLLRDHUP: int = getattr(select, "POLLRDHUP", 0)


def peer_closed(sock: trio.socket.SocketType) -> bool:
    """Whether the peer of *sock* has closed or reset it, found without waiting.

    A ``poll`` with ``POLLRDHUP`` (Linux) sees the peer's FIN even behind unread data (a
    TLS session ticket); elsewhere a non-blocking ``MSG_PEEK`` sees it only once
    nothing else is unread.
    """
    fd = sock.fileno()
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP | _POLLRDHUP)
    events = poller.poll(0)
    if not events:
        return False
    mask = events[0][1]
    if mask & (select.POLLERR | select.POLLHUP | _POLLRDHUP):
        return True
    if _POLLRDHUP:
        return False  # a FIN would have shown: what is readable is data (a TLS ticket)
    with socket.fromfd(fd, sock.family, sock.type) as probe:  # a dup: the fd stays ours
        try:
            return not probe.recv(_PEEK_SIZE, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True


def set_keepalive(sock: trio.socket.SocketType, idle: int, interval: int, count: int) -> None:
    """Turn TCP keepalive on: probes after *idle* s, every *interval* s, *count* of them."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", idle),
        ("TCP_KEEPINTVL", interval),
        ("TCP_KEEPCNT", count),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
