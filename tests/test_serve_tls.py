"""Issue 10 item 4: ``serve --tls-cert/--tls-key``, TLS over every TCP listener.

Certificates come from ``trustme`` (a CA and a server certificate for 127.0.0.1).
Loopback sockets; the handshake timeout test uses the mock clock; the external client
(``openssl s_client``) is bounded by `trio.fail_after`.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
import ssl
import sys
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from trio_aggregator._serve._cli import main
from trio_aggregator._serve._demo import demo_lines, verify_demo_output
from trio_aggregator._serve._options import ServeOptions
from trio_aggregator._serve._server import LineServer, ServeError, run_server

from ._rsyslog import require_program
from .test_serve import finish, options
from .test_serve_reliability import hold_file_writes

trustme = pytest.importorskip("trustme")


class Certs:
    """A CA, and a server certificate for 127.0.0.1 and localhost, as PEM files."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.cert = str(directory / "server.crt")
        self.key = str(directory / "server.key")
        self.ca_file = str(directory / "ca.pem")
        server.cert_chain_pems[0].write_to_path(self.cert)
        for pem in server.cert_chain_pems[1:]:
            pem.write_to_path(self.cert, append=True)
        server.private_key_pem.write_to_path(self.key)
        self.ca.cert_pem.write_to_path(self.ca_file)

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path)


def tls_options(tmp_path: Path, certs: Certs, **kwargs: object) -> ServeOptions:
    return options(tmp_path, tls_cert=certs.cert, tls_key=certs.key, **kwargs)


async def send_tls(
    address: tuple[str, int], context: ssl.SSLContext, data: bytes, chunk: int = 1000
) -> None:
    stream = await trio.open_ssl_over_tcp_stream(
        *address, ssl_context=context, https_compatible=True
    )
    async with stream:
        for start in range(0, len(data), chunk):
            await stream.send_all(data[start : start + chunk])


async def test_tls_lines_arrive_whole_and_in_order(tmp_path: Path, certs: Certs) -> None:
    opts = tls_options(tmp_path, certs)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        address = server.tcp_addresses[0]
        async with trio.open_nursery() as clients:
            for client in range(10):
                data = b"".join(demo_lines(client, 300, seed=3))
                clients.start_soon(send_tls, address, certs.client_context(), data, 777)
        assert await finish(server) == 0
    verification = verify_demo_output(opts.output, 10, 300, seed=3)
    assert verification.ok, verification.problems
    summary = server.summary
    assert summary is not None
    assert summary.inputs is not None
    assert summary.inputs.tls is not None
    assert summary.inputs.tls.handshakes == 10
    assert summary.inputs.tls.handshake_failures == 0
    assert dict(summary.rows())["tls handshakes"] == "10 ok, 0 failed (0 timed out)"


async def test_tls_plain_text_client_is_a_counted_handshake_failure(
    tmp_path: Path, certs: Certs
) -> None:
    opts = tls_options(tmp_path, certs)
    stderr = io.StringIO()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=stderr))
        address = server.tcp_addresses[0]
        plain = await trio.open_tcp_stream(*address)
        await plain.send_all(b"plain text, not a TLS client hello\n" * 20)
        # The failed handshake disturbs nobody: a TLS client is served meanwhile.
        await send_tls(address, certs.client_context(), b"over tls 1\nover tls 2\n")
        with trio.fail_after(10):
            while await plain.receive_some(4096):  # the server's alert, then its close
                pass
        await plain.aclose()
        assert await finish(server) == 0
    with open(opts.output, "rb") as output:
        assert output.read() == b"over tls 1\nover tls 2\n"
    summary = server.summary
    assert summary is not None
    assert summary.inputs is not None
    assert summary.inputs.tls is not None
    assert (summary.inputs.tls.handshakes, summary.inputs.tls.handshake_failures) == (1, 1)
    assert summary.server.resets == 0
    assert re.search(r"tls handshakes +1 ok, 1 failed \(0 timed out\)", stderr.getvalue())


async def test_tls_silent_client_times_out_its_handshake(
    tmp_path: Path, certs: Certs, autojump_clock: trio.testing.MockClock
) -> None:
    opts = tls_options(tmp_path, certs, tls_handshake_timeout=5.0, idle_timeout=None)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        silent = await trio.open_tcp_stream(*server.tcp_addresses[0])
        before = trio.current_time()
        with trio.fail_after(60):
            assert await silent.receive_some(4096) == b""  # closed by the server
        assert trio.current_time() - before >= 5.0
        await silent.aclose()
        assert await finish(server) == 0
    summary = server.summary
    assert summary is not None
    assert summary.inputs is not None
    assert summary.inputs.tls is not None
    assert summary.inputs.tls.handshake_timeouts == 1
    assert summary.inputs.tls.handshake_failures == 1


