"""The ``serve`` arguments of the TLS and UDP inputs: `add_input_arguments`, `input_options`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ._argtypes import positive_interval_arg
from ._listeners import parse_tcp_address
from ._tls import HANDSHAKE_TIMEOUT

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["add_input_arguments", "input_options"]


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_tcp_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``TLS and UDP inputs`` group to the ``serve`` *parser*."""
    group = parser.add_argument_group("TLS and UDP inputs")
    add: Callable[..., Any] = group.add_argument
    add(
        "--udp",
        metavar="HOST:PORT",
        action="append",
        type=_address,
        help="also read UDP datagrams here, one record each (repeatable; port 0: a free port)",
    )
    add(
        "--tls-cert",
        metavar="FILE",
        help="serve TLS on every TCP address with this PEM certificate chain (Unix sockets"
        " stay plain); needs --tls-key",
    )
    add("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert (unencrypted)")
    add(
        "--tls-handshake-timeout",
        metavar="SECONDS",
        type=positive_interval_arg,
        default=HANDSHAKE_TIMEOUT,
        help="close a TLS client that has not finished its handshake by then, counted"
        f" (default {HANDSHAKE_TIMEOUT:g})",
    )


def input_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `ServeOptions` fields of the TLS and UDP arguments."""
    return {
        "udp": tuple(args.udp or ()),
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "tls_handshake_timeout": args.tls_handshake_timeout,
    }
