"""Where ``serve`` listens: ``HOST:PORT`` addresses, and Unix sockets.

A Unix socket file left behind by a server that is gone is replaced; one that a live
server answers on is not. The server removes its socket files when it stops, unless
something else has replaced them meanwhile.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

import trio

__all__ = [
    "accept_queued",
    "count_unread",
    "format_address",
    "open_unix_listener",
    "parse_tcp_address",
    "peer_address",
    "reset_queued",
    "unread_lines",
    "tcp_listener_address",
    "unlink_if_same",
]


def parse_tcp_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6HOST]:PORT`` for IPv6) as ``(host, port)``.

    Raises:
        ValueError: The text is not of that form, or the port is not in 0..65535.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, as [{host}]:{port_text}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number in 0..65535, got {port_text!r}")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """The inverse of `parse_tcp_address`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def open_unix_listener(path: str, mode: int = 0o660) -> trio.SocketListener:
    """Listen on the Unix socket *path*, replacing a stale socket file (only that).

    The socket file gets *mode* whatever the umask, before it listens: nobody can
    connect in between.

    Raises:
        OSError: *path* cannot be listened on; ``EEXIST`` when something other than a
            socket is there (it is never replaced).
    """
    if _exists_not_socket(path):
        raise FileExistsError(errno.EEXIST, "a file that is not a socket is there (left alone)")
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        try:
            await sock.bind(path)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or not await _is_stale_socket(path):
                raise
            os.unlink(path)
            await sock.bind(path)
        os.chmod(path, mode)
        sock.listen(trio.socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


def _exists_not_socket(path: str) -> bool:
    try:
        return not stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


async def _is_stale_socket(path: str) -> bool:
    """Whether *path* is a Unix socket that nobody listens on any more."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except OSError:  # pragma: no cover - it was there a moment ago
        return False
    probe = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    with probe:
        try:
            await probe.connect(path)
        except ConnectionRefusedError:
            return True
        except OSError:  # pragma: no cover - unusual: not ours to remove
            return False
    return False


def tcp_listener_address(listener: trio.SocketListener) -> tuple[str, int]:
    name: tuple[str, int] = listener.socket.getsockname()[:2]
    return name[0], name[1]


def unlink_if_same(path: str, inode: int) -> None:
    """Remove the socket file *path* unless something else has replaced it."""
    try:
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


def count_unread(
    stream: trio.abc.ReceiveStream, read_size: int, limit: int
) -> tuple[int, int, bool]:
    """Read what the kernel holds for *stream* without waiting, up to *limit* bytes.

    Returns the newlines and bytes read, and whether the last byte was a newline. Only a
    `trio.SocketStream` can be read so (its socket is non-blocking); others give zeros.
    A TLS stream's socket is read too, but its bytes are encrypted: their newlines
    cannot be counted, so they count as one line (at least one record is lost).
    """
    beneath = _beneath(stream)
    if beneath is None or not getattr(stream, "handshake_done", True):
        return 0, 0, True  # not a socket, or a TLS handshake cut: no line sent yet
    newlines = nbytes = 0
    last = b"\n"
    try:
        # The receive buffer may hold more than *limit* (tcp_rmem up to 32 MiB).
        limit = max(limit, beneath.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
        fd = beneath.socket.fileno()
        while nbytes < limit:
            data = os.read(fd, read_size)
            if not data:
                break
            newlines += data.count(b"\n")
            nbytes += len(data)
            last = data[-1:]
    except OSError:  # nothing more now (EAGAIN), or reset
        pass
    if beneath is not stream:  # encrypted
        return 0, nbytes, not nbytes
    return newlines, nbytes, last == b"\n"


def accept_queued(listener: trio.abc.Listener[trio.abc.Stream]) -> trio.SocketStream | None:
    """A connection the system has queued on *listener*, accepted without waiting.

    None when there is none, or *listener* is not a `trio.SocketListener` (a TLS
    listener's queued connections have sent no line: their handshake is not done).
    """
    if not isinstance(listener, trio.SocketListener):
        return None
    try:
        with socket.socket(fileno=os.dup(listener.socket.fileno())) as sock:
            sock.setblocking(False)
            conn, _ = sock.accept()
    except OSError:  # none queued (EAGAIN), or the listener is closed
        return None
    return trio.SocketStream(trio.socket.from_stdlib_socket(conn))


def unread_lines(stream: trio.abc.ReceiveStream, read_size: int, limit: int) -> tuple[int, int]:
    """`count_unread` as lines and bytes (a last line without a newline counts as one)."""
    newlines, nbytes, ends_line = count_unread(stream, read_size, limit)
    return newlines + (0 if ends_line or not nbytes else 1), nbytes


def reset_queued(
    listener: trio.abc.Listener[trio.abc.Stream], most: int, read_size: int, limit: int
) -> tuple[int, int]:
    """Close up to *most* connections still queued on *listener*, unread; their lines and bytes.

    What their clients sent is in the kernel (`unread_lines`); closing them resets them.
    """
    lines = nbytes = 0
    for _ in range(most):
        stream = accept_queued(listener)
        if stream is None:
            break
        more_lines, more_bytes = unread_lines(stream, read_size, limit)
        lines, nbytes = lines + more_lines, nbytes + more_bytes
        stream.socket.close()
    return lines, nbytes


def _beneath(stream: object) -> trio.SocketStream | None:
    """The socket stream under *stream* (itself, or under a TLS layer's ``transport_stream``)."""
    while not isinstance(stream, trio.SocketStream) and hasattr(stream, "transport_stream"):
        stream = getattr(stream, "transport_stream")  # noqa: B009 - any stream type
    return stream if isinstance(stream, trio.SocketStream) else None


def peer_address(stream: trio.abc.ReceiveStream) -> str | None:
    """The IP address of *stream*'s peer; None for a Unix socket or another stream.

    A TLS stream is looked through (its ``transport_stream``), to the connection beneath.
    """
    beneath = _beneath(stream)
    if beneath is None:
        return None
    if beneath.socket.family not in (trio.socket.AF_INET, trio.socket.AF_INET6):
        return None
    try:
        return str(beneath.socket.getpeername()[0])
    except OSError:  # already reset
        return None
