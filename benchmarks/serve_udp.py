"""UDP load on ``trio-aggregator serve --udp``: records written, and kernel drops.

Run with ``python -m benchmarks.serve_udp --senders 4 --count 100000 --rate 20000``.
Each sender is a process sending ``--count`` 100-byte datagrams to the server on
loopback, at ``--rate`` datagrams/s (0: as fast as it can). Then the server gets SIGTERM
and the figures are printed: datagrams sent, lines written, the kernel drops the server
counted, and whether ``written + drops == sent`` (exit status 0 only then).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BODY = b"x" * 80


def send(port: int, sender: int, count: int, rate: float) -> None:
    """Send *count* datagrams ``<14>sNN NNNNNNNN xxx...`` to 127.0.0.1:*port*."""
    start = time.perf_counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for n in range(count):
            sock.sendto(b"<14>s%02d %08d " % (sender, n) + BODY, ("127.0.0.1", port))
            if rate and n % 100 == 99:
                ahead = start + (n + 1) / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)


def wait_until_still(path: Path, interval: float = 0.3) -> None:
    """Wait until *path* stops growing."""
    last = -1
    while (size := path.stat().st_size) != last:
        last = size
        time.sleep(interval)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--count", type=int, default=100_000, help="datagrams per sender")
    parser.add_argument("--rate", type=float, default=0, help="datagrams/s per sender; 0: max")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "udp.log"
        command = [sys.executable, "-m", "trio_aggregator", "serve", "--udp", "127.0.0.1:0"]
        server = subprocess.Popen([*command, "-o", str(output), "--quiet"], stderr=subprocess.PIPE)
        assert server.stderr is not None
        listening = re.search(r"udp:127\.0\.0\.1:(\d+)", server.stderr.readline().decode())
        assert listening is not None
        port = int(listening[1])
        started = time.perf_counter()
        senders = [
            multiprocessing.Process(target=send, args=(port, n, args.count, args.rate))
            for n in range(args.senders)
        ]
        for process in senders:
            process.start()
        for process in senders:
            process.join()
        seconds = time.perf_counter() - started
        wait_until_still(output)
        server.send_signal(signal.SIGTERM)
        report = server.stderr.read().decode()
        server.wait()
        with output.open("rb") as lines:
            written = sum(1 for _ in lines)
    drops_text = re.search(r"udp kernel drops +([\d,]+|unknown)", report)
    drops = int(drops_text[1].replace(",", "")) if drops_text and drops_text[1] != "unknown" else 0
    sent = args.senders * args.count
    print(
        f"senders {args.senders}, rate {args.rate or 'max'}/s each, {os.cpu_count()} CPUs:"
        f" sent {sent:,} in {seconds:.2f} s ({sent / seconds:,.0f}/s), written {written:,},"
        f" kernel drops {drops:,}, server exit {server.returncode}"
    )
    ok = written + drops == sent and server.returncode == 0
    print("written + drops == sent" if ok else "MISMATCH: written + drops != sent")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
