"""The ``serve`` arguments of forwarding (``--forward`` and its settings), in a group."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._argtypes import seconds_arg, tcp_address_arg
from ._options import FORWARD_FRAMINGS, FORWARD_WHEN_FULL

if TYPE_CHECKING:
    import argparse

__all__ = ["add_forward_arguments", "forward_options"]


def add_forward_arguments(serve: argparse.ArgumentParser) -> None:
    """Add the group of ``--forward*`` arguments to the ``serve`` parser."""
    forwarding = serve.add_argument_group("forwarding to a central collector")
    forwarding.add_argument(
        "--forward",
        metavar="HOST:PORT",
        action="append",
        type=tcp_address_arg,
        help="also send every line to this TCP receiver (repeatable; each target has its own"
        " buffer; reconnects with backoff; without -o, no local file is written)",
    )
    forwarding.add_argument(
        "--forward-framing",
        choices=FORWARD_FRAMINGS,
        help="'lines' (LF-terminated) or 'octet-counted' (RFC 6587 'LEN MSG'; rsyslog imtcp"
        " detects both; default lines)",
    )
    forwarding.add_argument(
        "--forward-tls", action="store_true", help="forward over TLS (the system's CAs)"
    )
    forwarding.add_argument(
        "--forward-ca",
        metavar="FILE",
        help="check the targets' certificates against this CA file (PEM; implies --forward-tls)",
    )
    forwarding.add_argument(
        "--forward-when-full",
        choices=FORWARD_WHEN_FULL,
        help="when a target's buffer is full (target down or slow): 'block' holds the clients"
        " back, every output waits, nothing is lost; 'drop_newest' drops for that target only"
        " (counted lost, exit status 1) and the file keeps being written (default block)",
    )
    forwarding.add_argument(
        "--forward-resend",
        metavar="SECONDS",
        type=seconds_arg,
        help="after a lost connection, send again the lines forwarded in the last SECONDS, so"
        " what the target had not read arrives (perhaps twice, counted re-sent); 0: never"
        " (default 1)",
    )


_SETTINGS = {
    "forward_framing": "lines",
    "forward_tls": False,
    "forward_ca": None,
    "forward_when_full": "block",
    "forward_resend": 1.0,
}
"""The settings of ``--forward`` and their defaults (None on the parser: given or not)."""


def forward_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--forward*`` arguments, as `ServeOptions` fields (a CA file implies TLS).

    Raises:
        ValueError: A setting of forwarding was given without ``--forward``.
    """
    given = {name: getattr(args, name) for name in _SETTINGS}
    given = {
        name: value for name, value in given.items() if value is not None and value is not False
    }
    if given and not args.forward:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ValueError(f"{options} without --forward: give a target (--forward HOST:PORT)")
    settings = {**_SETTINGS, **given}
    settings["forward_tls"] = settings["forward_tls"] or settings["forward_ca"] is not None
    return {"forward": tuple(args.forward or ()), **settings}
