"""System checks: unreachable services are errors with a hint, not tracebacks."""

import http.server
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time

import pytest
from django.core import checks

from norn_project import checks as norn_checks
from norn_project import services
from tests.support.servers import database_url_for_tests, free_port
from tests.test_settings import REPO_ROOT, run_manage


def ids(messages):
    return [m.id for m in messages]


@pytest.mark.django_db
def test_all_services_up_means_no_errors(apps_dir):
    errors = [m for m in checks.run_checks(tags=["norn"]) if m.level >= checks.ERROR]
    assert errors == []


def test_unreachable_redis_is_an_error_with_a_hint(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    (message,) = norn_checks.check_redis()
    assert message.id == "norn.E002"
    assert message.level == checks.ERROR
    assert "Redis at 127.0.0.1:1/0 is unreachable" in message.msg
    assert "scripts/services" in message.hint


def test_missing_apps_dir_is_a_warning(settings, tmp_path):
    settings.NORN_APPS_DIR = tmp_path / "nope"
    (message,) = norn_checks.check_apps_dir()
    assert (message.id, message.level) == ("norn.W001", checks.WARNING)
    assert str(tmp_path / "nope") in message.msg


def test_docker_check_reports_an_unreachable_engine(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    (message,) = norn_checks.check_docker()
    assert message.id == "norn.W002"
    assert "Docker engine is unreachable" in message.msg


def test_unreachable_database_stops_manage_py_with_a_hint():
    result = run_manage("check", DATABASE_URL="postgres://postgres:pw-secret@127.0.0.1:1/norn")
    assert result.returncode == 1
    assert "(norn.E001) PostgreSQL at 127.0.0.1:1/norn is unreachable" in result.stderr
    assert "HINT: Is PostgreSQL running at 127.0.0.1:1/norn? Run scripts/services" in result.stderr
    assert "pw-secret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_database_hint_says_how_to_create_it():
    result = run_manage("check", DATABASE_URL="postgres://postgres@127.0.0.1:5432/norn_no_such_db")
    assert result.returncode == 1
    assert "norn.E001" in result.stderr
    assert "createdb -h 127.0.0.1 -U postgres norn_no_such_db" in result.stderr


def test_unreachable_redis_stops_manage_py():
    result = run_manage("check", REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 1
    assert "(norn.E002) Redis at 127.0.0.1:1/0 is unreachable" in result.stderr


def test_step_timeout_must_be_below_the_task_timeout(settings):
    settings.NORN_STEP_TIMEOUTS = {**settings.NORN_STEP_TIMEOUTS, "build": settings.Q_CLUSTER["timeout"]}
    (message,) = norn_checks.check_timeouts()
    assert message.id == "norn.E003"
    assert "NORN_TASK_TIMEOUT" in message.msg


def test_kubernetes_runtime_without_kubeconfig_warns(settings, monkeypatch, tmp_path):
    settings.NORN_RUNTIME = "kubernetes"
    settings.NORN_KUBECONFIG = None
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    (message,) = norn_checks.check_kubernetes_config()
    assert message.id == "norn.W003"
    config = tmp_path / ".kube" / "config"
    config.parent.mkdir()
    config.write_text("apiVersion: v1\n")
    assert norn_checks.check_kubernetes_config() == []


# --- the Docker check asks the engine's socket, not a `docker version` process


class _Engine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _serve_engine(path, status=200, body=b"OK", answer=True):
    """A process-local HTTP server on a unix socket, as the engine's API is."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if not answer:
                time.sleep(3)
                return
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def address_string(self):
            return "unix"

        def log_message(self, *args):
            pass

    server = _Engine(str(path), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def docker_env(monkeypatch, tmp_path):
    """No DOCKER_* settings of the caller's, and a docker config without a context."""
    for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    return monkeypatch


def test_docker_check_finds_the_running_engine(docker_env):
    assert services.docker_problem() is None
    assert norn_checks.check_docker() == []


def test_docker_check_asks_the_socket_in_docker_host(docker_env, tmp_path):
    seen = []
    server = _serve_engine(tmp_path / "ok.sock")
    server.RequestHandlerClass.log_request = lambda self, *a: seen.append(self.path)
    try:
        docker_env.setenv("DOCKER_HOST", f"unix://{tmp_path / 'ok.sock'}")
        assert services.docker_problem() is None
        assert seen == ["/_ping"]
    finally:
        server.shutdown()
        server.server_close()


def test_docker_check_reports_what_the_socket_says(docker_env, tmp_path):
    sick = _serve_engine(tmp_path / "sick.sock", status=500, body=b"engine is starting")
    silent = _serve_engine(tmp_path / "silent.sock", answer=False)
    try:
        docker_env.setenv("DOCKER_HOST", f"unix://{tmp_path / 'sick.sock'}")
        assert services.docker_problem() == "the Docker engine answered 500: engine is starting"
        docker_env.setenv("DOCKER_HOST", f"unix://{tmp_path / 'silent.sock'}")
        assert services.docker_problem() == "the Docker engine did not answer within 1 s"
    finally:
        for server in (sick, silent):
            server.shutdown()
            server.server_close()
    docker_env.setenv("DOCKER_HOST", f"unix://{tmp_path / 'none.sock'}")
    assert services.docker_problem() == (
        f"cannot connect to the Docker daemon at unix://{tmp_path / 'none.sock'}: No such file or directory"
    )


def test_docker_check_leaves_a_chosen_context_to_the_docker_client(docker_env, tmp_path):
    # The client's own configuration decides where the engine is: ask it.
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"currentContext": "norn-no-such-context"}))
    problem = services.docker_problem()
    assert problem is not None and "norn-no-such-context" in problem


