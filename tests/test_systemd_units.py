"""deploy/install.sh and deploy/systemd/ as CI can test them (no systemd as PID 1):
the install script, run into a temporary root, writes an env file only Norn's
user may read with a generated SECRET_KEY that a second run keeps; each unit's
ExecStart, run as that user with the env file's variables in a process group of
its own, serves (the web server answers /healthz, the worker runs a task, the
proxy reports a heartbeat) and stops within the unit's TimeoutStopSec of SIGTERM
to its group."""

import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django_q.models import Success

from deployments import proxy
from tests.support.cluster import REPO_ROOT, wait_for
from tests.support.servers import database_url_for_tests, free_port

pytestmark = pytest.mark.django_db(transaction=True)

USER = "norn"
UNITS = ("norn-web.service", "norn-worker.service", "norn-proxy.service")


def can_install():
    if os.getuid() != 0:
        return "deploy/install.sh creates a user and root-owned files: it needs root"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"no user {USER}: scripts/services creates it"
    return None


@pytest.fixture(scope="module")
def installed():
    """deploy/install.sh --prefix <this checkout> --root <a temporary root>, run twice."""
    problem = can_install()
    if problem:
        pytest.fail(problem)
    root = Path(tempfile.mkdtemp(prefix="norn-install-"))
    root.chmod(0o755)  # the norn user walks into its state directories
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def install(root):
    return subprocess.run(
        [str(REPO_ROOT / "deploy" / "install.sh"), "--prefix", str(REPO_ROOT), "--root", str(root),
         "--database-url", database_url_for_tests(), "--no-systemctl"],
        capture_output=True, text=True, timeout=300,
    )


def read_env_file(path):
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them."""
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


def unit_settings(path):
    """{key: value} of a unit's [Service] section."""
    values = {}
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value
    return values


def test_install_writes_a_private_env_file_once_and_keeps_its_key(installed):
    first = install(installed)
    assert first.returncode == 0, first.stdout + first.stderr
    env_file = installed / "etc" / "norn" / "norn.env"
    info = env_file.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640
    assert (info.st_uid, grp.getgrgid(info.st_gid).gr_name) == (0, grp.getgrgid(pwd.getpwnam(USER).pw_gid).gr_name)
    values = read_env_file(env_file)
    key = values["SECRET_KEY"]
    assert len(key) >= 50 and values["DEBUG"] == "false"
    text = env_file.read_text()
    for name in ("NORN_SECURE_SSL_REDIRECT", "NORN_SESSION_COOKIE_SECURE", "NORN_CSRF_COOKIE_SECURE",
                 "NORN_SECURE_HSTS_SECONDS", "NORN_CSRF_TRUSTED_ORIGINS"):
        assert f"#{name}=" in text

    again = install(installed)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "exists: kept as it is" in again.stdout
    assert read_env_file(env_file)["SECRET_KEY"] == key
    assert key not in first.stdout + first.stderr + again.stdout + again.stderr

    for name in UNITS:
        unit = (installed / "etc" / "systemd" / "system" / name).read_text()
        assert "/opt/norn" not in unit and str(REPO_ROOT) in unit
    work = installed / "var" / "lib" / "norn" / "work"
    assert stat.S_IMODE(work.stat().st_mode) == 0o700 and work.stat().st_uid == pwd.getpwnam(USER).pw_uid


