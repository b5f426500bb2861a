"""Tests for tests/support/git_servers.py: the real git servers other tests rely on.

Plain pytest, no Django: these must pass with and without ``-p no:django``.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    from tests.support.git_servers import (
        GitHttpServer,
        GitRepo,
        SshGitServer,
        generate_ssh_keypair,
        git_ssh_command,
        make_repo,
        make_test_ca,
        run_git,
        write_askpass_script,
    )
except ModuleNotFoundError:  # run via the `pytest` script, repo root not on sys.path
    from support.git_servers import (  # type: ignore[no-redef]
        GitHttpServer,
        GitRepo,
        SshGitServer,
        generate_ssh_keypair,
        git_ssh_command,
        make_repo,
        run_git,
        write_askpass_script,
    )

# Random per run so a match in any recorded URL can only be a real leak.
TOKEN = "norn-test-token-" + secrets.token_hex(12)
TOKEN_ENV = "NORN_TEST_GIT_TOKEN"


@dataclass
class Repos:
    root: Path
    app: GitRepo
    old_sha: str  # first commit on main: README says v1
    new_sha: str  # tip of main: README says v2


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    root = tmp_path / "repos"
    app = make_repo(root, "app", {"README.md": "v1\n", "deploy/app.yaml": "replicas: 1\n"})
    old_sha = app.head()
    new_sha = app.commit({"README.md": "v2\n"}, message="second")
    return Repos(root=root, app=app, old_sha=old_sha, new_sha=new_sha)


@pytest.fixture
def http_server(repos: Repos):
    with GitHttpServer(repos.root, TOKEN) as server:
        yield server


@pytest.fixture
def https_server(repos: Repos):
    with GitHttpServer(repos.root, TOKEN, tls=True) as server:
        yield server


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return generate_ssh_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def ssh_server(repos: Repos, keypair: tuple[Path, str]):
    with SshGitServer(repos.root, keypair[1]) as server:
        yield server


def askpass_env(tmp_path: Path, token: str) -> dict[str, str]:
    """Client env handing the token to git via GIT_ASKPASS + an env var only."""
    script = write_askpass_script(tmp_path, token_env=TOKEN_ENV)
    assert token not in script.read_text()
    return {"GIT_ASKPASS": str(script), TOKEN_ENV: token}


def ssh_env(tmp_path: Path, server: SshGitServer, private_key: Path) -> dict[str, str]:
    known_hosts = server.write_known_hosts(tmp_path / "known_hosts")
    return {"GIT_SSH_COMMAND": git_ssh_command(private_key, known_hosts)}


def with_protocol(env: dict[str, str], version: str) -> dict[str, str]:
    """Force a git wire-protocol version (v0 is stricter about fetching by sha)."""
    return {**env, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "protocol.version", "GIT_CONFIG_VALUE_0": version}


def assert_shallow_fetch_of_old_commit(url: str, repos: Repos, work: Path, env: dict[str, str]) -> None:
    """What Norn does to deploy a pinned sha: shallow clone, then shallow fetch of that sha."""
    run_git("clone", "--quiet", "--depth", "1", "--branch", "main", url, str(work), env=env)
    assert run_git("rev-parse", "HEAD", cwd=work).stdout.strip() == repos.new_sha
    # The shallow clone really lacks the older commit...
    assert run_git("cat-file", "-e", f"{repos.old_sha}^{{commit}}", cwd=work, check=False).returncode != 0
    # ...and the server hands it over when asked for it by sha.
    run_git("fetch", "--quiet", "--depth", "1", "origin", repos.old_sha, cwd=work, env=env)
    assert run_git("rev-parse", "FETCH_HEAD", cwd=work).stdout.strip() == repos.old_sha
    assert run_git("show", f"{repos.old_sha}:README.md", cwd=work).stdout == "v1\n"


# ---------------------------------------------------------------------------
# make_repo / GitRepo
# ---------------------------------------------------------------------------


def test_make_repo_builds_bare_repo_with_history_and_branches(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "svc", {"a.txt": "one\n", "bin/blob": b"\x00\x01\xff"})
    assert repo.bare_path == tmp_path / "svc.git"
    assert run_git("--git-dir", str(repo.bare_path), "rev-parse", "--is-bare-repository").stdout.strip() == "true"
    first = repo.head("main")

    second = repo.commit({"b.txt": "two\n"}, message="add b", delete=["a.txt"])
    feature = repo.commit({"c.txt": "three\n"}, message="feature work", branch="feature")
    assert repo.head() == second != first
    assert repo.head("feature") == feature
    assert sorted(repo.branches()) == ["feature", "main"]

    work = tmp_path / "clone"
    run_git("clone", "--quiet", repo.file_url, str(work))
    assert repo.file_url.startswith("file:///")
    assert sorted(p.name for p in work.iterdir() if p.name != ".git") == ["b.txt", "bin"]
    assert (work / "bin" / "blob").read_bytes() == b"\x00\x01\xff"
    # The feature branch forked from main's tip at the time.
    assert run_git("rev-parse", f"{feature}^", cwd=work).stdout.strip() == second

    identity = run_git("log", "-1", "--format=%an <%ae> / %cn <%ce>", first, cwd=work).stdout.strip()
    assert identity == "Norn Test <norn-test@example.invalid> / Norn Test <norn-test@example.invalid>"
    assert run_git("log", "-1", "--format=%s", first, cwd=work).stdout.strip() == "initial"


def test_make_repo_allows_fetching_any_sha(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "svc", {"a": "1"})
    config = run_git("--git-dir", str(repo.bare_path), "config", "--list", "--local").stdout
    assert "uploadpack.allowreachablesha1inwant=true" in config
    assert "uploadpack.allowanysha1inwant=true" in config


def test_make_repo_rejects_paths_outside_the_work_tree(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_repo(tmp_path, "bad", {"../escape": "x"})
    repo = make_repo(tmp_path, "good", {"a": "1"})
    with pytest.raises(ValueError):
        repo.commit({"/etc/passwd": "x"})
    with pytest.raises(FileExistsError):
        make_repo(tmp_path, "good", {"a": "1"})


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------


def test_http_challenges_without_credentials_and_serves_with_them(http_server: GitHttpServer) -> None:
    url = http_server.url_for("app") + "/info/refs?service=git-upload-pack"
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(url, timeout=10)
    assert excinfo.value.code == 401
    assert excinfo.value.headers["WWW-Authenticate"] == 'Basic realm="git"'

    auth = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/x-git-upload-pack-advertisement"
        assert b"# service=git-upload-pack" in response.read()
    assert [r.authorized for r in http_server.requests] == [False, True]
    assert [r.authorization_sent for r in http_server.requests] == [False, True]


def test_http_clone_with_token_from_askpass(http_server: GitHttpServer, repos: Repos, tmp_path: Path) -> None:
    url = http_server.url_for("app")
    assert url == f"http://127.0.0.1:{http_server.port}/app.git"
    work = tmp_path / "clone"
    run_git("clone", "--quiet", url, str(work), env=askpass_env(tmp_path, TOKEN))

    assert (work / "README.md").read_text() == "v2\n"
    assert (work / "deploy" / "app.yaml").read_text() == "replicas: 1\n"
    # git only sends credentials after being challenged.
    assert http_server.requests[0].authorized is False
    assert any(r.authorized and r.method == "POST" for r in http_server.requests)
    assert {r.username for r in http_server.requests if r.authorized} == {"x-access-token"}
    # Protocol v2 reached the backend (Git-Protocol header passed through).
    assert any(r.git_protocol == "version=2" for r in http_server.requests)
    for record in http_server.requests:
        assert TOKEN not in record.path
    # The origin URL stored in the clone carries no credentials either.
    assert run_git("remote", "get-url", "origin", cwd=work).stdout.strip() == url


def test_http_wrong_token_fails_with_auth_error(http_server: GitHttpServer, tmp_path: Path) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    result = run_git(
        "clone", http_server.url_for("app"), str(tmp_path / "clone"),
        env=askpass_env(tmp_path, wrong), check=False,
    )
    assert result.returncode != 0
    assert "Authentication failed" in result.stderr
    assert http_server.requests and not any(r.authorized for r in http_server.requests)
    assert all(r.status == 401 for r in http_server.requests)
    for record in http_server.requests:
        assert wrong not in record.path and TOKEN not in record.path


@pytest.mark.parametrize("protocol", ["0", "2"])
def test_http_shallow_fetch_of_older_sha(
    http_server: GitHttpServer, repos: Repos, tmp_path: Path, protocol: str
) -> None:
    env = with_protocol(askpass_env(tmp_path, TOKEN), protocol)
    assert_shallow_fetch_of_old_commit(http_server.url_for("app"), repos, tmp_path / "clone", env)
    assert all(r.status == 200 for r in http_server.requests if r.authorized)
    expected_header = "version=2" if protocol == "2" else None
    assert {r.git_protocol for r in http_server.requests} == {expected_header}
    for record in http_server.requests:
        assert TOKEN not in record.path


def test_http_push_streams_chunked_request_body(http_server: GitHttpServer, repos: Repos, tmp_path: Path) -> None:
    env = askpass_env(tmp_path, TOKEN)
    work = tmp_path / "clone"
    run_git("clone", "--quiet", http_server.url_for("app"), str(work), env=env)
    # Incompressible and larger than git's 1 MiB http.postBuffer, so the
    # pack goes up with Transfer-Encoding: chunked.
    (work / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    run_git("add", "big.bin", cwd=work)
    run_git("commit", "--quiet", "-m", "big", cwd=work)
    run_git("push", "--quiet", "origin", "HEAD:main", cwd=work, env=env)

    assert repos.app.head() == run_git("rev-parse", "HEAD", cwd=work).stdout.strip()
    assert any(r.chunked_body and r.status == 200 for r in http_server.requests)


def test_http_server_stops_listening(repos: Repos) -> None:
    server = GitHttpServer(repos.root, TOKEN).start()
    port = server.port
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# ---------------------------------------------------------------------------
# HTTPS
# ---------------------------------------------------------------------------


def test_https_clone_trusting_the_test_ca(https_server: GitHttpServer, repos: Repos, tmp_path: Path) -> None:
    url = https_server.url_for("app")
    assert url == f"https://127.0.0.1:{https_server.port}/app.git"
    assert https_server.host_port == f"127.0.0.1:{https_server.port}"
    env = {**askpass_env(tmp_path, TOKEN), "GIT_SSL_CAINFO": str(https_server.ca_file)}
    run_git("clone", "--quiet", url, str(tmp_path / "clone"), env=env)
    assert (tmp_path / "clone" / "README.md").read_text() == "v2\n"
    assert any(r.authorized and r.method == "POST" for r in https_server.requests)
    # The certificate names localhost too: the same server under another host name.
    run_git("ls-remote", https_server.url_for("app", host="localhost"), env=env)


def test_https_is_refused_without_trusting_the_test_ca(https_server: GitHttpServer, tmp_path: Path) -> None:
    other_ca = make_test_ca(tmp_path / "other-ca")
    for ca_env in ({}, {"GIT_SSL_CAINFO": str(other_ca.ca_file)}):
        result = run_git("ls-remote", https_server.url_for("app"), env={**askpass_env(tmp_path, TOKEN), **ca_env}, check=False)
        assert result.returncode != 0
        assert "certificate" in result.stderr
    # The handshake failed before any HTTP request, so no credential went out.
    assert https_server.requests == []


def test_plain_http_client_gets_nothing_from_the_https_server(https_server: GitHttpServer) -> None:
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{https_server.port}/app.git/info/refs", timeout=5)
    assert https_server.requests == []


def test_redirecting_server_sends_every_request_elsewhere(repos: Repos, https_server: GitHttpServer) -> None:
    target = https_server.base_url
    with GitHttpServer(repos.root, TOKEN, redirect_to=target) as moved:
        url = moved.url_for("app") + "/info/refs?service=git-upload-pack"
        request = urllib.request.Request(url, headers={"Authorization": "Basic eDp5"})

        class NoFollow(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: object, **kwargs: object) -> None:
                return None

        with pytest.raises(urllib.error.HTTPError) as excinfo:
            urllib.request.build_opener(NoFollow).open(request, timeout=10)
    assert excinfo.value.code == 302
    assert excinfo.value.headers["Location"] == f"{target}/app.git/info/refs?service=git-upload-pack"
    assert [(r.status, r.authorization_sent) for r in moved.requests] == [(302, True)]


# ---------------------------------------------------------------------------
# SSH
# ---------------------------------------------------------------------------


def test_generate_ssh_keypair(tmp_path: Path) -> None:
    private, public = generate_ssh_keypair(tmp_path)
    assert public.startswith("ssh-ed25519 ")
    assert (private.stat().st_mode & 0o777) == 0o600
    assert "PRIVATE KEY" in private.read_text()


def test_ssh_clone_with_authorized_key(
    ssh_server: SshGitServer, repos: Repos, keypair: tuple[Path, str], tmp_path: Path
) -> None:
    url = ssh_server.url_for("app")
    assert url == f"ssh://{ssh_server.user}@127.0.0.1:{ssh_server.port}{repos.app.bare_path.resolve()}"
    assert ssh_server.known_hosts_line.startswith(f"[127.0.0.1]:{ssh_server.port} ssh-ed25519 ")

    env = ssh_env(tmp_path, ssh_server, keypair[0])
    env["GIT_TRACE_PACKET"] = "1"  # to see which protocol version was spoken
    work = tmp_path / "clone"
    result = run_git("clone", url, str(work), env=env)
    assert (work / "README.md").read_text() == "v2\n"
    # sshd's AcceptEnv GIT_PROTOCOL lets the v2 request through.
    assert "version 2" in result.stderr, ssh_server.log_text()


def test_ssh_wrong_key_is_refused(ssh_server: SshGitServer, tmp_path: Path) -> None:
    other_key, _ = generate_ssh_keypair(tmp_path / "other")
    result = run_git(
        "clone", ssh_server.url_for("app"), str(tmp_path / "clone"),
        env=ssh_env(tmp_path, ssh_server, other_key), check=False,
    )
    assert result.returncode != 0
    assert "Permission denied (publickey)" in result.stderr


def test_ssh_unknown_host_key_is_refused(
    ssh_server: SshGitServer, keypair: tuple[Path, str], tmp_path: Path
) -> None:
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    result = run_git(
        "clone", ssh_server.url_for("app"), str(tmp_path / "clone"),
        env={"GIT_SSH_COMMAND": git_ssh_command(keypair[0], empty_known_hosts)}, check=False,
    )
    assert result.returncode != 0
    assert "Host key verification failed" in result.stderr


@pytest.mark.parametrize("protocol", ["0", "2"])
def test_ssh_shallow_fetch_of_older_sha(
    ssh_server: SshGitServer, repos: Repos, keypair: tuple[Path, str], tmp_path: Path, protocol: str
) -> None:
    env = with_protocol(ssh_env(tmp_path, ssh_server, keypair[0]), protocol)
    assert_shallow_fetch_of_old_commit(ssh_server.url_for("app"), repos, tmp_path / "clone", env)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry))
    return found


def test_ssh_stop_leaves_no_processes(repos: Repos, keypair: tuple[Path, str], tmp_path: Path) -> None:
    server = SshGitServer(repos.root, keypair[1]).start()
    try:
        pid, port = server.pid, server.port
        config_dir = str(server.state_dir)
        run_git("ls-remote", server.url_for("app"), env=ssh_env(tmp_path, server, keypair[0]))
        assert pid in _processes_mentioning(config_dir)
    finally:
        server.stop()
    assert _processes_mentioning(config_dir) == []
    assert not Path(config_dir).exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
