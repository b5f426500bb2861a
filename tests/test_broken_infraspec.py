"""One broken infraspec file never breaks a page or a command (issue 10): the
apps overview, the app page, sync_apps and validate_infraspec show it as that
app's error, with no traceback, and the other apps keep working."""

import logging
import subprocess
import sys

import pytest
from django.core.management import call_command

from apps_registry import discovery, infraspec
from apps_registry.models import App
from tests.conftest import REPO_ROOT
from tests.support.dashboard import operator, page  # noqa: F401 (fixtures)
from tests.test_infraspec_bounds import ALIAS_BOMB, LIST_BOMB

SECRET = "s3cr3tPW"

# App name -> (file text, what its error says). ALIAS_BOMB and LIST_BOMB
# name their app "web"/not at all; the directory names here differ, which
# is one more error for them, not another outcome.
BROKEN = {
    "badport": (
        f"app: badport\nrole: worker\nrepo:\n  url: https://deploy:{SECRET}@git.example.com:99999/x.git\n",
        "contains a password or token",
    ),
    "abcport": ("app: abcport\nrole: worker\nrepo:\n  url: https://git.example.com:abc/x.git\n", "has a port that is not a number"),
    "longurl": (f"app: longurl\nrole: worker\nrepo:\n  url: https://h/{'a' * 2040}\n", "is 2050 characters long; at most 2048"),
    "longbranch": (f"app: longbranch\nrole: worker\nrepo:\n  url: https://h/x\n  branch: {'b' * 256}\n", "is 256 characters long; at most 255"),
    "deep": ("app: deep\nrole: worker\nenv: " + "[" * 3000 + "]" * 3000 + "\n", "nest"),
    "stamp": ("app: !!timestamp x\nrole: worker\n", "the tag !!timestamp is not allowed"),
    "aliasbomb": (ALIAS_BOMB, "holds more than 10000 values"),
    "listbomb": (LIST_BOMB, "is not a string"),
}
BIG = "is 50.0 MiB (52428800 bytes); an infraspec may be at most 65536 bytes"


@pytest.fixture
def broken_apps(apps_dir, write_spec):
    write_spec("good", "app: good\nrole: worker\n")
    for name, (text, _) in BROKEN.items():
        write_spec(name, text)
    (apps_dir / "big").mkdir()
    with open(apps_dir / "big" / "infraspec.yaml", "wb") as f:
        f.write(b"app: big\nrole: worker\n")
        f.truncate(50 * 1024 * 1024)
    return apps_dir


def expected_errors():
    return {**{name: says for name, (_, says) in BROKEN.items()}, "big": BIG}


@pytest.mark.django_db
def test_sync_records_each_broken_file_as_its_apps_error(broken_apps):
    report = discovery.sync()
    assert sorted(report.invalid) == sorted(expected_errors())
    assert App.objects.get(name="good").status == App.Status.VALID
    for name, says in expected_errors().items():
        app = App.objects.get(name=name)
        assert app.status == App.Status.INVALID
        assert any(says in error for error in app.errors), (name, app.errors)
        assert SECRET not in str(app.errors)
        assert len("\n".join(app.errors)) < 10_000


@pytest.mark.django_db
def test_overview_and_app_pages_show_the_errors(broken_apps, operator):  # noqa: F811
    html = page(operator, "/")
    assert 'href="/apps/good/deploy"' in html
    for name, says in expected_errors().items():
        row = html.split(f'href="/apps/{name}/"')[1].split("</tr>")[0]
        assert "Invalid infraspec.yaml" in row, name
        assert says.replace("'", "&#x27;") in row, name
        assert says.replace("'", "&#x27;") in page(operator, f"/apps/{name}/"), name
    assert SECRET not in html


@pytest.mark.django_db
def test_sync_apps_lists_the_errors_without_a_traceback(broken_apps, capsys):
    call_command("sync_apps")
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "added: good" in out
    for name, says in expected_errors().items():
        assert f"invalid: {name}" in out
        assert says in out, name
    assert "10 added, 0 updated, 0 unchanged, 0 missing, 9 invalid" in out