async def test_tls_a_slow_handshake_does_not_block_the_accept_loop(
    tmp_path: Path, certs: Certs
) -> None:
    opts = tls_options(tmp_path, certs)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        address = server.tcp_addresses[0]
        silent = [await trio.open_tcp_stream(*address) for _ in range(3)]
        with trio.fail_after(10):
            await send_tls(address, certs.client_context(), b"served while others wait\n")
        for stream in silent:
            await stream.aclose()
        assert await finish(server) == 0
    with open(opts.output, "rb") as output:
        assert output.read() == b"served while others wait\n"


async def test_tls_unix_sockets_stay_plain(tmp_path: Path, certs: Certs) -> None:
    path = str(tmp_path / "plain.sock")
    opts = tls_options(tmp_path, certs, unix=(path,))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        stream = await trio.open_unix_socket(path)
        async with stream:
            await stream.send_all(b"local and plain\n")
        assert await finish(server) == 0
    with open(opts.output, "rb") as output:
        assert output.read() == b"local and plain\n"


async def test_tls_per_address_limit_sees_through_tls(tmp_path: Path, certs: Certs) -> None:
    opts = tls_options(tmp_path, certs, max_per_address=1)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        address = server.tcp_addresses[0]
        first = await trio.open_ssl_over_tcp_stream(
            *address, ssl_context=certs.client_context(), https_compatible=True
        )
        await first.do_handshake()
        second = await trio.open_tcp_stream(*address)
        with trio.fail_after(10):
            assert await second.receive_some(100) == b""  # refused: closed unread
        await second.aclose()
        await first.aclose()
        assert await finish(server) == 0
    assert server.summary is not None
    assert server.summary.server.refused_per_address == 1


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("missing", "cannot read TLS certificate"),
        ("garbage", "cannot use TLS certificate"),
        ("mismatch", "cannot use TLS certificate .* KEY_VALUES_MISMATCH|key values mismatch"),
    ],
)
async def test_tls_bad_certificate_or_key_is_one_clear_error(
    tmp_path: Path, certs: Certs, which: str, message: str
) -> None:
    cert, key = certs.cert, certs.key
    if which == "missing":
        cert = str(tmp_path / "nowhere.crt")
    elif which == "garbage":
        (tmp_path / "garbage.pem").write_text("not a certificate\n")
        cert = str(tmp_path / "garbage.pem")
    else:
        (tmp_path / "other").mkdir()
        key = Certs(tmp_path / "other").key  # another CA's key: not the certificate's
    opts = options(tmp_path, tls_cert=cert, tls_key=key)
    with pytest.raises(ServeError, match=message) as info:
        await run_server(opts, stderr=io.StringIO())
    assert "\n" not in str(info.value)


