"""Settings from the environment: bad values stop Norn with a clear message."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def run_manage(*args, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NORN_", "DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY"))}
    base.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("DEBUG", "maybe", "DEBUG='maybe' is not a boolean; use one of 1/0, true/false, yes/no, on/off"),
        ("NORN_RUNTIME", "nomad", "NORN_RUNTIME='nomad' is not valid; use one of: docker, kubernetes"),
        ("DATABASE_URL", "mysql://root@127.0.0.1/norn", "DATABASE_URL must point at PostgreSQL"),
        ("DATABASE_URL", "postgres://127.0.0.1:5432", "DATABASE_URL has no database name"),
        ("DATABASE_URL", "nonsense", "DATABASE_URL is not a valid database URL"),
        ("REDIS_URL", "http://127.0.0.1:6379", "REDIS_URL is not a Redis URL"),
        ("NORN_REGISTRY_URL", "not a registry!", "NORN_REGISTRY_URL='not a registry!' is not a registry"),
        ("NORN_GIT_SSH_KEY", "/nonexistent/id_ed25519", "NORN_GIT_SSH_KEY='/nonexistent/id_ed25519' is not a readable file"),
        ("NORN_WORKERS", "lots", "NORN_WORKERS='lots' is not a whole number"),
        ("NORN_WORKERS", "0", "NORN_WORKERS='0' is out of range; use a number from 1 to 64"),
        ("NORN_LOG_LEVEL", "LOUD", "NORN_LOG_LEVEL='LOUD' is not valid"),
        ("NORN_APPS_DIR", "/etc/hostname", "NORN_APPS_DIR='/etc/hostname' exists but is not a directory"),
        ("NORN_TIMEOUT_BUILD", "soon", "NORN_TIMEOUT_BUILD='soon' is not a whole number"),
        ("NORN_TIMEOUT_TEST", "0", "NORN_TIMEOUT_TEST='0' is out of range; use a number from 1 to 86400"),
        ("NORN_APP_DATABASES_URL", "sqlite:///x.db", "NORN_APP_DATABASES_URL must point at PostgreSQL"),
        ("NORN_KUBECONFIG", "/nonexistent/kubeconfig", "NORN_KUBECONFIG='/nonexistent/kubeconfig' is not a file"),
    ],
)
def test_bad_environment_values_fail_loudly(name, value, expected):
    result = run_manage("check", **{name: value})
    assert result.returncode == 2
    assert "Norn is misconfigured: " + expected in result.stderr
    assert "Traceback" not in result.stderr


def test_secret_key_is_required_without_debug():
    result = run_manage("check", DEBUG="false")
    assert result.returncode == 2
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_database_url_password_never_printed():
    result = run_manage("check", DATABASE_URL="mysql://root:hunter2-secret@127.0.0.1/norn")
    assert result.returncode == 2
    assert "hunter2-secret" not in result.stderr + result.stdout


def test_values_are_read(monkeypatch):
    result = run_manage(
        "shell", "-c",
        "from django.conf import settings as s; print(s.DEBUG, s.NORN_RUNTIME, s.NORN_REGISTRY_URL, s.ALLOWED_HOSTS, s.NORN_APPS_DIR, s.DATABASES['default']['NAME'])",
        DEBUG="off", SECRET_KEY="x" * 50, NORN_RUNTIME="kubernetes", NORN_REGISTRY_URL="http://127.0.0.1:5000/",
        ALLOWED_HOSTS="norn.example.com, localhost", NORN_APPS_DIR=str(REPO_ROOT / "examples"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == (
        f"False kubernetes 127.0.0.1:5000 ['norn.example.com', 'localhost'] {REPO_ROOT / 'examples'} norn"
    )


def test_norn_url_must_be_a_server_url():
    result = run_manage("check", NORN_URL="127.0.0.1:8000")
    assert result.returncode == 2
    assert "NORN_URL='127.0.0.1:8000' is not a server URL" in result.stderr
