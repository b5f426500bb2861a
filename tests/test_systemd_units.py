"""deploy/install.sh and deploy/systemd/ as CI can test them (no systemd as PID 1):
the install script, run into a temporary root, writes an env file only Norn's
user may read with a generated SECRET_KEY that a second run keeps, and the
ingress's first config; `systemd-analyze verify` finds nothing to say about
the installed units; each unit's ExecStart, run as its User= and Group= with
its UMask=, ambient capabilities, environment, directories and sockets in a
process group of its own, serves (two web server processes share the socket
unit's port and each answers /healthz, the worker runs a task, the ingress (Caddy) takes a config from the user norn on its admin
socket, serves it on a privileged port and resumes it after a restart) and
stops within the unit's TimeoutStopSec of SIGTERM to its group."""

import grp
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django_q.models import Success

from tests.support.cluster import REPO_ROOT, wait_for
from tests.support.servers import database_url_for_tests, free_port

pytestmark = pytest.mark.django_db(transaction=True)

USER = "norn"
UNITS = ("norn-web@.service", "norn-web.socket", "norn-worker.service", "norn-ingress.service")
# What norn.target starts: the web processes it wants are the enabled norn-web@N.
TARGET_WANTS = {"norn-web.socket", "norn-worker.service", "norn-ingress.service"}
INGRESS_ADMIN = "unix//run/norn-ingress/admin.sock"
# Absolute paths in the units that the tests map into the temporary root.
UNIT_PATHS = ("/etc/norn", "/var/lib/norn-ingress", "/run/norn-ingress")


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


