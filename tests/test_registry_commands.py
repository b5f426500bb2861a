"""`manage.py sync_apps` and `manage.py validate_infraspec`."""

import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps_registry.models import App
from tests.conftest import REPO_ROOT

GOOD = "app: {name}\nrole: worker\n"


@pytest.mark.django_db
def test_sync_apps_reports_what_it_did(write_spec, capsys):
    write_spec("alpha", GOOD.format(name="alpha"))
    write_spec("broken", "app: broken\nrole: nope\n")
    call_command("sync_apps")
    out = capsys.readouterr().out
    assert "added: alpha" in out
    assert "invalid: broken" in out
    assert "role: 'nope' is not a role" in out
    assert "2 added, 0 updated, 0 unchanged, 0 missing, 1 invalid" in out
    assert App.objects.count() == 2


def run_validate(*args, apps_dir):
    return subprocess.run(
        [sys.executable, "manage.py", "validate_infraspec", *args],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "NORN_APPS_DIR": str(apps_dir), "HOME": str(apps_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_validate_infraspec_exit_codes(write_spec, apps_dir):
    good = write_spec("alpha", GOOD.format(name="alpha"))
    write_spec("broken", "app: broken\nrole: nope\nport: x\n")
    ok = run_validate("alpha", apps_dir=apps_dir)
    assert ok.returncode == 0, ok.stderr
    assert "valid (worker)" in ok.stdout
    assert run_validate(str(good), apps_dir=apps_dir).returncode == 0
    assert run_validate(str(good.parent), apps_dir=apps_dir).returncode == 0
    bad = run_validate("broken", apps_dir=apps_dir)
    assert bad.returncode == 1
    assert "broken/infraspec.yaml:2: role: 'nope' is not a role" in bad.stderr
    assert "broken/infraspec.yaml:3: port: 'x' is not a whole number" in bad.stderr
    everything = run_validate(apps_dir=apps_dir)
    assert everything.returncode == 1
    assert "1 valid, 1 invalid" in everything.stderr


def test_validate_infraspec_needs_no_database(write_spec, apps_dir):
    # Runs in CI hooks of app repositories, where Norn's services are absent.
    write_spec("alpha", GOOD.format(name="alpha"))
    result = subprocess.run(
        [sys.executable, "manage.py", "validate_infraspec", "alpha"],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "NORN_APPS_DIR": str(apps_dir), "HOME": str(apps_dir),
             "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none", "REDIS_URL": "redis://127.0.0.1:1/0"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_validate_infraspec_unknown_target(apps_dir, settings):
    with pytest.raises(CommandError, match="neither a file, a directory with infraspec.yaml, nor an app"):
        call_command("validate_infraspec", "ghost")
