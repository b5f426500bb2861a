"""`manage.py proxy` as the service it is in production (norn-proxy.service): its
own process in its own session, started before deploys need it and stopped with
SIGTERM to its process group."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from deployments import proxy

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class ProxyService:
    def __init__(self, directory, log_path=None):
        self.directory = Path(directory)
        self.log_path = Path(log_path) if log_path else self.directory.parent / f"{self.directory.name}.log"
        self.proc = None

    def start(self):
        """Start it and wait until it reports a heartbeat."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "proxy", "--dir", str(self.directory)],
                cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            status = proxy.read_status(self.directory)
            if status and status.get("pid") == self.proc.pid:
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"manage.py proxy did not start:\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def stop(self):
        """SIGTERM to its process group, as systemctl stop sends; returns the
        seconds it took to exit. SIGKILL if it has not after STOP_TIMEOUT."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"manage.py proxy did not stop within {STOP_TIMEOUT:g} s of SIGTERM") from None
        except ProcessLookupError:
            pass
        return time.monotonic() - started

    def kill(self):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=5)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None and proxy.alive(self.directory)

    def output(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
