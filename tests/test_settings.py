"""Settings from the environment: bad values stop Norn with a clear message."""

import os
import secrets
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


# What Django's security settings are called in the environment, so that
# this process's own values (if any) do not leak into the subprocesses.
DJANGO_SECURITY_VARIABLES = (
    "ALLOWED_HOSTS", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "CSRF_TRUSTED_ORIGINS",
    "SECURE_", "AXES_",
)


def run_manage(*args, **env):
    """manage.py in a clean environment: only a SECRET_KEY, unless told (None unsets)."""
    base = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("NORN_", "DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", *DJANGO_SECURITY_VARIABLES))
    }
    base["SECRET_KEY"] = "test-settings-" + "k" * 50
    base.update(env)
    base = {k: v for k, v in base.items() if v is not None}
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
        ("NORN_DB_POOL_SIZE", "-1", "NORN_DB_POOL_SIZE='-1' is out of range; use a number from 0 to 100"),
        ("NORN_LOG_LEVEL", "LOUD", "NORN_LOG_LEVEL='LOUD' is not valid"),
        ("NORN_APPS_DIR", "/etc/hostname", "NORN_APPS_DIR='/etc/hostname' exists but is not a directory"),
        ("NORN_TIMEOUT_BUILD", "soon", "NORN_TIMEOUT_BUILD='soon' is not a whole number"),
        ("NORN_TIMEOUT_TEST", "0", "NORN_TIMEOUT_TEST='0' is out of range; use a number from 1 to 86400"),
        ("NORN_APP_DATABASES_URL", "sqlite:///x.db", "NORN_APP_DATABASES_URL must point at PostgreSQL"),
        ("NORN_KUBECONFIG", "/nonexistent/kubeconfig", "NORN_KUBECONFIG='/nonexistent/kubeconfig' is not a file"),
        ("SESSION_COOKIE_SECURE", "maybe", "SESSION_COOKIE_SECURE='maybe' is not a boolean"),
        ("SECURE_HSTS_SECONDS", "-1", "SECURE_HSTS_SECONDS='-1' is out of range"),
        ("SECURE_HSTS_SECONDS", "a year", "SECURE_HSTS_SECONDS='a year' is not a whole number"),
        ("SECURE_PROXY_SSL_HEADER", "https", "SECURE_PROXY_SSL_HEADER='https' is not HEADER: VALUE"),
        ("CSRF_TRUSTED_ORIGINS", "norn.example.com", "CSRF_TRUSTED_ORIGINS: 'norn.example.com' is not an origin"),
        ("NORN_LOGIN_FAILURE_LIMIT", "0", "NORN_LOGIN_FAILURE_LIMIT='0' is out of range"),
        ("NORN_LOGIN_COOLOFF_MINUTES", "soon", "NORN_LOGIN_COOLOFF_MINUTES='soon' is not a whole number"),
        ("NORN_TRUSTED_PROXY_COUNT", "-1", "NORN_TRUSTED_PROXY_COUNT='-1' is out of range"),
    ],
)
def test_bad_environment_values_fail_loudly(name, value, expected):
    result = run_manage("check", **{name: value})
    assert result.returncode == 2
    assert "Norn is misconfigured: " + expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("debug", [None, "false"])
def test_secret_key_is_required_without_debug(debug):
    # DEBUG is off unless asked for, so an unset DEBUG needs a key too.
    result = run_manage("check", DEBUG=debug, SECRET_KEY=None)
    assert result.returncode == 2
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_is_off_unless_asked_for():
    code = "from django.conf import settings as s; print(s.DEBUG)"
    assert run_manage("shell", "-c", code).stdout.split()[-1] == "False"
    assert run_manage("shell", "-c", code, DEBUG="true", SECRET_KEY=None).stdout.split()[-1] == "True"


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


