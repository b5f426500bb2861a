"""System checks: unreachable services are errors with a hint, not tracebacks."""

import pytest
from django.core import checks

from norn_project import checks as norn_checks
from tests.test_settings import run_manage


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
