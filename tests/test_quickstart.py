"""The quickstart's parts (scripts/quickstart is not run here: it would
restart this machine's services): scripts/example-apps lays out the examples
once and never rewrites what a user may have changed (the hello-web
repository, an app's directory); a second sync counts broken-spec as invalid,
as the first did; the apps directory exists before any manage.py command
checks for it."""

import re
import subprocess

import pytest

from tests.support.cluster import REPO_ROOT
from tests.support.commands import manage

pytestmark = pytest.mark.django_db(transaction=True)

GIT = ["git", "-c", "user.name=User", "-c", "user.email=user@example.invalid"]


def example_apps(dest, repos):
    result = subprocess.run(["scripts/example-apps", str(dest), str(repos)], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def git(*args, cwd=None):
    return subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_a_second_run_leaves_the_users_repository_and_apps_alone(tmp_path):
    dest, repos = tmp_path / "apps", tmp_path / "repos"
    first = example_apps(dest, repos)
    repo = repos / "hello-web.git"
    assert f"example-apps: created the hello-web repository {repo} at" in first
    assert "example-apps: created in" in first and "broken-spec hello-web nightly-report" in first
    assert git("-C", str(repo), "log", "--format=%s", "main").splitlines() == [
        "hello-web: visits and greetings tables", "hello-web: a page served by busybox httpd"]
    assert f"url: file://{repo}" in (dest / "hello-web" / "infraspec.yaml").read_text()
    assert not list(dest.glob(".*"))  # nothing half laid out left behind

    # The user changes the app and pushes; edits an infraspec; removes an app.
    clone = tmp_path / "clone"
    git("clone", "-q", str(repo), str(clone))
    (clone / "www" / "index.html").write_text("mine\n")
    git("commit", "-qam", "my change", cwd=clone)
    git("push", "-q", "origin", "main", cwd=clone)
    pushed = git("-C", str(repo), "rev-parse", "main")
    edited = (dest / "hello-web" / "infraspec.yaml").read_text() + "# mine\n"
    (dest / "hello-web" / "infraspec.yaml").write_text(edited)
    subprocess.run(["rm", "-rf", str(dest / "nightly-report")], check=True)

    second = example_apps(dest, repos)
    assert git("-C", str(repo), "rev-parse", "main") == pushed
    assert f"example-apps: hello-web repository {repo} exists: left as it is" in second
    assert (dest / "hello-web" / "infraspec.yaml").read_text() == edited
    assert "already in" in second and "left as they are: broken-spec hello-web" in second
    assert re.search(r"created in .*: nightly-report$", second, re.M)
    assert (dest / "nightly-report" / "infraspec.yaml").exists()


def test_the_second_sync_counts_the_invalid_app_as_the_first(tmp_path):
    dest = tmp_path / "apps"
    example_apps(dest, tmp_path / "repos")
    first = manage("sync_apps", "--apps-dir", str(dest))
    second = manage("sync_apps", "--apps-dir", str(dest))
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.splitlines()[-1] == "3 added, 0 updated, 0 unchanged, 0 missing, 1 invalid"
    assert second.stdout.splitlines()[-1] == "0 added, 0 updated, 3 unchanged, 0 missing, 1 invalid"
    assert "  invalid: broken-spec" in second.stdout  # with its errors, as the first time


def test_the_apps_directory_is_laid_out_before_any_manage_py_command():
    """Else the first run's migrate warns that NORN_APPS_DIR does not exist (norn.W001)."""
    lines = (REPO_ROOT / "scripts" / "quickstart").read_text().splitlines()
    commands = [n for n, line in enumerate(lines) if not line.lstrip().startswith("#")]
    layout = next(n for n in commands if "scripts/example-apps" in lines[n])
    first_manage = next(n for n in commands if "$PY manage.py" in lines[n])
    assert layout < first_manage, (lines[layout], lines[first_manage])
