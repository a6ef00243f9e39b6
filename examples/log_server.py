"""A Trio log server: lines from many TCP clients, appended whole to one file.

Run ``python examples/log_server.py --port 5140 --output server.log``, send it lines
(``python examples/send_lines.py --port 5140 hello world``), and stop it with Ctrl+C or
SIGTERM: it closes the connections, writes out every line it had accepted, and says
how many.
"""

from __future__ import annotations

import argparse
import signal
from functools import partial

import trio

from trio_aggregator import Aggregator, AggregatorConfig, FileSink, open_aggregator


async def handle(agg: Aggregator, stream: trio.SocketStream) -> None:
    """One connection, one sender: each complete line goes in, whole."""
    async with stream, agg.sender() as sender:
        rest = b""
        try:
            async for chunk in stream:
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    await sender.send(line + b"\n")
        except trio.BrokenResourceError:  # the client reset the connection:
            return  # a line it cut is not a line
        if rest:  # the client's last line had no newline: it is whole all the same
            await sender.send(rest + b"\n")


async def main(args: argparse.Namespace) -> None:
    # FileSink writes in a worker thread: it never blocks the event loop.
    sink = FileSink(args.output)
    config = AggregatorConfig(writer=sink.write, buffer_size=1024, batch_max_items=256)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as stop_signals:
        async with (
            sink,
            trio.open_nursery() as nursery,
            open_aggregator(nursery, config) as agg,
            trio.open_nursery() as server,
        ):
            serve = partial(trio.serve_tcp, host="127.0.0.1")  # loopback only
            listeners = await server.start(serve, partial(handle, agg), args.port)
            print("listening on port", listeners[0].socket.getsockname()[1], flush=True)
            async for _ in stop_signals:
                break
            server.cancel_scope.cancel()  # close the listener and every connection
        # Leaving open_aggregator wrote every accepted line to the file.
    print(f"{agg.statistics().items_written} lines written to {args.output}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Lines from TCP clients, into a file.")
    parser.add_argument("--port", type=int, default=5140, help="0: any free port")
    parser.add_argument("--output", default="server.log", help="the file to append to")
    trio.run(main, parser.parse_args())
