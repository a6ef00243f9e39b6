"""Interop (issue 10): TLS with a real rsyslogd and its GnuTLS stream driver (``gtls``).

Both ways, with certificates from ``trustme`` and the configs of the docs:

* rsyslog as the TLS central server (``imtcp``, ``gtls``) receiving ``serve --forward
  --forward-tls --forward-ca``, restarted mid-stream (docs/forwarding.rst);
* rsyslog as a TLS client (``omfwd``, ``gtls``, the server's certificate checked by
  name) sending to ``serve --tls-cert --tls-key`` (docs/syslog.rst).

Loopback only, every test bounded; rsyslog runs as a foreground process of the test's
(`tests._rsyslog`). A missing rsyslogd or ``gtls`` module (package ``rsyslog-gnutls``)
fails the tests under CI and skips them elsewhere.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio

from ._rsyslog import Rsyslog, free_port, require_rsyslog_module
from .test_interop_clients import (
    DEADLINE,
    check_relayed,
    relay_through_rsyslog,
    start_server,
    stop,
)
from .test_rsyslog_forward import check_central_log, stream_through_a_restart
from .test_serve_tls import Certs

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    """A trustme CA, and a certificate for 127.0.0.1 and localhost (PEM files)."""
    require_rsyslog_module("lmnsd_gtls", "rsyslog-gnutls")
    return Certs(tmp_path)


def tls_central_body(certs: Certs, port: int, out: Path) -> str:
    """The TLS central rsyslog of docs/forwarding.rst: imtcp over gtls into one file."""
    return (
        'global(DefaultNetstreamDriver="gtls"\n'
        f'       DefaultNetstreamDriverCAFile="{certs.ca_file}"\n'
        f'       DefaultNetstreamDriverCertFile="{certs.cert}"\n'
        f'       DefaultNetstreamDriverKeyFile="{certs.key}")\n'
        'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"\n'
        '       StreamDriver.AuthMode="anon")\n'
        f'ruleset(name="central") {{ action(type="omfile" file="{out}" template="raw") }}\n'
        f'input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="central")\n'
    )


@pytest.mark.parametrize("framing", ["lines", "octet-counted"])
async def test_forwarding_over_tls_to_rsyslog_survives_its_restart(
    tmp_path: Path, certs: Certs, framing: str
) -> None:
    server, sent, out = await stream_through_a_restart(
        tmp_path,
        framing,
        partial(tls_central_body, certs),
        forward_tls=True,
        forward_ca=certs.ca_file,
    )
    check_central_log(server, sent, out)
    # rsyslog complains (error 2078) of a TLS session that ends without a close
    # notification: serve's ended with one. (Its handshake complaints, 2083 and 2089,
    # are the harness's plain connects that wait for the port, at start and restart.)
    log = (tmp_path / "rsyslog" / "rsyslogd.log").read_text(errors="replace")
    assert "/e/2078 " not in log, log


def tls_client_body(certs: Certs, port_in: int, port_out: int, framing: str) -> str:
    """The rsyslog TLS client of docs/syslog.rst: plain imtcp in, omfwd over gtls out.

    It needs only the CA file: ``serve`` asks for no client certificate. The ruleset has
    a queue of its own with one worker: on the main queue, rsyslog may run it on two
    workers at once, and the records come out of order (on one or two connections).
    """
    return f'global(DefaultNetstreamDriverCAFile="{certs.ca_file}")\n' + (
        'module(load="imtcp")\n'
        f'input(type="imtcp" address="127.0.0.1" port="{port_in}" ruleset="forward")\n'
        'ruleset(name="forward" queue.type="LinkedList" queue.workerThreads="1") {\n'
        f'    action(type="omfwd" target="127.0.0.1" port="{port_out}" protocol="tcp"\n'
        f'           TCP_Framing="{framing}"\n'
        '           StreamDriver="gtls" StreamDriverMode="1"\n'
        '           StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="localhost")\n'
        "}\n"
    )


@pytest.mark.parametrize("framing", ["traditional", "octet-counted"])
async def test_rsyslog_forwards_over_tls_to_serve(
    tmp_path: Path, certs: Certs, framing: str
) -> None:
    count = 50_000
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            server, output = await start_server(
                nursery, tmp_path, tls_cert=certs.cert, tls_key=certs.key
            )
            port_in = free_port()
            port_out = server.tcp_addresses[0][1]
            rsyslog = Rsyslog(
                tmp_path / "rsyslog",
                tls_client_body(certs, port_in, port_out, framing),
                listen_port=port_in,
            )
            rsyslog.check_config()
            await relay_through_rsyslog(rsyslog, port_in, output, count)
            assert await stop(server) == 0
    check_relayed(output, count)
    summary = server.summary
    assert summary is not None
    assert summary.server.framing_errors == 0
    tls = summary.inputs.tls
    assert tls is not None
    assert (tls.handshakes, tls.handshake_failures) == (1, 0)  # one TLS session, checked
