"""Run a real `manage.py qcluster` against the test database, for end-to-end tests.

The worker is a separate process tree, so tests that use it need committed
data (`transaction=True`) and pass settings through its environment.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


class Cluster:
    def __init__(self, log_path, extra_env=None, workers=1):
        db = connection.settings_dict
        self.env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "NORN_APPS_DIR": str(settings.NORN_APPS_DIR),
            "NORN_WORK_DIR": str(settings.NORN_WORK_DIR),
            "NORN_SNAPSHOT_DIR": str(settings.NORN_SNAPSHOT_DIR),
            "NORN_INGRESS_ADMIN": settings.NORN_INGRESS_ADMIN,
            "NORN_INGRESS_LISTEN": ",".join(settings.NORN_INGRESS_LISTEN),
            "NORN_INGRESS_HTTP_PORT": str(settings.NORN_INGRESS_HTTP_PORT),
            "NORN_INGRESS_HTTPS_PORT": str(settings.NORN_INGRESS_HTTPS_PORT),
            "NORN_INGRESS_TLS": settings.NORN_INGRESS_TLS,
            "NORN_WORKERS": str(workers),
            "NORN_HEARTBEAT_TIMEOUT": "30",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.log_path = log_path
        self.proc = None

    def __enter__(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=REPO_ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_for_log("ready for work", timeout=30)
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            # SIGTERM to the cluster's parent only: it stops its workers in
            # order. Signalling the whole group at once makes the sentinel
            # wait out its timeouts on workers that are already gone.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # anything left behind
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=5)
        self.log.close()

    def output(self):
        return Path(self.log_path).read_text(errors="replace")

    def wait_for_log(self, text, timeout=30, count=1):
        deadline = time.monotonic() + timeout
        while self.output().count(text) < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"qcluster exited:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in qcluster output:\n{self.output()[-3000:]}")
            time.sleep(0.1)


def wait_for(predicate, timeout=60, interval=0.1, message="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(interval)


def execute_in_thread(deployment_id: int) -> threading.Thread:
    """Run the deployment's pipeline as a worker would, in a thread of this
    process (the test needs `transaction=True`); started, returned to join."""
    from deployments import deferred, pipeline

    def work():
        try:
            pipeline.execute(deployment_id)
            deferred.wait()
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=work)
    thread.start()
    return thread
