"""A real rsyslogd for interoperability tests: `Rsyslog`, `require_program`...

rsyslogd runs as a foreground process (``-n``) with a config, a pid file and a work
directory of its own under a temporary directory: no system daemon, no root-only paths,
no ``imuxsock``/``imklog``. It listens on loopback only. `.ci/run` installs it from the
OS packages; a test that needs it fails in CI when it is missing (``CI`` set) and skips
elsewhere, saying why; `require_rsyslog_module` does the same for a module of rsyslog's
(its TLS driver ``lmnsd_gtls`` is a package of its own, ``rsyslog-gnutls``).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["Rsyslog", "free_port", "require_program", "require_rsyslog_module", "wait_for_port"]


def _missing(reason: str) -> NoReturn:
    """Fail under CI (``CI`` set), skip elsewhere, saying *reason*."""
    reason += " (.ci/run installs it from the OS packages)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def require_program(name: str) -> str:
    """The path of program *name*; fail under CI, skip elsewhere, if it is not installed."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        _missing(f"{name} is not installed")
    return path


# Where distributions put rsyslog's loadable modules (Debian's multiarch path first).
MODULE_DIRS = (
    "/usr/lib/*/rsyslog",
    "/usr/lib/rsyslog",
    "/usr/lib64/rsyslog",
    "/usr/local/lib/rsyslog",
)


def require_rsyslog_module(name: str, package: str) -> str:
    """The path of rsyslog module *name* (``lmnsd_gtls``...); fail under CI, skip elsewhere.

    rsyslog loads a stream driver only when a connection needs it, so a config check
    does not notice a missing one: the test looks for the file, and names the *package*.
    """
    require_program("rsyslogd")
    for directory in MODULE_DIRS:
        found = sorted(glob.glob(f"{directory}/{name}.so"))
        if found:
            return found[0]
    _missing(f"rsyslog's {name} module is not installed (package {package})")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:*port*."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on 127.0.0.1:{port} after {timeout} s"
                ) from None
            time.sleep(0.05)


# A template that writes each message exactly as received, one per line.
RAW_TEMPLATE = 'template(name="raw" type="string" string="%rawmsg%\\n")'
# A template that forwards only the message text (no PRI, timestamp or host added).
MSG_TEMPLATE = 'template(name="msgonly" type="string" string="%msg%")'


class Rsyslog:
    """One rsyslogd process with a config of the test's, under *workdir*.

    *body* is the config after the global settings (modules, templates, inputs,
    rulesets). `start` runs it and waits until *listen_port* (if given) accepts;
    `stop` sends SIGTERM and waits. Usable as a context manager (start/stop).
    """

    def __init__(self, workdir: Path, body: str, *, listen_port: int | None = None) -> None:
        self.binary = require_program("rsyslogd")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "rsyslog.conf"
        self.pidfile = workdir / "rsyslogd.pid"
        self.log = workdir / "rsyslogd.log"
        self.listen_port = listen_port
        self.config.write_text(
            f'global(workDirectory="{workdir}" maxMessageSize="256k")\n'
            f"{RAW_TEMPLATE}\n{MSG_TEMPLATE}\n{body}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def check_config(self) -> None:
        """Run ``rsyslogd -N1`` on the config; raise with its output if it is invalid."""
        result = subprocess.run(
            [self.binary, "-N1", "-f", str(self.config)],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"invalid rsyslog config: {result.stderr.decode(errors='replace')}")

    def start(self) -> None:
        """Start rsyslogd in the foreground; wait until its input port accepts."""
        self.pidfile.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-n", "-f", str(self.config), "-i", str(self.pidfile)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if self.listen_port is not None:
            wait_for_port(self.listen_port, process=self.process)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM rsyslogd and wait for it (it writes what it queued first)."""
        process = self.process
        if process is None:
            return 0
        self.process = None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                return process.wait()
        return process.returncode

    def __enter__(self) -> Rsyslog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
