"""The clone step against real git servers: HTTPS with a token bound to its
host, SSH with a key, exact commits, the local-copy fallback, and no secret
anywhere."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from deployments import gitauth
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


@pytest.fixture
def https_server(tmp_path, repo):
    with GitHttpServer(tmp_path / "repos", token=TOKEN, tls=True) as server:
        yield server


def with_token_for(settings, server, host_port=None):
    settings.NORN_GIT_CREDENTIALS = {host_port or server.host_port: TOKEN}
    settings.NORN_GIT_CA_FILE = server.ca_file


def test_https_token_goes_through_askpass_only(tmp_path, repo, settings, argv_log, https_server):
    with_token_for(settings, https_server)
    ctx = make_ctx(tmp_path, repo_spec(https_server.url_for("web")), ref=repo.first)
    clone.run(ctx)
    assert ctx.commit_sha == repo.first
    assert any(r.authorized for r in https_server.requests)
    assert all(TOKEN not in r.path for r in https_server.requests)
    assert TOKEN not in argv_log.read_text()
    assert TOKEN not in ctx.text()
    # The askpass script holds no secret either.
    assert TOKEN not in (ctx.workdir / "askpass.sh").read_text()


def test_wrong_token_fails_without_showing_it(tmp_path, repo, settings):
    with GitHttpServer(tmp_path / "repos", token="the-right-one", tls=True) as server:
        with_token_for(settings, server)
        ctx = make_ctx(tmp_path, repo_spec(server.url_for("web")))
        with pytest.raises(StepFailed, match="exited with status 128"):
            clone.run(ctx)
    assert TOKEN not in ctx.text()


def test_plain_http_on_the_token_host_gets_no_token(tmp_path, repo, settings, argv_log):
    with GitHttpServer(tmp_path / "repos", token=TOKEN) as server:
        # The token's host[:port] is this very server, but the URL is http://.
        settings.NORN_GIT_CREDENTIALS = {server.host_port: TOKEN}
        ctx = make_ctx(tmp_path, repo_spec(server.url_for("web")))
        with pytest.raises(StepFailed, match="exited with status 128"):
            clone.run(ctx)
    assert server.requests and not any(r.authorization_sent for r in server.requests)
    assert not (ctx.workdir / "askpass.sh").exists()
    assert TOKEN not in argv_log.read_text()


@pytest.mark.parametrize("where", ["other port", "other host name"])
def test_https_url_of_another_host_or_port_gets_no_token(tmp_path, repo, settings, https_server, where):
    if where == "other port":
        with_token_for(settings, https_server, host_port=f"127.0.0.1:{https_server.port + 1}")
        url = https_server.url_for("web")
    else:
        # The same server under another name: the token is bound to the name.
        with_token_for(settings, https_server)
        url = https_server.url_for("web", host="localhost")
    ctx = make_ctx(tmp_path, repo_spec(url))
    with pytest.raises(StepFailed, match="exited with status 128"):
        clone.run(ctx)
    assert https_server.requests and not any(r.authorization_sent for r in https_server.requests)


def test_redirect_to_another_host_does_not_carry_the_token(tmp_path, repo, settings, https_server):
    # `other` accepts the very token: only the askpass's host binding and
    # http.followRedirects=false keep it from being handed there.
    with GitHttpServer(tmp_path / "repos", token=TOKEN, tls=True, ca=https_server.ca) as other:
        with GitHttpServer(tmp_path / "repos", token=TOKEN, tls=True, ca=https_server.ca,
                           redirect_to=other.base_url.replace("127.0.0.1", "localhost")) as moved:
            with_token_for(settings, moved)
            ctx = make_ctx(tmp_path, repo_spec(moved.url_for("web")))
            with pytest.raises(StepFailed, match="exited with status 128"):
                clone.run(ctx)
    assert any(r.status == 302 for r in moved.requests)
    assert not any(r.authorization_sent for r in other.requests)
    assert TOKEN not in ctx.text()


def test_credential_helpers_of_the_user_config_are_not_asked(tmp_path, repo, settings, monkeypatch, https_server):
    # A helper in ~/.gitconfig would otherwise answer for any host, over http too.
    home = tmp_path / "home"
    home.mkdir()
    leaked = tmp_path / "helper-was-asked"
    (home / ".gitconfig").write_text(f"[credential]\n\thelper = \"!touch {leaked}; echo password=stored #\"\n")
    monkeypatch.setenv("HOME", str(home))
    settings.NORN_GIT_CREDENTIALS = {}
    settings.NORN_GIT_CA_FILE = https_server.ca_file
    ctx = make_ctx(tmp_path, repo_spec(https_server.url_for("web")))
    with pytest.raises(StepFailed):
        clone.run(ctx)
    assert not leaked.exists()
    assert not any(r.authorization_sent for r in https_server.requests)


@pytest.mark.parametrize("prompt, answer", [
    ("Username for 'https://git.example.com:8443': ", "x-access-token"),
    ("Password for 'https://x-access-token@git.example.com:8443': ", TOKEN),
    ("Username for 'https://evil.example': ", None),
    ("Password for 'https://x-access-token@git.example.com:8443.evil.example': ", None),
    ("Password for 'http://x-access-token@git.example.com:8443': ", None),
    ("Password for 'https://x-access-token@git.example.com': ", None),
])
def test_askpass_answers_only_for_the_token_host(tmp_path, settings, prompt, answer):
    settings.NORN_GIT_CREDENTIALS = {"git.example.com:8443": TOKEN}
    env = gitauth.git_env(tmp_path, "https://git.example.com:8443/team/web.git")
    result = subprocess.run([env["GIT_ASKPASS"], prompt], env=env, capture_output=True, text=True)
    if answer is None:
        assert (result.returncode, result.stdout) == (1, "")
    else:
        assert (result.returncode, result.stdout) == (0, answer + "\n")


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