def test_install_refuses_a_relative_prefix(installed):
    result = subprocess.run([str(REPO_ROOT / "deploy" / "install.sh"), "--prefix", "opt/norn", "--no-systemctl"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--prefix must be an absolute path" in result.stderr


class Service:
    """One unit's ExecStart, started the way systemd would: as User=, in
    WorkingDirectory=, with EnvironmentFile='s variables (${VAR} expanded in
    the command line), in a process group of its own."""

    def __init__(self, root, name, overrides):
        self.unit = unit_settings(root / "etc" / "systemd" / "system" / name)
        assert self.unit["User"] == USER and self.unit["KillMode"] == "control-group"
        assert self.unit["KillSignal"] == "SIGTERM" and self.unit["Restart"] == "on-failure"
        env_path = Path(self.unit["EnvironmentFile"].replace("/etc/norn", str(root / "etc" / "norn")))
        self.env = {"PATH": "/usr/local/bin:/usr/bin:/bin", **read_env_file(env_path), **overrides}
        command = re.sub(r"\$\{(\w+)\}", lambda m: self.env[m.group(1)], self.unit["ExecStart"])
        self.argv = shlex.split(command)
        self.timeout_stop = float(self.unit["TimeoutStopSec"])
        self.log_path = root / f"{name}.log"
        self.proc = None

    def start(self):
        user = pwd.getpwnam(USER)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["setpriv", "--reuid", USER, "--regid", str(user.pw_gid), "--init-groups", *self.argv],
            cwd=self.unit["WorkingDirectory"], env={**self.env, "HOME": user.pw_dir},
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        return self

    def output(self):
        return self.log_path.read_text(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """SIGTERM to the group, as systemctl stop sends it; seconds until all of it is gone."""
        started = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGTERM)
        while _group_alive(self.proc.pid):
            self.proc.poll()
            if time.monotonic() - started > self.timeout_stop:
                os.killpg(self.proc.pid, signal.SIGKILL)
                raise AssertionError(f"{self.argv} did not stop within TimeoutStopSec={self.timeout_stop:g}")
            time.sleep(0.05)
        self.proc.wait(timeout=5)
        return time.monotonic() - started

    def kill(self):
        if self.proc and _group_alive(self.proc.pid):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


@pytest.fixture
def services(installed):
    result = install(installed)
    assert result.returncode == 0, result.stdout + result.stderr
    state = installed / "var" / "lib" / "norn"
    # The env file's paths are the real /var/lib/norn; here, the temporary root's.
    overrides = {
        "DATABASE_URL": database_url_for_tests(),
        "NORN_PORT": str(free_port()),
        "NORN_APPS_DIR": str(state / "apps"), "NORN_WORK_DIR": str(state / "work"),
        "NORN_SNAPSHOT_DIR": str(state / "snapshots"), "NORN_PROXY_DIR": str(state / "proxy"),
        "NORN_GIT_KNOWN_HOSTS": str(state / "ssh" / "known_hosts"),
        "NORN_CHANNEL_PREFIX": os.environ.get("NORN_CHANNEL_PREFIX", "norn-units"),
        "NORN_WORKERS": "1",
    }
    started = []

    def start(name):
        started.append(Service(installed, name, overrides).start())
        return started[-1]

    yield start
    for service in started:
        service.kill()


def test_web_unit_serves_and_stops_in_time(services):
    web = services("norn-web.service")
    url = f"http://{web.env['NORN_HOST']}:{web.env['NORN_PORT']}/healthz"

    def answer():
        assert web.alive(), web.output()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    assert wait_for(answer, timeout=60, message=f"{url} to answer") == 200
    assert web.stop() < 10


def test_worker_unit_runs_tasks_and_stops_in_time(services):
    worker = services("norn-worker.service")
    wait_for(lambda: "ready for work" in worker.output() or not worker.alive(), timeout=60, message="the worker")
    assert worker.alive(), worker.output()[-3000:]
    # Queued with the env file's SECRET_KEY, which signs the task for the worker.
    queued = subprocess.run(
        [*worker.argv[:2], "shell", "--no-imports", "-c",
         "from django_q.tasks import async_task; print(async_task('math.floor', 2.5))"],
        cwd=worker.unit["WorkingDirectory"], env=worker.env, capture_output=True, text=True, timeout=60,
    )
    assert queued.returncode == 0, queued.stderr
    task = queued.stdout.strip().splitlines()[-1]
    wait_for(lambda: Success.objects.filter(id=task).exists(), timeout=60, message="the task to run")
    assert worker.stop() < 15
    assert "Traceback" not in worker.output()


def test_proxy_unit_serves_and_stops_in_time(services):
    service = services("norn-proxy.service")
    directory = Path(service.env["NORN_PROXY_DIR"])
    wait_for(lambda: proxy.alive(directory) or not service.alive(), timeout=60, message="the proxy's heartbeat")
    assert service.alive(), service.output()[-3000:]
    assert service.stop() < 5
    assert not proxy.alive(directory)
    assert settings.NORN_PROXY_DIR != directory