def install(root, *extra):
    return subprocess.run(
        [str(REPO_ROOT / "deploy" / "install.sh"), "--prefix", str(REPO_ROOT), "--root", str(root),
         "--database-url", database_url_for_tests(), "--no-systemctl", *extra],
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


def unit_settings(path, section_name="[Service]"):
    """{key: value} of a unit's [Service] (or another) section."""
    values = {}
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == section_name and "=" in line and not line.startswith("#"):
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
    assert values["NORN_INGRESS_ADMIN"] == INGRESS_ADMIN and values["NORN_INGRESS_TLS"] == "acme"
    assert "NORN_PROXY_DIR" not in values
    text = env_file.read_text()
    for name in ("NORN_SECURE_SSL_REDIRECT", "NORN_SESSION_COOKIE_SECURE", "NORN_CSRF_COOKIE_SECURE",
                 "NORN_SECURE_HSTS_SECONDS", "NORN_CSRF_TRUSTED_ORIGINS", "NORN_ACME_EMAIL",
                 "NORN_INGRESS_LISTEN", "NORN_INGRESS_HTTP_PORT", "NORN_INGRESS_HTTPS_PORT",
                 "NORN_INGRESS_CERTIFICATES", "NORN_ACME_CA", "NORN_ACME_CA_ROOT"):
        assert f"#{name}=" in text

    # The ingress's first config: only its admin socket, readable by its
    # Group= (norn) and root.
    ingress_json = installed / "etc" / "norn" / "ingress.json"
    assert json.loads(ingress_json.read_text()) == {"admin": {"listen": INGRESS_ADMIN}}
    assert stat.S_IMODE(ingress_json.stat().st_mode) == 0o640 and ingress_json.stat().st_gid == info.st_gid

    again = install(installed)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "exists: kept as it is" in again.stdout
    assert read_env_file(env_file)["SECRET_KEY"] == key
    assert key not in first.stdout + first.stderr + again.stdout + again.stderr

    unit_dir = installed / "etc" / "systemd" / "system"
    assert sorted(p.name for p in unit_dir.iterdir()) == sorted([*UNITS, "norn.target"])
    for name in UNITS:
        unit = (unit_dir / name).read_text()
        assert "/opt/norn" not in unit and str(REPO_ROOT) in unit
    target = (unit_dir / "norn.target").read_text()
    assert set(re.search(r"^Wants=(.*)$", target, re.M).group(1).split()) == TARGET_WANTS
    # The env file's address, and one web process per CPU (at most 4) unless told.
    socket_unit = unit_settings(unit_dir / "norn-web.socket", "[Socket]")
    assert socket_unit["ListenStream"] == f"{values['NORN_HOST']}:{values['NORN_PORT']}"
    processes = min(os.cpu_count(), 4)
    assert f"(would enable {' '.join(f'norn-web@{i}.service' for i in range(1, processes + 1))})" in again.stdout
    work = installed / "var" / "lib" / "norn" / "work"
    assert stat.S_IMODE(work.stat().st_mode) == 0o700 and work.stat().st_uid == pwd.getpwnam(USER).pw_uid
    assert not (installed / "var" / "lib" / "norn" / "proxy").exists()


def test_install_refuses_a_relative_prefix_and_a_bad_acme_email(installed):
    result = subprocess.run([str(REPO_ROOT / "deploy" / "install.sh"), "--prefix", "opt/norn", "--no-systemctl"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--prefix must be an absolute path" in result.stderr
    result = subprocess.run([str(REPO_ROOT / "deploy" / "install.sh"), "--acme-email", "ops@example.com\nDEBUG=true",
                             "--no-systemctl"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--acme-email must be an address like ops@example.com" in result.stderr
    for bad in ("0", "three", "1 2", "100"):
        result = subprocess.run([str(REPO_ROOT / "deploy" / "install.sh"), "--web-processes", bad, "--no-systemctl"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "--web-processes must be a number from 1 to 99" in result.stderr


def test_install_enables_as_many_web_processes_as_asked(installed):
    result = install(installed, "--web-processes", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(would enable norn-web@1.service norn-web@2.service norn-web@3.service)" in result.stdout


def test_systemd_analyze_verify_has_nothing_to_say_about_the_units(installed):
    """systemd's own checks: known keys and values, executables that exist."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing (Debian: apt-get install systemd)")
    result = install(installed)
    assert result.returncode == 0, result.stdout + result.stderr
    unit_dir = installed / "etc" / "systemd" / "system"
    # A template is verified as one of its instances, which systemd would load from it.
    (unit_dir / "norn-web@1.service").symlink_to("norn-web@.service")
    try:
        names = [name.replace("@.", "@1.") for name in (*UNITS, "norn.target")]
        verify = subprocess.run([analyze, "verify", *(str(unit_dir / name) for name in names)],
                                capture_output=True, text=True, timeout=60)
    finally:
        (unit_dir / "norn-web@1.service").unlink()
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")


def in_root(root, value):
    """A path (or a value holding one) of the units, inside the temporary root."""
    for path in UNIT_PATHS:
        value = value.replace(path, f"{root}{path}")
    return value


class Service:
    """One unit's ExecStart, started the way systemd would: as User= and
    Group= (with the user's other groups), with UMask=, AmbientCapabilities=,
    Environment= and EnvironmentFile='s variables (${VAR} expanded in the
    command line), its RuntimeDirectory= and StateDirectory=, in
    WorkingDirectory=, in a process group of its own."""

    def __init__(self, root, name, overrides):
        self.root = root
        self.unit = unit_settings(root / "etc" / "systemd" / "system" / name)
        self.user = pwd.getpwnam(self.unit["User"])
        self.group = self.unit["Group"]
        assert self.group == grp.getgrgid(pwd.getpwnam(USER).pw_gid).gr_name
        assert self.unit["KillMode"] == "control-group"
        assert self.unit["KillSignal"] == "SIGTERM" and self.unit["Restart"] == "on-failure"
        self.env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": self.user.pw_dir}
        if "EnvironmentFile" in self.unit:
            self.env.update(read_env_file(Path(in_root(root, self.unit["EnvironmentFile"]))))
        for assignment in shlex.split(self.unit.get("Environment", "")):
            key, value = assignment.split("=", 1)
            self.env[key] = in_root(root, value)
        self.env.update(overrides)
        command = re.sub(r"\$\{(\w+)\}", lambda m: self.env[m.group(1)], self.unit["ExecStart"])
        self.argv = [in_root(root, arg) for arg in shlex.split(command)]
        self.timeout_stop = float(self.unit["TimeoutStopSec"])
        self.log_path = root / f"{name}.log"
        self.runtime_dir = None
        self.proc = None

    def start(self, listener=None):
        """`listener`: the socket unit's socket, which the process gets as fd 3, as from systemd."""
        setpriv = ["setpriv", "--reuid", self.user.pw_name, "--regid", self.group, "--init-groups"]
        for cap in self.unit.get("AmbientCapabilities", "").split():
            name = cap.lower().removeprefix("cap_")
            setpriv += ["--inh-caps", f"+{name}", "--ambient-caps", f"+{name}"]
        gid = grp.getgrnam(self.group).gr_gid
        for key in ("RuntimeDirectory", "StateDirectory"):
            if key in self.unit:
                base = {"RuntimeDirectory": "run", "StateDirectory": "var/lib"}[key]
                directory = self.root / base / self.unit[key]
                directory.mkdir(parents=True, exist_ok=True)
                os.chown(directory, self.user.pw_uid, gid)
                directory.chmod(int(self.unit.get(f"{key}Mode", "0755"), 8))
                if key == "RuntimeDirectory":
                    self.runtime_dir = directory
        argv, pass_fds = [*setpriv, *self.argv], ()
        if "Sockets" in self.unit:
            assert listener is not None, f"{self.unit['Sockets']} first"
            adopt = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.execvp(sys.argv[2], sys.argv[2:])"
            argv = [sys.executable, "-c", adopt, str(listener.fileno()), *argv]
            pass_fds = (listener.fileno(),)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            argv, cwd=self.unit.get("WorkingDirectory", "/"), env=self.env, pass_fds=pass_fds,
            umask=int(self.unit.get("UMask", "0022"), 8),
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
        if self.runtime_dir:  # systemd removes it when the unit stops
            shutil.rmtree(self.runtime_dir)
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
        "NORN_SNAPSHOT_DIR": str(state / "snapshots"),
        "NORN_GIT_KNOWN_HOSTS": str(state / "ssh" / "known_hosts"),
        "NORN_CHANNEL_PREFIX": os.environ.get("NORN_CHANNEL_PREFIX", "norn-units"),
        "NORN_WORKERS": "1",
    }
    started = []

    def start(name, listener=None, **extra):
        started.append(Service(installed, name, {**overrides, **extra}).start(listener))
        return started[-1]

    yield start
    for service in started:
        service.kill()


def listening_socket(root, name, port):
    """The socket unit's ListenStream=, bound as systemd would (on `port`: a free one)."""
    host, _, _ = unit_settings(root / "etc" / "systemd" / "system" / name, "[Socket]")["ListenStream"].rpartition(":")
    listener = socket.socket()
    listener.bind((host, port))
    listener.listen(128)
    return listener


def test_web_processes_share_the_socket_unit_and_stop_in_time(services, installed):
    listener = listening_socket(installed, "norn-web.socket", free_port())
    host, port = listener.getsockname()
    try:
        webs = [services("norn-web@.service", listener) for _ in range(2)]
    finally:
        listener.close()  # the processes hold it; as in systemd, one going does not close it
    assert webs[0].user.pw_name == USER
    url = f"http://{host}:{port}/healthz"

    def answer():
        for web in webs:
            assert web.alive(), web.output()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    assert wait_for(answer, timeout=60, message=f"{url} to answer") == 200
    # Each process serves the port: with the first stopped, the second answers.
    assert webs[0].stop() < 10
    webs = webs[1:]
    assert answer() == 200
    assert webs[0].stop() < 10


def test_worker_unit_runs_tasks_and_stops_in_time(services):
    worker = services("norn-worker.service")
    assert worker.user.pw_name == USER
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


def admin_api(sock, user, method, path, body=None):
    """curl to the ingress's admin API on its unix socket, as `user`."""
    account = pwd.getpwnam(user)
    argv = ["setpriv", "--reuid", user, "--regid", str(account.pw_gid), "--init-groups",
            "curl", "-sS", "--fail-with-body", "--max-time", "10", "--unix-socket", str(sock),
            "-H", "Host;", "-X", method, f"http://ingress{path}"]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    return subprocess.run(argv, input=None if body is None else json.dumps(body),
                          capture_output=True, text=True, timeout=30)


def free_privileged_port():
    for port in range(900, 1000):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port in 900-999 on 127.0.0.1")


def test_ingress_unit_is_configured_by_norn_serves_resumes_and_stops_in_time(services, installed):
    # The installed first config, with its admin socket in the temporary root.
    config = installed / "etc" / "norn" / "ingress.json"
    config.write_text(in_root(installed, config.read_text()))
    sock = installed / "run" / "norn-ingress" / "admin.sock"
    listen = "unix/" + str(sock)
    ingress = services("norn-ingress.service")
    assert ingress.user.pw_name == "caddy"

    def admin_answers():
        assert ingress.alive(), ingress.output()[-3000:]
        return admin_api(sock, USER, "GET", "/config/").returncode == 0

    wait_for(admin_answers, timeout=30, message="the ingress's admin API")
    assert stat.S_IMODE(sock.stat().st_mode) == 0o770 and stat.S_IMODE(sock.parent.stat().st_mode) == 0o750
    denied = admin_api(sock, "nobody", "GET", "/config/")
    assert denied.returncode == 7, denied  # curl: could not connect

    # What Norn does: POST a whole config to /load, as the user norn. Port
    # < 1024: only its ambient CAP_NET_BIND_SERVICE lets user caddy bind it.
    port = free_privileged_port()
    loaded = admin_api(sock, USER, "POST", "/load", {
        "admin": {"listen": listen},
        "apps": {"http": {"servers": {"test": {
            "listen": [f"127.0.0.1:{port}"],
            "routes": [{"handle": [{"handler": "static_response", "body": "served by norn-ingress"}]}],
        }}}},
    })
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr + ingress.output()[-3000:]

    def body():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                return response.read().decode()
        except OSError:
            return None

    assert wait_for(body, timeout=10, message=f"the ingress on port {port}") == "served by norn-ingress"
    assert ingress.stop() < 5
    assert body() is None

    # Restarted, it resumes from what it autosaved in its StateDirectory.
    autosave = installed / "var" / "lib" / "norn-ingress" / "config" / "caddy" / "autosave.json"
    assert json.loads(autosave.read_text())["admin"]["listen"] == listen
    again = services("norn-ingress.service")
    assert wait_for(body, timeout=30, message="the resumed ingress") == "served by norn-ingress"
    assert again.stop() < 5
    assert '"level":"error"' not in ingress.output() + again.output(), again.output()[-3000:]
