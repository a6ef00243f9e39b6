"""Soak ``trio-aggregator serve``: many clients at full speed plus garbage, then SIGTERM.

Run with ``python -m benchmarks.serve_soak [--duration 60]`` (``nox -s stress``). Every
client writes numbered lines as fast as it can; garbage clients send binary bytes, NUL,
``\\r``, over-long lines, and reset or close mid-line. When the time is up the clients
finish their last line and close, the server gets SIGTERM, and the file is checked:
every numbered line exactly once, in each client's order. RSS is sampled every second.
Exit status 0 only if the check passed and the server exited 0.
"""

from __future__ import annotations

import argparse
import random
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LINE = re.compile(rb"S(\d+):(\d+):x*\Z")
GARBAGE_BYTES = bytes(b for b in range(256) if b not in b"S\n")


def start_server(output: Path) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    argv = [sys.executable, "-m", "trio_aggregator", "serve", "--tcp", "127.0.0.1:0"]
    # Every client comes from 127.0.0.1: no per-address limit here.
    argv += ["-o", str(output), "--quiet", "--shutdown-timeout", "30", "--max-per-address", "0"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if match is None:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, ("127.0.0.1", int(match.group(1)))


def client(number: int, address: tuple[str, int], stop: threading.Event, sent: list[int]) -> None:
    rng = random.Random(number)
    seq = 0
    with socket.create_connection(address) as sock:
        while not stop.is_set():
            batch = b"".join(
                b"S%d:%d:%s\n" % (number, seq + i, b"x" * rng.randrange(10, 200))
                for i in range(100)
            )
            sock.sendall(batch)
            seq += 100
    sent[number] = seq


def garbage(number: int, address: tuple[str, int], stop: threading.Event) -> None:
    rng = random.Random(-number)
    while not stop.is_set():
        try:
            with socket.create_connection(address) as sock:
                size = rng.choice([10, 1000, 100_000, 2_000_000])
                sock.sendall(
                    bytes(rng.choices(GARBAGE_BYTES, k=min(size, 4096))) * (size // 4096 + 1)
                )
                if rng.random() < 0.5:
                    sock.sendall(b"\n")
                if rng.random() < 0.5:  # reset instead of a clean close
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def verify(output: Path, sent: list[int]) -> list[str]:
    problems: list[str] = []
    next_seq = [0] * len(sent)
    with output.open("rb") as f:
        for raw in f:
            match = LINE.match(raw.rstrip(b"\n"))
            if match is None:
                continue
            number, seq = int(match.group(1)), int(match.group(2))
            if seq != next_seq[number]:
                problems.append(f"client {number}: line {seq}, expected {next_seq[number]}")
                if len(problems) > 20:
                    break
            next_seq[number] = seq + 1
    problems += [
        f"client {n}: {got} lines in the file, {want} sent"
        for n, (got, want) in enumerate(zip(next_seq, sent, strict=True))
        if got != want
    ]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--garbage", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="serve-soak-") as tmp:
        output = Path(tmp) / "soak.log"
        proc, address = start_server(output)
        stop = threading.Event()
        sent = [0] * args.clients
        threads = [
            threading.Thread(target=client, args=(n, address, stop, sent))
            for n in range(args.clients)
        ] + [threading.Thread(target=garbage, args=(n, address, stop)) for n in range(args.garbage)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        rss: list[tuple[float, int]] = []
        while (elapsed := time.monotonic() - started) < args.duration:
            value = rss_kib(proc.pid)
            if value is not None:
                rss.append((elapsed, value))
                print(f"  t={elapsed:5.1f}s rss={value / 1024:.1f} MiB", flush=True)
            time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join()
        # The clients have closed, at once SIGTERM: lines may still sit in the clients'
        # send queues (segments that come only after a zero-window probe, 0.2 s, 0.4 s,
        # ... later); the server reads each connection until its client's close.
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        problems = verify(output, sent)
        peak = max((v for _, v in rss), default=0)
        steady = statistics.median(v for t, v in rss if t >= args.duration / 2) if rss else 0
        print(err.decode(errors="replace"))
        print(
            f"duration {time.monotonic() - started:.1f} s, lines sent {sum(sent):,},"
            f" problems {len(problems)}, server exit {proc.returncode},"
            f" RSS peak {peak / 1024:.1f} MiB, steady {steady / 1024:.1f} MiB"
        )
        for problem in problems[:20]:
            print("  " + problem)
        return 0 if not problems and proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
