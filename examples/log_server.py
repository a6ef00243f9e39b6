"""A Trio log server: lines from many TCP clients, appended whole to one file.

Run ``python examples/log_server.py --port 5140 --output server.log``, send it lines
(``printf 'hello\\n' | nc 127.0.0.1 5140``), and stop it with Ctrl+C or SIGTERM: it
closes the connections, writes out every line it had accepted and says how many.
"""

from __future__ import annotations

import argparse
import signal
import sys
from functools import partial

import trio

from trio_aggregator import Aggregator, AggregatorConfig, FileSink, open_aggregator


async def handle(agg: Aggregator, stream: trio.SocketStream) -> None:
    """One connection, one sender: each complete line goes to the aggregator, whole."""
    async with stream, agg.sender() as sender:
        rest = b""
        try:
            async for chunk in stream:
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    await sender.send(line + b"\n")
        except trio.BrokenResourceError:  # the client reset the connection: no more lines
            print(f"connection reset, a cut line of {len(rest)} bytes dropped", file=sys.stderr)
            return
        if rest:  # the client's last line had no newline: it is whole all the same
            await sender.send(rest + b"\n")


async def main(port: int, output: str) -> None:
    sink = FileSink(output)  # writes from a worker thread: the event loop never blocks
    config = AggregatorConfig(writer=sink.write, buffer_size=1024, batch_max_items=256)
    async with sink, trio.open_nursery() as nursery, open_aggregator(nursery, config) as agg:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as stop_signals:
            async with trio.open_nursery() as server:
                serve = partial(trio.serve_tcp, partial(handle, agg), port, host="127.0.0.1")
                listeners = await server.start(serve)
                print(f"listening on port {listeners[0].socket.getsockname()[1]}", flush=True)
                async for _ in stop_signals:
                    break
                server.cancel_scope.cancel()  # close the listener and every connection
    # Leaving open_aggregator wrote every accepted line to the file.
    print(f"{agg.statistics().items_written} lines written to {output}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Collect lines from TCP clients into a file.")
    parser.add_argument("--port", type=int, default=5140, help="0: any free port")
    parser.add_argument("--output", default="server.log", help="the file to append lines to")
    args = parser.parse_args()
    trio.run(main, args.port, args.output)
