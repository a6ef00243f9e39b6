"""What ``trio-aggregator serve`` is told: `ServeOptions`, and the defaults."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import attrs

from trio_aggregator import AggregatorConfig

from ._binary import BINARY_POLICIES, BinaryPolicy
from ._checks import count, flag, one_of, seconds
from ._collector import SHUTDOWN_IDLE, CutRecords
from ._framing import FRAMINGS, Framing, FramingRules
from ._lines import DEFAULT_MAX_LINE_BYTES
from ._tls import HANDSHAKE_TIMEOUT

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "FORWARD_FRAMINGS",
    "FORWARD_WHEN_FULL",
    "BATCH_MAX_BYTES",
    "MAX_BUFFER",
    "MAX_LINE_BYTES",
    "MIN_INTERVAL",
    "BATCH_MAX_ITEMS",
    "DEFAULT_OUTPUT",
    "DEFAULT_TCP",
    "ROTATE_CHECK_INTERVAL",
    "ServeOptions",
]

DEFAULT_TCP = "127.0.0.1:5140"
"""Where ``serve`` listens when given neither ``--tcp`` nor ``--unix``."""

DEFAULT_OUTPUT = "aggregated.log"

BATCH_MAX_ITEMS = 128
BATCH_MAX_BYTES = 1024 * 1024
MAX_LINE_BYTES = 64 * 1024 * 1024
"""The largest ``max_line_bytes``: each connection may hold one such line in memory."""
MAX_BUFFER = 1_000_000
"""The largest ``buffer``, in writes (the buffer bounds the server's memory)."""
MIN_INTERVAL = 0.01
"""The shortest fsync, status or idle interval (shorter ones would spin the CPU)."""
ROTATE_CHECK_INTERVAL = 1.0
"""Seconds between rotation checks when fsync is off (``--fsync-interval 0``)."""


ForwardFraming = Literal["lines", "octet-counted"]
FORWARD_FRAMINGS: tuple[ForwardFraming, ...] = ("lines", "octet-counted")
"""How ``--forward`` frames records (RFC 6587): LF-terminated, or ``LEN SP MSG``."""
ForwardWhenFull = Literal["block", "drop_newest"]
FORWARD_WHEN_FULL: tuple[ForwardWhenFull, ...] = ("block", "drop_newest")
"""What a forward output does when its buffer is full (a policy counted in lines)."""

_AGGREGATOR_SETTINGS = (
    ("buffer", "buffer_size"),
    ("fsync_interval", "sync_interval"),
    ("drain_timeout", "drain_timeout"),
)
"""The options that become settings of the `AggregatorConfig`, by option name."""


def _never_called(data: object) -> None:  # pragma: no cover - a config built to check
    raise AssertionError("the AggregatorConfig built to check the options never runs")


def _check_setting(option: str, setting: str, value: object) -> None:
    """Check *value* with `AggregatorConfig`'s own rule for *setting*, naming *option*."""
    kwargs: dict[str, Any] = {setting: value}
    try:
        AggregatorConfig(writer=_never_called, **kwargs)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        if message.startswith(f"{setting} "):
            message = option + message[len(setting) :]
        else:
            message = f"{option}: {message}"
        raise (TypeError if isinstance(exc, TypeError) else ValueError)(message) from None


_WILDCARDS = ("", "0.0.0.0", "::")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _same_address(target: tuple[str, int], listening: tuple[str, int]) -> bool:
    """Whether forwarding to *target* reaches the listener on *listening*, as far as the
    names tell (a host name the server does not resolve is not compared)."""
    (host, port), (listen_host, listen_port) = target, listening
    if port != listen_port:
        return False
    return host == listen_host or (listen_host in _WILDCARDS and host in _LOOPBACK)


@attrs.frozen(kw_only=True)
class ServeOptions:
    """What ``trio-aggregator serve`` is told on its command line, checked at construction.

    Each field follows the app's rules (``_checks``, those of `AggregatorConfig`): a
    value of the wrong type raises `TypeError`, one out of range or options that do not
    go together `ValueError`, and the message names the field. ``buffer``,
    ``fsync_interval`` and ``drain_timeout``, which become the aggregator's settings,
    are also checked by `AggregatorConfig` itself, here rather than when the server
    starts: ``fsync_interval`` must be finite, for one.
    """

    tcp: tuple[tuple[str, int], ...] = ()
    """TCP addresses to listen on, as ``(host, port)``; port 0 picks a free port."""

    unix: tuple[str, ...] = ()
    """Unix socket paths to listen on."""

    unix_mode: int = attrs.field(default=0o660, validator=count(minimum=0, maximum=0o777))
    """Permissions of the Unix socket files, applied whatever the umask."""

    output: str | None = DEFAULT_OUTPUT
    """The file to append to, ``"-"`` for standard output, None for none (forward only)."""

    rotate_bytes: int | None = attrs.field(default=None, validator=count(optional=True))
    """Rotate the output when it reaches this size (None: never)."""

    backups: int = attrs.field(default=5, validator=count())
    """Rotated files kept, with ``rotate_bytes``."""

    buffer: int = attrs.field(default=256, validator=count(maximum=MAX_BUFFER))
    """Capacity of the aggregator's buffer, in writes (each: the lines of one chunk read)."""

    fsync_interval: float = attrs.field(default=1.0, validator=seconds(at_least=MIN_INTERVAL))
    """Seconds between fsyncs of the output; 0 turns periodic fsync off."""

    max_line_bytes: int = attrs.field(
        default=DEFAULT_MAX_LINE_BYTES, validator=count(maximum=MAX_LINE_BYTES)
    )
    """Longer lines are truncated to this many bytes (the newline not counted)."""

    max_connections: int | None = attrs.field(default=1024, validator=count(optional=True))
    """Connections served at once; more wait in the listen backlog (None: no limit)."""

    idle_timeout: float | None = attrs.field(
        default=60.0, validator=seconds(positive=True, optional=True, at_least=MIN_INTERVAL)
    )
    """Close a connection silent for this many seconds (None: never)."""

    line_timeout: float | None = attrs.field(
        default=30.0, validator=seconds(positive=True, optional=True, at_least=MIN_INTERVAL)
    )
    """Cut a line not finished this many seconds after its first byte (None: no limit)."""

    max_per_address: int | None = attrs.field(default=64, validator=count(optional=True))
    """Connections served at once from one IP address; more are closed (None: no limit)."""

    shutdown_timeout: float = attrs.field(default=5.0, validator=seconds())
    """At shutdown, the most seconds given to clients to finish sending."""

    shutdown_idle: float = attrs.field(default=SHUTDOWN_IDLE, validator=seconds())
    """At shutdown, close a listener or connection silent for this many seconds."""

    drain_timeout: float = attrs.field(default=30.0, validator=seconds())
    """At shutdown, the most seconds given to the aggregator to write what it holds."""

    cut_records: CutRecords = attrs.field(
        default="mark", validator=attrs.validators.in_(("mark", "drop"))
    )
    """A line the server cuts (idle timeout, shutdown): ``"mark"`` it or ``"drop"`` it."""

    quiet: bool = attrs.field(default=False, validator=flag)
    """No status line."""

    status_interval: float | None = attrs.field(
        default=None, validator=seconds(positive=True, optional=True, at_least=MIN_INTERVAL)
    )
    """Seconds between status lines (None: 1 on a terminal, 10 otherwise)."""

    announce: bool = attrs.field(default=True, validator=flag)
    """Print the ``listening on`` lines first and a summary at the end, on stderr."""

    metrics: tuple[str, int] | None = None
    """Serve the aggregator's Prometheus metrics over HTTP on this ``(host, port)``.

    It needs prometheus-client (the ``prometheus`` extra); None: no metrics.
    """

    # -- TLS and UDP inputs (``_inputs``)

    udp: tuple[tuple[str, int], ...] = ()
    """UDP addresses to read datagrams on, one record each, as ``(host, port)``."""

    tls_cert: str | None = None
    """PEM certificate chain: serve TLS on every TCP address (with ``tls_key``)."""

    tls_key: str | None = None
    """PEM private key of ``tls_cert`` (not encrypted)."""

    tls_handshake_timeout: float = attrs.field(
        default=HANDSHAKE_TIMEOUT, validator=seconds(positive=True, at_least=MIN_INTERVAL)
    )
    """Seconds a TLS client gets to finish its handshake."""

    # -- forwarding (``_outputs``)

    forward: tuple[tuple[str, int], ...] = ()
    """Forward every line to these ``(host, port)`` targets too (each: its own buffer)."""

    forward_framing: ForwardFraming = attrs.field(
        default="lines", validator=attrs.validators.in_(FORWARD_FRAMINGS)
    )
    """How forwarded records are framed: ``"lines"`` or ``"octet-counted"``."""

    forward_tls: bool = attrs.field(default=False, validator=flag)
    """Forward over TLS (the system's trusted CAs, or ``forward_ca``)."""

    forward_ca: str | None = None
    """A CA file (PEM) to check the forward targets' certificates with (needs TLS)."""

    forward_when_full: ForwardWhenFull = attrs.field(
        default="block", validator=attrs.validators.in_(FORWARD_WHEN_FULL)
    )
    """A forward output's full buffer: ``"block"`` the readers (and so every output) or
    ``"drop_newest"`` (dropped for that output only, counted lost)."""

    forward_resend: float = attrs.field(default=1.0, validator=seconds())
    """After a lost connection, send again the lines forwarded in the last this many
    seconds (0: none): what the target had not read yet arrives, perhaps twice."""

    def _check_inputs(self) -> None:
        """The rules of the inputs: at least one; TLS settings that go together."""
        if not self.tcp and not self.unix and not self.udp:
            raise ValueError("give at least one TCP address, Unix socket path or UDP address")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and its key (--tls-cert, --tls-key)")
        if self.tls_cert is not None and not self.tcp:
            raise ValueError("TLS is served on TCP addresses: give at least one (--tcp)")

    def _check_outputs(self) -> None:
        """The rules of the outputs: at least one; TLS settings that go together."""
        if self.output is None and not self.forward:
            raise ValueError("give an output file or at least one forward target")
        if self.forward_ca is not None and not self.forward_tls:
            raise ValueError("forward_ca needs forward_tls")
        if self.output is None and self.rotate_bytes is not None:
            raise ValueError("rotation needs a file output")
        for host, port in self.forward:
            if not 1 <= port <= 65535:
                raise ValueError(f"a forward target needs a port in 1..65535, not {port}")
            if any(_same_address((host, port), address) for address in self.tcp):
                raise ValueError(
                    f"forwarding to {host}:{port}, an address this server listens on, would"
                    " send every line round in a loop"
                )

    # -- input framing (``_framing``, ``_binary``)

    framing: Framing = attrs.field(default="auto", validator=one_of(FRAMINGS))
    """``"auto"`` (octet-counted or traditional, per record), ``"lines"`` or ``"octet-counted"``."""

    nul_terminates: bool = attrs.field(default=True, validator=flag)
    """Whether NUL ends a traditional frame (``auto``, ``octet-counted``)."""

    binary: BinaryPolicy = attrs.field(default="keep", validator=one_of(BINARY_POLICIES))
    """Binary records (NUL, invalid UTF-8): ``"keep"`` (write, count) or ``"reject"``."""

    def framing_rules(self) -> FramingRules:
        """The framing settings, as the collector takes them."""
        return FramingRules(
            framing=self.framing, nul_terminates=self.nul_terminates, binary=self.binary
        )

    def __attrs_post_init__(self) -> None:
        self._check_outputs()
        self._check_inputs()
        if any(not path for path in self.unix):
            raise ValueError("a Unix socket path must not be empty")
        if self.output == "-" and self.rotate_bytes is not None:
            raise ValueError("rotation needs a file output, not standard output")
        for option, setting in _AGGREGATOR_SETTINGS:
            _check_setting(option, setting, getattr(self, option))
        self.aggregator_config(_never_called)  # and any rule joining several settings

    def aggregator_config(
        self,
        writer: Callable[[Any], object],
        sync_fn: Callable[[], object] | None = None,
        sync_interval: float = 0.0,
        on_writer_error: Callable[[Any, Exception], object] | None = None,
    ) -> AggregatorConfig:
        """The settings of the server's aggregator, writing with *writer*.

        Args:
            writer: The aggregator's writer (the output sink's ``write``).
            sync_fn: The periodic callback (an fsync, a rotation check), or None.
            sync_interval: Seconds between runs of *sync_fn*.
            on_writer_error: The hook given a batch the writer failed to write for
                good (the server counts its lines lost); None: the default policy.
        """
        return AggregatorConfig(
            writer=writer,
            buffer_size=self.buffer,
            sync_fn=sync_fn,
            sync_interval=sync_interval,
            batch_max_items=BATCH_MAX_ITEMS,
            batch_max_bytes=BATCH_MAX_BYTES,
            drain_timeout=self.drain_timeout,
            on_writer_error="continue" if on_writer_error is None else on_writer_error,
        )
