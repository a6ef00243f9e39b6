"""Log to ``trio-aggregator serve`` with the stdlib ``SysLogHandler`` over TCP.

Run it: ``python examples/syslog_handler.py --port 5140 --threads 4 --count 100``.
``SysLogHandler`` ends each message with NUL and no newline; ``serve`` takes NUL as the
end of a record by default, so each message becomes one line.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import socket
import threading


def syslog_logger(port: int) -> logging.Logger:
    handler = logging.handlers.SysLogHandler(
        ("127.0.0.1", port), socktype=socket.SOCK_STREAM
    )
    log = logging.getLogger("myapp")
    log.addHandler(handler)  # one handler for every thread: it locks around each send
    log.setLevel(logging.INFO)
    return log


def main(port: int, threads: int, count: int) -> None:
    log = syslog_logger(port)

    def work(worker: int) -> None:
        for i in range(count):
            log.info("worker %d message %d", worker, i)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    logging.shutdown()  # flushes and closes the handler's connection
    print(f"sent {threads * count} messages")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="Log to serve with SysLogHandler (TCP)."
    )
    parser.add_argument("--port", type=int, default=5140)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--count", type=int, default=100, help="messages per thread")
    args = parser.parse_args()
    main(args.port, args.threads, args.count)
