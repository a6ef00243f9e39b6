"""The ``trio-aggregator`` command: ``serve`` (a line collector) and ``demo``.

`main` is the console entry point; it returns the exit code: 0 on success, 1 when the
server could not start or lost data (or the demo's check failed), 2 for bad arguments,
130 when interrupted before a server was up.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import sys
from typing import TYPE_CHECKING, NoReturn

import trio

from trio_aggregator import __version__

from ._argtypes import (
    count_arg,
    interval_arg,
    octal_mode_arg,
    parse_size,
    positive_interval_arg,
    seconds_arg,
    size_arg,
    tcp_address_arg,
)
from ._binary import BINARY_POLICIES
from ._demo import DemoOptions, run_demo
from ._forward_args import add_forward_arguments, forward_options
from ._framing import FRAMINGS
from ._input_args import add_input_arguments, input_options
from ._lines import DEFAULT_MAX_LINE_BYTES
from ._listeners import parse_tcp_address
from ._options import (
    DEFAULT_OUTPUT,
    DEFAULT_TCP,
    MAX_BUFFER,
    MAX_LINE_BYTES,
    ServeOptions,
)
from ._server import ServeError, run_server

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["build_parser", "main", "parse_size"]

PROG = "trio-aggregator"
METRICS_HOST = "127.0.0.1"
"""Where ``--metrics PORT`` serves: the loopback address (metrics need no authentication)."""

SERVE_EXAMPLES = f"""\
examples:
  {PROG} serve
      listen on {DEFAULT_TCP}, append every line to ./{DEFAULT_OUTPUT}
  {PROG} serve --tcp 127.0.0.1:0 --unix /tmp/logs.sock -o app.log
      a free TCP port (printed as "listening on HOST:PORT") and a Unix socket
  {PROG} serve -o app.log --rotate-bytes 100M --backups 7
      rotate app.log -> app.log.1 ... app.log.7 at 100 MiB
  {PROG} serve -o - --quiet | grep ERROR
      lines to standard output, no status line
  {PROG} serve --metrics 9464
      also serve Prometheus metrics on http://127.0.0.1:9464/metrics
      (needs prometheus-client: python -m pip install '.[prometheus]' in a clone)
  {PROG} serve --tcp 0.0.0.0:6514 --tls-cert server.crt --tls-key server.key
      TLS on the TCP address (Unix sockets stay plain)
  {PROG} serve --udp 127.0.0.1:514 --tcp 127.0.0.1:5140
      also one record per UDP datagram (e.g. logger --udp -n 127.0.0.1 -P 514 hi)
  {PROG} serve --tcp 0.0.0.0:5140 --forward central.example.net:514
      an edge collector: forward every line to a central rsyslog, no local file
      (add -o FILE to keep a local copy too)
  kill -HUP $(pidof -s trio-aggregator)
      reopen the output file (after logrotate renamed it)
  echo hello | nc -N 127.0.0.1 5140
      send one line (OpenBSD netcat; -q0 with traditional netcat)
  logger --tcp --octet-count -n 127.0.0.1 -P 5140 -t app "syslog works too"
      syslog over TCP, octet-counted or not (--framing auto, the default)

Every complete line a client sends is written whole (never interleaved with another
client's), and each connection's lines keep their order. A line longer than
--max-line-bytes is truncated to that length (the rest of it is discarded and counted);
a last line without a newline is kept when the client disconnects. SIGINT or SIGTERM:
stop accepting, let clients finish (up to --shutdown-timeout), write everything, fsync,
print a summary, exit 0 (1 if a line read was lost: every loss is counted, in lines;
or if a framing error was met).
A second signal closes connections at once (what was read is still written).
"""

DEMO_EXAMPLES = f"""\
examples:
  {PROG} demo
      50 clients x 2,000 lines into a temporary file, then verify it
  {PROG} demo --clients 200 --lines 500 --output /tmp/demo.log
      more clients, and keep the file

Exit status 0 only if every line is in the file exactly once, none interleaved, in each
connection's order.
"""


class _ArgumentParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose errors raise instead of exiting the process."""

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message, sys.stderr)
        raise _ExitError(status)


class _ExitError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


_tcp = tcp_address_arg


