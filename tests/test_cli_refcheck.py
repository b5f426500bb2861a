"""The ref check before queueing runs while the user waits: as few git
processes as the answer needs, with the same refusals as ever."""

import os
import stat

import pytest

from deployments.models import Deployment
from deployments.requests import DeployRequestError, request_deployment
from tests.support.git_servers import make_repo

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def git_calls(tmp_path, monkeypatch):
    """Every git command the check runs, as `git <args>` lines."""
    shims = tmp_path / "shims"
    shims.mkdir()
    log = tmp_path / "git-argv.log"
    log.touch()
    shim = shims / "git"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {log}\nexec /usr/bin/git "$@"\n')
    shim.chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")

    def calls():
        commands = log.read_text().split()
        log.write_text("")
        return commands

    return calls


@pytest.fixture
def repo(tmp_path, make_app, norn_dirs):
    repo = make_repo(tmp_path / "repos", "gitapp", {"README": "x\n"})
    repo.older = repo.head()
    repo.commit({"README": "y\n"}, "second")
    make_app("gitapp", f"app: gitapp\nrole: worker\nrepo:\n  url: {repo.file_url}\n")
    return repo


def test_a_branch_is_one_ls_remote(repo, git_calls):
    assert request_deployment("gitapp", "main").ref == "main"
    assert git_calls() == ["ls-remote"]
    with pytest.raises(DeployRequestError, match=f"branch 'gone' does not exist in {repo.file_url}"):
        request_deployment("gitapp", "gone")
    assert git_calls() == ["ls-remote"]


def test_a_full_sha_at_a_branch_tip_is_one_ls_remote(repo, git_calls):
    head = repo.head()
    git_calls()  # not the check's
    assert request_deployment("gitapp", head).ref == head
    assert git_calls() == ["ls-remote"]


def test_other_commits_are_looked_up_in_the_history(repo, git_calls, norn_dirs):
    short = repo.head()[:7]
    git_calls()  # not the check's
    assert request_deployment("gitapp", repo.older).ref == repo.older
    assert git_calls() == ["ls-remote", "clone", "-C"]  # -C <probe> rev-parse
    assert request_deployment("gitapp", short).ref == short
    assert git_calls() == ["clone", "-C"]
    for ref in ("deadbeef", "d" * 40):
        with pytest.raises(DeployRequestError, match=f"commit {ref} does not exist in {repo.file_url}"):
            request_deployment("gitapp", ref)
    assert Deployment.objects.count() == 2
    # The probe repository is gone with its scratch directory.
    assert list(norn_dirs.NORN_WORK_DIR.iterdir()) == []
