"""Send lines to a line server: ``trio-aggregator serve`` or ``examples/log_server.py``.

Run it: ``python examples/send_lines.py --port 5140 "first line" "second line"``.
"""

from __future__ import annotations

import argparse

import trio


async def ship(port: int, lines: list[str]) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        for line in lines:
            await stream.send_all(line.encode() + b"\n")
        await stream.send_eof()  # no more lines: the server reads to the end...
        await stream.receive_some()  # ...and closes; then it has read every line


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Send lines to a line server.")
    parser.add_argument("--port", type=int, default=5140)
    parser.add_argument("lines", nargs="*", help="the lines to send, without newlines")
    args = parser.parse_args()
    trio.run(ship, args.port, args.lines)