def test_validate_infraspec_exits_1_with_each_files_errors_and_no_traceback(broken_apps):
    result = subprocess.run(
        [sys.executable, "manage.py", "validate_infraspec"],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "NORN_APPS_DIR": str(broken_apps), "HOME": str(broken_apps)},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "good/infraspec.yaml: valid (worker)" in result.stdout
    for name, says in expected_errors().items():
        lines = [line for line in result.stderr.splitlines() if f"/{name}/infraspec.yaml" in line]
        assert lines and any(says in line for line in lines), (name, result.stderr[:2000])
    assert "1 valid, 9 invalid" in result.stderr
    assert len(result.stderr) < 100_000
    assert SECRET not in result.stderr


def test_the_size_cap_from_the_environment(apps_dir, write_spec):
    path = write_spec("padded", "app: padded\nrole: worker\n" + "# padding\n" * 200)
    run = lambda value: subprocess.run(  # noqa: E731
        [sys.executable, "manage.py", "validate_infraspec", str(path)],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "NORN_APPS_DIR": str(apps_dir), "HOME": str(apps_dir),
             "NORN_INFRASPEC_MAX_BYTES": value},
        capture_output=True, text=True, timeout=60,
    )
    assert run("").returncode == 0
    small = run("1024")
    assert small.returncode == 1
    assert "an infraspec may be at most 1024 bytes (NORN_INFRASPEC_MAX_BYTES)" in small.stderr
    bad = run("lots")
    assert bad.returncode != 0
    assert "NORN_INFRASPEC_MAX_BYTES='lots' is not a size in bytes" in bad.stderr


@pytest.mark.django_db
def test_a_validator_bug_stays_that_apps_error(write_spec, monkeypatch, caplog):
    write_spec("good", "app: good\nrole: worker\n")
    write_spec("cursed", "app: cursed\nrole: worker\n")
    real = infraspec.parse_bytes

    def parse_bytes(raw, file, directory_name=None):
        if directory_name == "cursed":
            raise ValueError("a bug, with a detail that must not be shown")
        return real(raw, file, directory_name)

    monkeypatch.setattr(infraspec, "parse_bytes", parse_bytes)
    with caplog.at_level(logging.ERROR, logger="apps_registry.discovery"):
        report = discovery.sync()
    assert report.invalid == ["cursed"]
    assert App.objects.get(name="good").status == App.Status.VALID
    cursed = App.objects.get(name="cursed")
    assert cursed.status == App.Status.INVALID
    assert cursed.errors == [f"{cursed.directory}/infraspec.yaml: could not be checked: Norn hit an internal error reading it (see Norn's log)"]
    [record] = caplog.records
    assert record.getMessage() == "infraspec of app cursed could not be checked: ValueError in the validator"
    assert record.exc_info is None


@pytest.mark.django_db
def test_a_value_the_database_refuses_stays_that_apps_error(write_spec, monkeypatch, caplog):
    write_spec("good", "app: good\nrole: worker\n")
    write_spec("wide", "app: wide\nrole: worker\nrepo:\n  url: https://h/x.git\n")
    real = infraspec.parse_bytes

    def parse_bytes(raw, file, directory_name=None):
        result = real(raw, file, directory_name)
        if directory_name == "wide":  # as if the validator let a 300-character branch through
            result.data["repo"]["branch"] = "b" * 300
        return result

    monkeypatch.setattr(infraspec, "parse_bytes", parse_bytes)
    with caplog.at_level(logging.ERROR, logger="apps_registry.discovery"):
        report = discovery.sync()
    assert report.invalid == ["wide"]
    assert App.objects.get(name="good").status == App.Status.VALID
    wide = App.objects.get(name="wide")
    assert wide.status == App.Status.INVALID and wide.spec_digest == ""
    assert "internal error" in wide.errors[0]
    assert [r.getMessage() for r in caplog.records] == ["app wide could not be recorded: DataError"]