# Twenty requests' worth of database use in a process started the way daphne
# starts Norn (norn_project.asgi) or the way manage.py does: which server
# process served each.
POOL_PROBE = """
import os, sys
if sys.argv[1] == "web":
    import norn_project.asgi
else:
    import django; django.setup()
from django.db import close_old_connections, connection
pids = []
for _ in range(20):
    close_old_connections()  # what Django does at each request's start and end
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pids.append(cursor.fetchone()[0])
    connection.close()  # a web request's end: back to the pool, if there is one
print(connection.settings_dict["OPTIONS"].get("pool"), len(set(pids)))
"""


@pytest.mark.parametrize("kind, pool_size, pool, most_connections", [
    ("web", None, "{'min_size': 1, 'max_size': 8, 'timeout': 10}", 8),
    ("web", "3", "{'min_size': 1, 'max_size': 3, 'timeout': 10}", 3),
    ("web", "0", "None", 20),  # a connection per request, as Django does under ASGI
    ("other", None, "None", 20),  # manage.py commands, the qcluster's forked workers
])
def test_web_processes_take_their_connections_from_a_pool(kind, pool_size, pool, most_connections):
    result = subprocess.run(
        [sys.executable, "-c", POOL_PROBE, kind], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ["PATH"], "SECRET_KEY": "x" * 50, "DJANGO_SETTINGS_MODULE": "norn_project.settings",
             "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
             **({"NORN_DB_POOL_SIZE": pool_size} if pool_size is not None else {})},
    )
    assert result.returncode == 0, result.stderr
    shown, connections = result.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert shown == pool
    if pool == "None":
        assert int(connections) == 20  # each request's connection closed at its end
    else:
        assert int(connections) <= most_connections  # handed back and used again


def test_norn_url_must_be_a_server_url():
    result = run_manage("check", NORN_URL="127.0.0.1:8000")
    assert result.returncode == 2
    assert "NORN_URL='127.0.0.1:8000' is not a server URL" in result.stderr


def test_security_settings_are_read():
    code = (
        "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
        "s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
        "s.SECURE_HSTS_PRELOAD, s.SECURE_PROXY_SSL_HEADER, s.CSRF_TRUSTED_ORIGINS)"
    )
    result = run_manage(
        "shell", "-c", code,
        SESSION_COOKIE_SECURE="yes", CSRF_COOKIE_SECURE="1", SECURE_SSL_REDIRECT="on",
        SECURE_HSTS_SECONDS="600", SECURE_HSTS_INCLUDE_SUBDOMAINS="true", SECURE_HSTS_PRELOAD="true",
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https",
        CSRF_TRUSTED_ORIGINS="https://norn.example.com, https://other.example.com:8443/",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        "True True True 600 True True ('HTTP_X_FORWARDED_PROTO', 'https') "
        "['https://norn.example.com', 'https://other.example.com:8443']"
    )


def read_env_file(path):
    """KEY=VALUE lines as systemd's EnvironmentFile reads them (quotes removed)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        values[name] = " ".join(shlex.split(value))
    return values


def test_check_deploy_passes_with_the_documented_production_environment(tmp_path):
    documented = read_env_file(REPO_ROOT / "deploy" / "norn.env.example")
    # The security settings exactly as documented; the services, paths and
    # key are this machine's (the documented ones are placeholders).
    apps = tmp_path / "apps"
    apps.mkdir()
    local = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "NORN_APP_DATABASES_URL": os.environ.get("NORN_APP_DATABASES_URL"),
        "NORN_APPS_DIR": str(apps),
        "NORN_SNAPSHOT_DIR": str(tmp_path / "snapshots"),
        "NORN_WORK_DIR": str(tmp_path / "work"),
        "NORN_GIT_KNOWN_HOSTS": str(tmp_path / "known_hosts"),
    }
    assert set(local) - {"REDIS_URL"} <= set(documented)
    if not local["NORN_APP_DATABASES_URL"]:
        pytest.fail("NORN_APP_DATABASES_URL is not set: run the tests with scripts/test")
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", **{**documented, **local})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert documented["DEBUG"] == "false"


def test_check_deploy_names_what_a_bare_environment_lacks():
    result = run_manage("check", "--deploy")
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stdout + result.stderr
