"""The clone step against real git servers: HTTPS with a token, SSH with a
key, exact commits, the local-copy fallback, and no secret anywhere."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from deployments.steps import StepFailed, clone
from tests.support.contexts import step_context
from tests.support.git_servers import GitHttpServer, SshGitServer, generate_ssh_keypair, make_repo

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "ghp_" + "S3cretT0ken" * 3


@pytest.fixture
def argv_log(tmp_path, monkeypatch):
    """Put shims for git and ssh first on PATH that record every argv."""
    shims = tmp_path / "shims"
    shims.mkdir()
    log = tmp_path / "argv.log"
    for tool in ("git", "ssh"):
        real = "/usr/bin/" + tool
        shim = shims / tool
        shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "{tool} $*" >> {log}\nexec {real} "$@"\n')
        shim.chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    log.touch()
    return log


def make_ctx(tmp_path, spec, ref="HEAD", app_dir=None):
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    return step_context(
        spec, workdir=workdir, app_dir=app_dir or tmp_path / "no-local-copy", ref=ref,
        deployment_id=0, public_id="test", timeout=60, secrets=[TOKEN],
    )


def repo_spec(url, branch="main"):
    return {"app": "web", "role": "worker", "repo": {"url": url, "branch": branch, "autoDeploy": False}, "env": {}}


@pytest.fixture
def repo(tmp_path):
    repo = make_repo(tmp_path / "repos", "web", {"README": "one\n"})
    repo.first = repo.head()
    repo.second = repo.commit({"README": "two\n"}, "second")
    repo.feature = repo.commit({"README": "feature\n"}, "feature work", branch="feature")
    return repo


def readme(ctx):
    return (ctx.workdir / "src" / "README").read_text()


def test_clone_head_of_the_configured_branch(tmp_path, repo):
    ctx = make_ctx(tmp_path, repo_spec(repo.file_url))
    clone.run(ctx)
    assert ctx.commit_sha == repo.second
    assert readme(ctx) == "two\n"
    assert f"$ git clone --depth 1 --branch main -- {repo.file_url}" in ctx.text()


def test_clone_another_branch_by_name(tmp_path, repo):
    ctx = make_ctx(tmp_path, repo_spec(repo.file_url), ref="feature")
    clone.run(ctx)
    assert ctx.commit_sha == repo.feature and readme(ctx) == "feature\n"


def test_full_sha_of_an_older_commit_is_what_gets_checked_out(tmp_path, repo):
    ctx = make_ctx(tmp_path, repo_spec(repo.file_url), ref=repo.first)
    clone.run(ctx)
    assert ctx.commit_sha == repo.first
    assert readme(ctx) == "one\n"


def test_abbreviated_sha_is_resolved_not_replaced_by_the_tip(tmp_path, repo):
    ctx = make_ctx(tmp_path, repo_spec(repo.file_url), ref=repo.first[:8])
    clone.run(ctx)
    assert ctx.commit_sha == repo.first


def test_abbreviated_sha_on_another_branch(tmp_path, repo):
    ctx = make_ctx(tmp_path, repo_spec(repo.file_url), ref=repo.feature[:10])
    clone.run(ctx)
    assert ctx.commit_sha == repo.feature


@pytest.mark.parametrize("ref", ["deadbeef", "d" * 40])
def test_commit_that_does_not_exist_fails_clearly(tmp_path, repo, ref):
    ctx = make_ctx(tmp_path, repo_spec(repo.file_url), ref=ref)
    with pytest.raises(StepFailed, match=f"commit {ref} does not exist in {repo.file_url}"):
        clone.run(ctx)


def test_clone_failure_falls_back_to_the_local_copy(tmp_path):
    local = tmp_path / "apps" / "web"
    local.mkdir(parents=True)
    (local / "README").write_text("local\n")
    ctx = make_ctx(tmp_path, repo_spec("http://127.0.0.1:9/nothing.git"), app_dir=local)
    clone.run(ctx)
    assert readme(ctx) == "local\n"
    assert "Clone failed (git clone of http://127.0.0.1:9/nothing.git branch main exited with status 128); falling back to copying the local directory" in ctx.text()
    assert len(ctx.commit_sha) == 40  # content digest of the copy


def test_clone_failure_without_local_copy_fails(tmp_path):
    ctx = make_ctx(tmp_path, repo_spec("http://127.0.0.1:9/nothing.git"))
    with pytest.raises(StepFailed, match="git clone of http://127.0.0.1:9/nothing.git branch main exited with status 128"):
        clone.run(ctx)


def test_app_without_repo_is_copied_and_git_head_is_the_tag(tmp_path, repo):
    local = tmp_path / "apps" / "web"
    subprocess.run(["git", "clone", "-q", repo.bare_path, local], check=True)
    spec = {"app": "web", "role": "worker", "repo": None, "env": {}}
    ctx = make_ctx(tmp_path, spec, app_dir=local)
    clone.run(ctx)
    assert ctx.commit_sha == repo.second
    assert f"No repo in infraspec.yaml: copying {local}" in ctx.text()
    (tmp_path / "other").mkdir()
    mismatch = make_ctx(tmp_path / "other", spec, ref=repo.first, app_dir=local)
    with pytest.raises(StepFailed, match=f"commit {repo.first} was requested, but the local copy"):
        clone.run(mismatch)


def test_https_token_goes_through_askpass_only(tmp_path, repo, settings, argv_log):
    settings.NORN_GIT_TOKEN = TOKEN
    with GitHttpServer(tmp_path / "repos", token=TOKEN) as server:
        ctx = make_ctx(tmp_path, repo_spec(server.url_for("web")), ref=repo.first)
        clone.run(ctx)
        assert ctx.commit_sha == repo.first
        assert any(r.authorized for r in server.requests)
        assert all(TOKEN not in r.path for r in server.requests)
    assert TOKEN not in argv_log.read_text()
    assert TOKEN not in ctx.text()
    # The askpass script holds no secret either.
    assert TOKEN not in (ctx.workdir / "askpass.sh").read_text()


def test_wrong_token_fails_without_showing_it(tmp_path, repo, settings):
    settings.NORN_GIT_TOKEN = TOKEN
    with GitHttpServer(tmp_path / "repos", token="the-right-one") as server:
        ctx = make_ctx(tmp_path, repo_spec(server.url_for("web")))
        with pytest.raises(StepFailed, match="exited with status 128"):
            clone.run(ctx)
    assert TOKEN not in ctx.text()


def test_ssh_key_goes_through_git_ssh_command(tmp_path, repo, settings, argv_log):
    key, public = generate_ssh_keypair(tmp_path / "keys")
    settings.NORN_GIT_SSH_KEY = key
    settings.NORN_GIT_KNOWN_HOSTS = tmp_path / "known_hosts"
    with SshGitServer(tmp_path / "repos", public) as server:
        ctx = make_ctx(tmp_path, repo_spec(server.url_for("web")), ref=repo.first[:9])
        clone.run(ctx)
    assert ctx.commit_sha == repo.first
    recorded = argv_log.read_text()
    assert f"ssh -i {key} -o IdentitiesOnly=yes" in recorded
    private = Path(key).read_text().strip().splitlines()[1]
    assert private not in recorded and private not in ctx.text()
    # The host key was pinned on first use.
    assert "ssh-ed25519" in (tmp_path / "known_hosts").read_text()


def test_ssh_with_an_unauthorized_key_fails(tmp_path, repo, settings):
    key, _ = generate_ssh_keypair(tmp_path / "keys")
    _, other_public = generate_ssh_keypair(tmp_path / "other-keys")
    settings.NORN_GIT_SSH_KEY = key
    settings.NORN_GIT_KNOWN_HOSTS = tmp_path / "known_hosts"
    with SshGitServer(tmp_path / "repos", other_public) as server:
        ctx = make_ctx(tmp_path, repo_spec(server.url_for("web")))
        with pytest.raises(StepFailed):
            clone.run(ctx)
    assert "Permission denied (publickey)" in ctx.text()


def test_remote_helper_transports_are_refused_by_git_too(tmp_path, argv_log):
    # infraspec validation rejects ext:: first; this is the second line of defence.
    marker = tmp_path / "pwned"
    ctx = make_ctx(tmp_path, repo_spec(f"ext::sh -c touch% {marker}"))
    with pytest.raises(StepFailed):
        clone.run(ctx)
    assert not marker.exists()
    assert "transport 'ext' not allowed" in ctx.text()
