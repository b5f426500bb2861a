"""The typed infraspec (apps_registry/spec.py): defaults in one place, for fresh
files and for specs stored before a field existed."""

import dataclasses
import textwrap

import pytest

from apps_registry import infraspec
from apps_registry.spec import Build, Postgres, Repo, Spec


def load(text):
    result = infraspec.parse(textwrap.dedent(text), "web/infraspec.yaml", "web")
    assert result.ok, [str(e) for e in result.errors]
    return result


def test_parse_gives_the_typed_spec_with_defaults_filled_in():
    spec = load("""
        app: web
        role: webserver
        repo:
          url: https://git.example.com/acme/web.git
        build: {}
        services:
          postgres:
            database: web
        migrations:
          command: ./manage.py migrate
        port: 8000
        env:
          DEBUG: false
    """).spec
    assert spec.repo == Repo("https://git.example.com/acme/web.git", "main", False)
    assert spec.build == Build("Dockerfile", None)
    assert spec.postgres == Postgres("web")
    assert spec.migrations.command == "./manage.py migrate"
    assert (spec.port, spec.healthcheck, spec.replicas, spec.namespace) == (8000, None, 1, "default")
    assert spec.env == {"DEBUG": "false"}
    assert spec.auto_rollback is True
    assert spec.snapshots.retain == 5
    assert not spec.is_cron


def test_the_stored_dict_and_the_typed_spec_say_the_same():
    result = load("""
        app: web
        role: cron
        schedule: "*/5 * * * *"
        command: [python, report.py]
    """)
    assert Spec.from_dict(result.data) == result.spec
    assert result.spec.to_dict() == result.data
    assert result.spec.command == ("python", "report.py")
    assert result.data["command"] == ["python", "report.py"]
    assert result.spec.replicas is None and result.spec.is_cron


def test_a_spec_stored_before_newer_fields_gets_their_defaults():
    # App.spec rows written before autoRollback and snapshots existed.
    old = {"app": "web", "role": "webserver", "repo": None, "build": None, "services": None,
           "migrations": None, "port": 8000, "healthcheck": None, "replicas": 2,
           "namespace": "default", "env": {}}
    spec = Spec.from_dict(old)
    assert (spec.auto_rollback, spec.snapshots.retain, spec.replicas) == (True, 5, 2)
    assert Spec.from_dict({"app": "w", "role": "worker"}).auto_rollback is False


def test_an_empty_spec_is_usable_where_only_a_snapshot_matters():
    spec = Spec.from_dict(None)
    assert (spec.app, spec.role, spec.postgres, spec.env) == ("", "", None, {})


def test_the_spec_is_frozen():
    spec = Spec.from_dict({"app": "web", "role": "worker"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.port = 80
