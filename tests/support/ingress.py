"""Caddy as the test session's ingress, run as norn-ingress.service runs it:
`caddy run --resume --config <bootstrap>` in its own session, its admin API on
a unix socket, its data (the internal CA, certificates) and autosaved config
in a directory of its own, listening on 127.0.0.1 at ports picked for the
session. Norn never starts it; tests stop and restart it like systemctl would.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class IngressService:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket = self.directory / "admin.sock"
        self.admin = f"unix/{self.socket}"
        self.http_port = free_port()
        self.https_port = free_port()
        self.log_path = self.directory / "caddy.log"
        self.proc = None
        (self.directory / "bootstrap.json").write_text(json.dumps({"admin": {"listen": self.admin}}))

    @property
    def settings(self) -> dict:
        """Norn's settings for this ingress."""
        return {
            "NORN_INGRESS_ADMIN": self.admin,
            "NORN_INGRESS_LISTEN": ["127.0.0.1"],
            "NORN_INGRESS_HTTP_PORT": self.http_port,
            "NORN_INGRESS_HTTPS_PORT": self.https_port,
            "NORN_INGRESS_TLS": "internal",
        }

    @property
    def environ(self) -> dict:
        """The same settings as environment variables, for Norn subprocesses."""
        return {
            "NORN_INGRESS_ADMIN": self.admin,
            "NORN_INGRESS_LISTEN": "127.0.0.1",
            "NORN_INGRESS_HTTP_PORT": str(self.http_port),
            "NORN_INGRESS_HTTPS_PORT": str(self.https_port),
            "NORN_INGRESS_TLS": "internal",
        }

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        caddy = shutil.which("caddy")
        if not caddy:
            raise AssertionError("caddy is not installed: run scripts/services")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.directory),
            "XDG_DATA_HOME": str(self.directory / "data"),
            "XDG_CONFIG_HOME": str(self.directory / "config"),
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [caddy, "run", "--resume", "--config", str(self.directory / "bootstrap.json")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"caddy did not start:\n{self.output()[-3000:]}")
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(str(self.socket))
                s.sendall(b"GET /config/admin HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def stop(self) -> float:
        """SIGTERM to its process group, as systemctl stop sends; the seconds it took."""
        if not self.running:
            return 0.0
        started = time.monotonic()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"caddy did not stop within {STOP_TIMEOUT:g} s of SIGTERM") from None
        except ProcessLookupError:
            pass
        return time.monotonic() - started

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
