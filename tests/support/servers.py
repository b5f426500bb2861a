"""Run a real daphne (Norn's HTTP and WebSocket server) against the test database.

Like tests/support/cluster.py's qcluster it is a separate process, so tests
that use it need committed data (`transaction=True`). It can be killed and
started again on the same port, to test clients that must reconnect.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

from tests.support.cluster import REPO_ROOT

DAPHNE = str(Path(sys.executable).parent / "daphne")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url_for_tests():
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


class Daphne:
    """`daphne -b 127.0.0.1 -p PORT norn_project.asgi:application`, with an access log."""

    def __init__(self, log_path, access_log_path, port=None, extra_env=None):
        self.port = port or free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url_for_tests(),
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.log_path = Path(log_path)
        self.access_log_path = Path(access_log_path)
        self.proc = None
        self.log = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout=30):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [DAPHNE, "-b", "127.0.0.1", "-p", str(self.port),
             "--access-log", str(self.access_log_path), "norn_project.asgi:application"],
            cwd=REPO_ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self._listening():
            if self.proc.poll() is not None:
                raise AssertionError(f"daphne exited:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"daphne not listening on {self.port} after {timeout}s:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def kill(self):
        """Die at once, as a crash would: clients see their connections drop."""
        self.stop(sig=signal.SIGKILL)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self.log:
            self.log.close()
            self.log = None

    def output(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def access_log(self):
        return self.access_log_path.read_text(errors="replace") if self.access_log_path.exists() else ""

    def _listening(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False