def test_norn_commands_still_stop_on_an_unreachable_service():
    # Norn's commands run only Norn's checks before they start, but those they run.
    result = run_manage("deployments", REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "(norn.E002) Redis at 127.0.0.1:1/0 is unreachable" in result.stderr


def test_start_up_imports_neither_twisted_nor_the_clients_of_other_services():
    # What every manage.py process paid for before a command ran (issue 13):
    # Twisted and OpenSSL (daphne's AppConfig), redis (with jwt and
    # cryptography), the WebSocket client. Imported where they are used.
    result = run_manage("deployments", "--help", PYTHONPROFILEIMPORTTIME="1")
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "django.db.models" in imported  # the list is real
    assert not {"twisted", "OpenSSL", "daphne.server", "redis", "cryptography", "websockets", "kubernetes"} & imported
    # Nor the admin's modules: the admin's URLs and checks import them.
    assert not {"deployments.admin", "apps_registry.admin", "django_q.admin"} & imported


def test_the_admin_checks_and_urls_see_every_registered_model():
    # A fresh process: nothing has imported the admin modules before the checks run.
    script = (
        "import django; django.setup(); import sys; from django.contrib import admin; from django.core import checks;"
        "before = len(admin.site._registry); checks.run_checks(tags=['admin']);"
        "print(before, sorted(f'{m._meta.label}={type(a).__name__}' for m, a in admin.site._registry.items()))"
    )
    env = {**os.environ, "SECRET_KEY": "test-settings-" + "k" * 50, "DJANGO_SETTINGS_MODULE": "norn_project.settings"}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    before, registered = result.stdout.split(" ", 1)
    assert before == "0"
    for entry in ("apps_registry.App=AppWithDeploymentsAdmin", "deployments.Deployment=", "deployments.ApiToken=",
                  "django_q.Schedule=", "auth.User="):
        assert entry in registered


@pytest.mark.django_db
def test_runserver_is_daphnes_and_serves_websockets(tmp_path):
    port = free_port()
    env = {**os.environ, "SECRET_KEY": "test-settings-" + "k" * 50, "PYTHONUNBUFFERED": "1",
           "DATABASE_URL": database_url_for_tests()}
    log = tmp_path / "runserver.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        # No credentials: the consumer accepts, then closes with 4401.
        with connect(f"ws://127.0.0.1:{port}/ws/deployments/", open_timeout=10) as websocket:
            with pytest.raises(ConnectionClosed) as closed:
                websocket.recv(timeout=10)
        assert closed.value.rcvd.code == 4401
        assert "Daphne" in log.read_text()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=15)


# --- the Redis probe speaks PING (and AUTH) itself, so no command imports redis-py for it


@pytest.fixture
def guarded_redis(tmp_path):
    """A real redis-server of our own, on a free port, with a password."""
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--requirepass", "s3cret pass", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_redis_probe_authenticates_and_says_what_redis_said(guarded_redis):
    port = guarded_redis
    assert services.redis_problem(f"redis://:s3cret%20pass@127.0.0.1:{port}/0") is None
    assert services.redis_problem(f"redis://default:s3cret%20pass@127.0.0.1:{port}/1") is None
    wrong = services.redis_problem(f"redis://:nope-secret@127.0.0.1:{port}/0")
    assert wrong.startswith("WRONGPASS") and "nope-secret" not in wrong
    assert services.redis_problem(f"redis://127.0.0.1:{port}/0").startswith("NOAUTH")


def test_redis_probe_refuses_what_is_not_redis():
    # PostgreSQL's port: something listens, and hangs up on what it cannot parse.
    problem = services.redis_problem("redis://127.0.0.1:5432/0")
    assert problem is not None and "127.0.0.1:5432" in problem
    assert services.redis_problem("redis://127.0.0.1:1/0") == "Error connecting to 127.0.0.1:1: Connection refused"
    assert services.redis_problem("unix:///nonexistent/redis.sock") == (
        "Error connecting to /nonexistent/redis.sock: No such file or directory"
    )