def _metrics_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, or a bare ``PORT`` on the loopback address."""
    return _tcp(f"{METRICS_HOST}:{text}" if text.isdigit() else text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``trio-aggregator`` command."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _ArgumentParser(
        prog=PROG,
        description="Collect newline-delimited records from many sockets into one file,"
        " each line whole and in order (trio-aggregator).",
        epilog=f"run '{PROG} COMMAND --help' for a command's options and examples",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="collect lines from TCP/Unix socket clients into one file",
        description="Listen on TCP and/or Unix sockets; write every line each client sends,"
        " whole, into one output.",
        epilog=SERVE_EXAMPLES,
        formatter_class=formatter,
    )
    serve.set_defaults(command_parser=serve)
    where = serve.add_argument_group("where to listen and write")
    where.add_argument(
        "--tcp",
        metavar="HOST:PORT",
        action="append",
        type=_tcp,
        help=f"listen on this TCP address (repeatable; port 0: a free port; default {DEFAULT_TCP}"
        " unless --unix is given)",
    )
    where.add_argument(
        "--unix", metavar="PATH", action="append", help="listen on this Unix socket (repeatable)"
    )
    where.add_argument(
        "--unix-mode",
        metavar="OCTAL",
        type=octal_mode_arg,
        default=0o660,
        help="permissions of the Unix socket files, whatever the umask (default 660)",
    )
    where.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help=f"file to append to, '-' for standard output (default ./{DEFAULT_OUTPUT},"
        " or none with --forward); SIGHUP reopens it",
    )
    where.add_argument(
        "--rotate-bytes",
        metavar="SIZE",
        type=size_arg,
        help="rotate the output when it reaches SIZE (e.g. 100M), as FILE.1, FILE.2, ...",
    )
    where.add_argument(
        "--backups",
        metavar="N",
        type=count_arg(1),
        default=5,
        help="rotated files to keep (default 5)",
    )
    add_forward_arguments(serve)
    tuning = serve.add_argument_group("limits and tuning")
    tuning.add_argument(
        "--buffer",
        metavar="N",
        type=count_arg(1, MAX_BUFFER),
        default=256,
        help="aggregator buffer, in writes (each: the complete lines of one read; default 256)",
    )
    tuning.add_argument(
        "--fsync-interval",
        metavar="SECONDS",
        type=interval_arg,
        default=1.0,
        help="fsync the output this often; 0: only at exit (default 1; skipped for a"
        " non-regular output such as /dev/null, a FIFO or a terminal)",
    )
    tuning.add_argument(
        "--max-line-bytes",
        metavar="SIZE",
        type=functools.partial(size_arg, maximum=MAX_LINE_BYTES),
        default=DEFAULT_MAX_LINE_BYTES,
        help="truncate longer lines to SIZE bytes, discarding the rest (default 64K, at most 64M)",
    )
    tuning.add_argument(
        "--max-connections",
        metavar="N",
        type=count_arg(0),
        default=1024,
        help="connections served at once, more wait to be accepted; 0: no limit (default 1024)",
    )
    tuning.add_argument(
        "--idle-timeout",
        metavar="SECONDS",
        type=interval_arg,
        default=60.0,
        help="close connections silent this long; 0: never (default 60)",
    )
    tuning.add_argument(
        "--line-timeout",
        metavar="SECONDS",
        type=interval_arg,
        default=30.0,
        help="cut a line not finished this long after its first byte (see --cut-records);"
        " 0: no limit (default 30)",
    )
    tuning.add_argument(
        "--max-per-address",
        metavar="N",
        type=count_arg(0),
        default=64,
        help="connections served at once from one IP address, more are closed at once;"
        " 0: no limit (default 64)",
    )
    tuning.add_argument(
        "--shutdown-timeout",
        metavar="SECONDS",
        type=seconds_arg,
        default=5.0,
        help="on SIGINT/SIGTERM, the most time clients get to finish sending (default 5)",
    )
    tuning.add_argument(
        "--drain-timeout",
        metavar="SECONDS",
        type=seconds_arg,
        default=30.0,
        help="on shutdown, the most time to write what is buffered (default 30)",
    )
    tuning.add_argument(
        "--cut-records",
        choices=("mark", "drop"),
        default="mark",
        help="a line the server cuts (idle timeout, shutdown): 'mark' writes it followed by"
        " ' [cut by trio-aggregator: REASON]'; 'drop' drops it, counted lost (default mark)",
    )
    add_input_arguments(serve)
    _add_framing_arguments(serve)
    display = serve.add_argument_group("display")
    display.add_argument(
        "--status-interval",
        metavar="SECONDS",
        type=positive_interval_arg,
        help="seconds between status lines, > 0 (default 1 on a terminal, 10 otherwise;"
        " --quiet: none)",
    )
    display.add_argument(
        "-q", "--quiet", action="store_true", help="no status line on standard error"
    )
    display.add_argument(
        "--metrics",
        metavar="[HOST:]PORT",
        type=_metrics_address,
        help=f"serve Prometheus metrics over HTTP here (host default {METRICS_HOST}; needs"
        " the 'prometheus' extra)",
    )

    demo = commands.add_parser(
        "demo",
        help="run a server and many clients, then verify the file",
        description="Start the server on a free loopback port, run many clients at once,"
        " shut down gracefully, then check every line of the file.",
        epilog=DEMO_EXAMPLES,
        formatter_class=formatter,
    )
    demo.add_argument(
        "--clients", metavar="N", type=count_arg(1), default=50, help="connections (default 50)"
    )
    demo.add_argument(
        "--lines",
        metavar="N",
        type=count_arg(1),
        default=2000,
        help="lines per connection (default 2000)",
    )
    demo.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="write here (must not exist or be empty) instead of a temporary directory",
    )
    demo.add_argument("--keep", action="store_true", help="keep the temporary file")
    demo.add_argument("--seed", type=int, default=0, help="seed of line lengths and chunking")
    demo.add_argument(
        "--buffer", metavar="N", type=count_arg(1), default=256, help="server buffer (default 256)"
    )
    demo.add_argument("-q", "--quiet", action="store_true", help="no status line")
    return parser


def _add_framing_arguments(serve: argparse.ArgumentParser) -> None:
    framing = serve.add_argument_group("input framing (see 'Collecting syslog' in the docs)")
    framing.add_argument(
        "--framing",
        choices=FRAMINGS,
        default="auto",
        help="auto: a record starting with 'LENGTH SP' is octet-counted (RFC 6587), others"
        " end at LF or NUL; lines: records end at LF only; octet-counted: every record"
        " must be (others are framing errors) (default auto)",
    )
    framing.add_argument(
        "--no-nul-terminator",
        dest="nul_terminates",
        action="store_false",
        help="NUL does not end a record (it is kept, and the record counted binary)",
    )
    framing.add_argument(
        "--binary",
        choices=BINARY_POLICIES,
        default="keep",
        help="records holding NUL or invalid UTF-8: 'keep' writes them (counted);"
        " 'reject' drops them, counted lost (default keep)",
    )


def _serve_options(args: argparse.Namespace) -> ServeOptions:
    tcp: list[tuple[str, int]] = args.tcp or []
    unix: list[str] = args.unix or []
    if not tcp and not unix and not args.udp:
        tcp = [parse_tcp_address(DEFAULT_TCP)]
    return ServeOptions(
        tcp=tuple(tcp),
        unix=tuple(unix),
        unix_mode=args.unix_mode,
        output=args.output if args.output is not None or args.forward else DEFAULT_OUTPUT,
        **forward_options(args),
        rotate_bytes=args.rotate_bytes,
        backups=args.backups,
        buffer=args.buffer,
        fsync_interval=args.fsync_interval,
        max_line_bytes=args.max_line_bytes,
        max_connections=args.max_connections or None,
        idle_timeout=args.idle_timeout or None,
        line_timeout=args.line_timeout or None,
        max_per_address=args.max_per_address or None,
        shutdown_timeout=args.shutdown_timeout,
        drain_timeout=args.drain_timeout,
        cut_records=args.cut_records,
        quiet=args.quiet,
        status_interval=args.status_interval,
        metrics=args.metrics,
        **input_options(args),
        framing=args.framing,
        nul_terminates=args.nul_terminates,
        binary=args.binary,
    )


class _NoTraceback(logging.Formatter):
    """Error records in one line: the message, without the traceback."""

    def formatException(self, ei: object) -> str:
        return ""


def _log_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_NoTraceback(f"{PROG}: %(levelname)s: %(message)s"))
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trio-aggregator`` command with *argv* (default: ``sys.argv[1:]``).

    Returns:
        The exit status (see the module docs).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "serve":
            serve_parser = args.command_parser
            assert isinstance(serve_parser, argparse.ArgumentParser)
            try:
                options: ServeOptions | DemoOptions = _serve_options(args)
            except ValueError as exc:
                serve_parser.error(str(exc))
            if args.metrics is not None:
                try:
                    importlib.import_module("trio_aggregator.prometheus")
                except ImportError as exc:
                    serve_parser.error(f"--metrics: {exc}")
        else:
            options = DemoOptions(
                clients=args.clients,
                lines=args.lines,
                output=args.output,
                keep=args.keep,
                seed=args.seed,
                buffer=args.buffer,
                quiet=args.quiet,
            )
    except _ExitError as exc:
        return exc.status

    logger = logging.getLogger("trio_aggregator")
    handler = _log_handler()
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        if isinstance(options, ServeOptions):
            return trio.run(functools.partial(run_server, options, handle_signals=True))
        return trio.run(run_demo, options)
    except ServeError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
