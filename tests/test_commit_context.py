"""The commit's subject, author and time: read by the clone step from a real
clone of a real repository (hostile bytes made safe), written with the SHA,
carried by a rollback, and shown by the API."""

import datetime
import subprocess
import tempfile
from pathlib import Path

import pytest

from apps_registry.models import App
from deployments import rollback
from deployments.models import Deployment
from deployments.steps import clone
from tests.support.commands import manage
from tests.support.contexts import step_context
from tests.support.git_servers import git_env, make_repo, run_git

pytestmark = pytest.mark.django_db(transaction=True)

WHEN = "2026-04-05T06:07:08+02:00"


def commit_bytes(repo, message: bytes, author: str = "Ada Lovelace") -> str:
    """Commit `message` (raw bytes, as a repository may hold them) by `author`
    on the repo's default branch; its SHA."""
    env = {"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": "ada@example.invalid",
           "GIT_COMMITTER_DATE": WHEN, "GIT_AUTHOR_DATE": WHEN}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        run_git("clone", "--quiet", str(repo.bare_path), str(work))
        (Path(tmp) / "message").write_bytes(message)
        subprocess.run(["git", "commit", "--quiet", "--allow-empty", "--cleanup=verbatim", "-F",
                        str(Path(tmp) / "message")], cwd=work, env=git_env(env), check=True)
        run_git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=work)
    return repo.head()


def cloned(tmp_path, repo, ref="HEAD"):
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    spec = {"app": "web", "role": "worker", "repo": {"url": repo.file_url, "branch": "main", "autoDeploy": False},
            "env": {}}
    ctx = step_context(spec, workdir=workdir, app_dir=tmp_path / "none", ref=ref, timeout=60)
    clone.run(ctx)
    return ctx


def test_clone_records_the_subject_the_author_name_and_the_time(tmp_path):
    repo = make_repo(tmp_path / "repos", "web", {"README": "one\n"})
    sha = commit_bytes(repo, b"Make the login page faster\n\nThe body is not the subject.\n")
    ctx = cloned(tmp_path, repo)
    assert ctx.commit_sha == sha
    assert ctx.commit_context == {
        "commit_subject": "Make the login page faster",
        "commit_author": "Ada Lovelace",  # the name only, never "Name <email>"
        "commit_time": datetime.datetime.fromisoformat(WHEN),
    }
    assert f"Checked out {sha}: Make the login page faster (Ada Lovelace)" in ctx.text()
    assert "ada@example.invalid" not in ctx.text()


def test_an_older_commit_by_sha_gets_its_own_subject(tmp_path):
    repo = make_repo(tmp_path / "repos", "web", {"README": "one\n"}, message="first of all")
    first = repo.head()
    repo.commit({"README": "two\n"}, "second thoughts")
    assert cloned(tmp_path, repo, ref=first).commit_context["commit_subject"] == "first of all"


def test_hostile_subjects_are_bounded_and_made_safe(tmp_path):
    repo = make_repo(tmp_path / "repos", "web", {"README": "one\n"})
    # Invalid UTF-8, a terminal escape sequence, a tab and a subject far past the column.
    message = b"Bad \xff\xfe bytes \x1b[31mred\x1b[0m\there " + b"x" * 5000 + b"\n"
    commit_bytes(repo, message, author="Eve \x1b]0;pwned\x07" + "e" * 400)
    context = cloned(tmp_path, repo).commit_context
    subject, author = context["commit_subject"], context["commit_author"]
    # git itself may re-encode what is not UTF-8 (as Latin-1): either way, text.
    assert subject.startswith("Bad ") and "bytes  [31mred [0m here xxx" in subject
    assert len(subject) == clone.SUBJECT_MAX and subject.endswith("…")
    assert len(author) == clone.AUTHOR_MAX and author.startswith("Eve  ]0;pwned ")
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in subject + author)


def test_the_pipeline_writes_the_context_with_the_sha_and_a_rollback_carries_it(
        tmp_path, make_app, deploy_now, busybox_image, client, admin_user):
    repo = make_repo(tmp_path / "repos", "ctxapp", {"README": "x\n"})
    sha = commit_bytes(repo, b"Ship the new scheduler\n")
    subprocess.run(["docker", "tag", busybox_image, f"ctxapp:{sha}"], check=True)
    try:
        make_app("ctxapp", "app: ctxapp\nrole: cron\nrepo:\n  url: " + repo.file_url
                 + "\nschedule: '0 4 * * *'\ncommand: echo hi\n")
        deployment = deploy_now("ctxapp")
    finally:
        subprocess.run(["docker", "rmi", f"ctxapp:{sha}"], capture_output=True)
    assert deployment.status == "deployed", deployment.error
    assert (deployment.commit_sha, deployment.commit_subject, deployment.commit_author) == \
        (sha, "Ship the new scheduler", "Ada Lovelace")
    assert deployment.commit_time == datetime.datetime.fromisoformat(WHEN)

    back = rollback.queue(App.objects.get(name="ctxapp"), deployment, None, name="tester")
    back = Deployment.objects.get(pk=back.pk)
    assert (back.commit_sha, back.commit_subject, back.commit_author, back.commit_time) == \
        (sha, "Ship the new scheduler", "Ada Lovelace", deployment.commit_time)

    # The deployment page shows it, and so does the follower's header.
    client.force_login(admin_user)
    page = client.get(f"/deployments/{deployment.public_id}/").content.decode()
    assert "Ship the new scheduler" in page and "by Ada Lovelace" in page
    followed = manage("follow", str(deployment.public_id), "--db")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines()[1] == f"Commit {sha[:12]}: Ship the new scheduler (Ada Lovelace)"


def test_bytes_that_are_not_utf8_are_replaced(tmp_path, monkeypatch):
    """Whatever git prints (here a git that prints invalid UTF-8 and no date
    the parser knows) becomes text with U+FFFD, never an error."""
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "git").write_text("#!/bin/sh\nprintf '%040d\\000Bad \\377\\376 subject\\000N\\303\\000yesterday' 0\n")
    (shims / "git").chmod(0o755)
    context = clone.commit_context(tmp_path, {"PATH": f"{shims}:/usr/bin:/bin"})
    assert context == {"commit_subject": "Bad \ufffd\ufffd subject", "commit_author": "N\ufffd", "commit_time": None}
    (shims / "git").write_text("#!/bin/sh\nexit 128\n")
    assert clone.commit_context(tmp_path, {"PATH": f"{shims}:/usr/bin:/bin"}) == {}