async def test_tls_encrypted_key_is_refused_without_a_prompt(tmp_path: Path, certs: Certs) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(certs.key).read_bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (tmp_path / "encrypted.key").write_bytes(encrypted)
    opts = options(tmp_path, tls_cert=certs.cert, tls_key=str(tmp_path / "encrypted.key"))
    with pytest.raises(ServeError, match="the TLS key is encrypted"):
        await run_server(opts, stderr=io.StringIO())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tls_cert": "c.pem"}, "TLS needs both a certificate and its key"),
        ({"tls_key": "k.pem"}, "TLS needs both a certificate and its key"),
        (
            {"tls_cert": "c.pem", "tls_key": "k.pem", "tcp": (), "unix": ("/tmp/x.sock",)},
            "TLS is served on TCP addresses",
        ),
        ({"tls_handshake_timeout": 0}, "tls_handshake_timeout must be > 0"),
    ],
)
def test_tls_options_are_checked(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        options(tmp_path, **kwargs)


def test_cli_tls_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--tls-cert", "c.pem", "-o", str(tmp_path / "x")]) == 2
    assert "TLS needs both a certificate and its key" in capsys.readouterr().err
    output = tmp_path / "never.log"
    args = ["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.pem", "-o", str(output)]
    code = main(["serve", "--tcp", "127.0.0.1:0", *args])
    assert code == 1
    err = capsys.readouterr().err
    assert "error: cannot read TLS certificate '/nonexistent.pem'" in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert not output.exists()  # checked before the output is opened
    assert main(["serve", "--tls-handshake-timeout", "0"]) == 2
    assert "SECONDS must be > 0" in capsys.readouterr().err


async def test_tls_openssl_s_client_sends_lines(tmp_path: Path, certs: Certs) -> None:
    """A TLS client this project did not write: ``openssl s_client``."""
    openssl = require_program("openssl")
    opts = tls_options(tmp_path, certs)
    lines = b"".join(b"openssl line %04d\n" % n for n in range(2000))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        host, port = server.tcp_addresses[0]
        command = [openssl, "s_client", "-quiet", "-no_ign_eof", "-verify_return_error"]
        command += ["-connect", f"{host}:{port}", "-CAfile", certs.ca_file]
        with trio.fail_after(30):
            result = await trio.run_process(command, stdin=lines, capture_stdout=True, check=False)
        assert result.returncode == 0, result
        assert await finish(server) == 0
    with open(opts.output, "rb") as output:
        assert output.read() == lines


async def test_tls_python_ssl_client_in_another_process(tmp_path: Path, certs: Certs) -> None:
    """A separate process with the stdlib ``ssl`` module, closing without close_notify."""
    opts = tls_options(tmp_path, certs)
    script = (
        "import socket, ssl, sys\n"
        "context = ssl.create_default_context(cafile=sys.argv[3])\n"
        "raw = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n"
        "tls = context.wrap_socket(raw, server_hostname=sys.argv[1])\n"
        "for n in range(3000):\n"
        "    tls.sendall(b'stdlib ssl line %04d\\n' % n)\n"
        "tls.shutdown(socket.SHUT_RDWR)\n"
        "tls.close()\n"
    )
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        host, port = server.tcp_addresses[0]
        with trio.fail_after(30):
            await trio.run_process([sys.executable, "-c", script, host, str(port), certs.ca_file])
        assert await finish(server) == 0
    with open(opts.output, "rb") as output:
        assert output.read() == b"".join(b"stdlib ssl line %04d\n" % n for n in range(3000))
    assert server.summary is not None
    assert server.summary.server.resets == 0


def test_peer_address_looks_through_tls() -> None:
    from trio_aggregator._serve._listeners import peer_address

    class Wrapper(trio.abc.ReceiveStream):
        def __init__(self, inner: object) -> None:
            self.transport_stream = inner

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            raise NotImplementedError

        async def aclose(self) -> None:
            raise NotImplementedError

    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(accepted))
            assert peer_address(Wrapper(Wrapper(stream))) == "127.0.0.1"
            accepted.close()
    assert peer_address(Wrapper(object())) is None


async def test_server_without_tls_has_no_tls_figures(tmp_path: Path) -> None:
    server = LineServer(options(tmp_path, announce=False))
    server.shutdown()
    assert await server.run() == 0
    assert server.summary is not None
    assert server.summary.inputs is not None
    assert server.summary.inputs.tls is None
    assert "tls handshakes" not in dict(server.summary.rows())


async def test_tls_connection_cut_at_shutdown_counts_its_unread_bytes(
    tmp_path: Path, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the kernel holds for a TLS connection the server cuts is encrypted: at least
    one line is counted lost (``unread``), with its encrypted bytes, never silently."""
    gate = hold_file_writes(monkeypatch)
    opts = tls_options(tmp_path, certs, buffer=1, fsync_interval=0, shutdown_timeout=0)

    async def chatty(address: tuple[str, int]) -> None:
        stream = await trio.open_ssl_over_tcp_stream(
            *address, ssl_context=certs.client_context(), https_compatible=True
        )
        line = b"x" * 99 + b"\n"
        with contextlib.suppress(trio.BrokenResourceError):
            while True:  # until the server cuts the connection
                await stream.send_all(line * 100)
        await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(run_server, opts, stderr=io.StringIO()))
        nursery.start_soon(chatty, server.tcp_addresses[0])
        await trio.testing.wait_all_tasks_blocked(0.05)  # buffers full, writer held
        server.shutdown()
        gate.set()
        await server.wait_finished()
    assert server.exit_code == 1
    summary = server.summary
    assert summary is not None
    assert summary.losses.lines["unread"] >= 1
    assert summary.losses.bytes["unread"] > 0


@pytest.mark.parametrize(
    ("handshake_done", "expected"), [(True, (0, 9, False)), (False, (0, 0, True))]
)
def test_count_unread_under_tls(handshake_done: bool, expected: tuple[int, int, bool]) -> None:
    """Encrypted bytes count as one line at least; none before the handshake is done."""
    from trio_aggregator._serve._listeners import count_unread

    class Layer:
        def __init__(self, inner: trio.SocketStream) -> None:
            self.transport_stream = inner
            self.handshake_done = handshake_done

    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.sendall(b"encrypted")
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(a))
        assert count_unread(Layer(stream), 4096, 1 << 20) == expected  # type: ignore[arg-type]
