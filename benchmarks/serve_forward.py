"""``trio-aggregator serve``: forwarded lines/s against the plain newline case, same run.

Run with ``python -m benchmarks.serve_forward`` (``--smoke`` for a tiny run that only
checks it works; ``nox -s bench -- --smoke`` runs it too). Each case starts a server
process on loopback; client threads send ``--clients`` x ``--lines`` newline-terminated
lines of ``--size`` bytes as fast as they can, and the time runs from the first byte
sent until the output holds every byte:

* ``newline``: ``serve -o FILE`` (the plain case, the reference);
* ``forward``: ``serve --forward HOST:PORT`` (no file) to a second process that reads
  the connection and counts the bytes (it notes the time it got the last one);
* ``forward_octet``: the same with ``--forward-framing octet-counted``.

The closing note gives each case's lines/s and its ratio to ``newline`` (best of
``--repeat`` runs each, interleaved, so a slow moment of the machine hits every case).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

READER = r"""
import socket, sys, time
expected = int(sys.argv[1])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
print(listener.getsockname()[1], flush=True)
total, done = 0, None
while done is None:
    conn, _ = listener.accept()
    with conn:
        while chunk := conn.recv(1 << 20):
            total += len(chunk)
            if total >= expected and done is None:
                done = time.monotonic()
print(done, total, flush=True)
"""
"""The receiving end of the forward cases: counts bytes, prints when it had them all."""


def start_server(args: list[str]) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    argv = [sys.executable, "-m", "trio_aggregator", "serve", "--tcp", "127.0.0.1:0"]
    argv += ["--quiet", "--max-per-address", "0", "--fsync-interval", "0", *args]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if match is None:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, ("127.0.0.1", int(match.group(1)))


def send(address: tuple[str, int], data: bytes, start: threading.Barrier) -> None:
    with socket.create_connection(address) as sock:
        start.wait()
        sock.sendall(data)


def payload(client: int, lines: int, size: int) -> bytes:
    head = b"c%03d " % client
    body = b"x" * max(size - len(head) - 8, 0)
    return b"".join(head + b"%07d" % i + body + b"\n" for i in range(lines))


def octet_bytes(data: list[bytes]) -> int:
    """Bytes of *data*'s lines once octet-counted (``LEN SP`` instead of the LF)."""
    total = 0
    for chunk in data:
        for line in chunk.splitlines():
            total += len(b"%d " % len(line)) + len(line)
    return total


def run_case(case: str, data: list[bytes], workdir: Path) -> float:
    """Seconds from the first byte sent until the output had every byte."""
    expected = sum(map(len, data))
    reader: subprocess.Popen[str] | None = None
    output = workdir / f"{case}.log"
    output.unlink(missing_ok=True)
    if case == "newline":
        server_args = ["-o", str(output)]
    else:
        if case == "forward_octet":
            expected = octet_bytes(data)
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(expected)], stdout=subprocess.PIPE, text=True
        )
        assert reader.stdout is not None
        port = int(reader.stdout.readline())
        server_args = ["--forward", f"127.0.0.1:{port}"]
        if case == "forward_octet":
            server_args += ["--forward-framing", "octet-counted"]
    proc, address = start_server(server_args)
    try:
        start = threading.Barrier(len(data) + 1)
        threads = [
            threading.Thread(target=send, args=(address, chunk, start), daemon=True)
            for chunk in data
        ]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.monotonic()
        if reader is None:
            while not output.exists() or output.stat().st_size < expected:
                time.sleep(0.0005)
            done = time.monotonic()
        for thread in threads:
            thread.join()
        proc.send_signal(signal.SIGTERM)
        if proc.wait(timeout=60) != 0:
            raise SystemExit(f"{case}: the server exited {proc.returncode}")
        if reader is not None:
            assert reader.stdout is not None
            when, total = reader.stdout.readline().split()
            reader.wait(timeout=30)
            if int(total) != expected:
                raise SystemExit(f"{case}: {total} bytes arrived, {expected} expected")
            done = float(when)
        return done - began
    finally:
        for process in (proc, reader):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


CASES = ("newline", "forward", "forward_octet")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serve_forward",
        description="serve: forwarded lines/s against the plain newline case, same run",
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--lines", type=int, default=100_000, help="lines per client")
    parser.add_argument("--size", type=int, default=100, help="bytes per line, LF included")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that checks it works")
    args = parser.parse_args(argv)
    if args.smoke:
        args.clients, args.lines, args.repeat = 2, 2000, 1
    data = [payload(c, args.lines, args.size) for c in range(args.clients)]
    total_lines = args.clients * args.lines
    best = dict.fromkeys(CASES, float("inf"))
    with tempfile.TemporaryDirectory(prefix="trio-aggregator-bench-") as tmp:
        for _ in range(args.repeat):
            for case in CASES:
                seconds = run_case(case, data, Path(tmp))
                best[case] = min(best[case], seconds)
                print(f"{case:14} {total_lines / seconds:12,.0f} lines/s", flush=True)
    plain = total_lines / best["newline"]
    print(
        f"\nserve, {args.clients} clients x {args.lines:,} lines of {args.size} bytes,"
        f" best of {args.repeat} (cpus {os.cpu_count()}):"
    )
    for case in CASES:
        rate = total_lines / best[case]
        print(f"  {case:14} {rate:12,.0f} lines/s  {rate / plain:5.2f}x newline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
