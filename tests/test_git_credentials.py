"""Git tokens are bound to hosts: NORN_GIT_CREDENTIALS and NORN_GIT_TOKEN(_HOST)
are read and checked at start without ever printing a token, and a deploy
request's ref check (ls-remote / fetch) follows the clone step's rules: a
token only for an https:// URL of its own host, never in argv, logs or events."""

import logging
import os
import stat

import pytest

from deployments import gitauth
from deployments.models import Deployment, Event, Step
from deployments.requests import DeployRequestError, request_deployment
from deployments.steps import StepFailed
from tests.support.git_servers import GitHttpServer, make_repo
from tests.test_settings import run_manage

TOKEN = "ghp_" + "HostB0und" * 3


@pytest.mark.parametrize("env, expected", [
    ({"NORN_GIT_CREDENTIALS": TOKEN}, "NORN_GIT_CREDENTIALS entry 1 is not HOST=TOKEN"),
    ({"NORN_GIT_CREDENTIALS": f"github.com={TOKEN},{TOKEN}"}, "NORN_GIT_CREDENTIALS entry 2 is not HOST=TOKEN"),
    ({"NORN_GIT_CREDENTIALS": "github.com="}, "NORN_GIT_CREDENTIALS entry 1 is not HOST=TOKEN"),
    ({"NORN_GIT_CREDENTIALS": f"https://github.com={TOKEN}"}, "NORN_GIT_CREDENTIALS entry 1: 'https://github.com' is not a host; use HOST or HOST:PORT"),
    ({"NORN_GIT_CREDENTIALS": f"git.example.com:70000={TOKEN}"}, "'git.example.com:70000' is not a host"),
    ({"NORN_GIT_CREDENTIALS": f"GitHub.com={TOKEN},github.com:443={TOKEN}x"}, "host 'github.com' is given a token twice; keep one"),
    ({"NORN_GIT_TOKEN": TOKEN, "NORN_GIT_CREDENTIALS": f"github.com={TOKEN}x"}, "NORN_GIT_TOKEN_HOST: host 'github.com' is given a token twice"),
    ({"NORN_GIT_TOKEN": TOKEN, "NORN_GIT_TOKEN_HOST": "git example"}, "NORN_GIT_TOKEN_HOST: 'git example' is not a host"),
    ({"NORN_GIT_CA_FILE": "/nonexistent/ca.pem"}, "NORN_GIT_CA_FILE='/nonexistent/ca.pem' is not a file"),
])
def test_bad_git_credentials_stop_norn_without_printing_the_token(env, expected):
    result = run_manage("check", **env)
    assert result.returncode == 2
    assert "Norn is misconfigured: " in result.stderr and expected in result.stderr
    assert "Traceback" not in result.stderr
    assert "HostB0und" not in result.stderr + result.stdout


def test_credentials_are_read_per_host_and_the_token_defaults_to_github():
    result = run_manage(
        "shell", "-c",
        "from django.conf import settings as s; print(sorted((h, len(t)) for h, t in s.NORN_GIT_CREDENTIALS.items()))",
        NORN_GIT_CREDENTIALS=f" Git.Example.com:8443={TOKEN}, gitlab.example.com:443=glpat-x=y ",
        NORN_GIT_TOKEN=TOKEN,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == (
        f"[('git.example.com:8443', {len(TOKEN)}), ('github.com', {len(TOKEN)}), ('gitlab.example.com', 9)]"
    )


@pytest.mark.parametrize("url, token", [
    ("https://github.com/team/web.git", TOKEN),
    ("https://GITHUB.com:443/team/web.git", TOKEN),
    ("https://x-access-token@github.com/team/web.git", TOKEN),
    ("http://github.com/team/web.git", None),
    ("ssh://git@github.com/team/web.git", None),
    ("git@github.com:team/web.git", None),
    ("git://github.com/team/web.git", None),
    ("file:///srv/git/web.git", None),
    ("/srv/git/web.git", None),
    ("https://github.com:8443/team/web.git", None),
    ("https://github.com.evil.example/team/web.git", None),
    ("https://evil.example/github.com/team/web.git", None),
    ("https://[::1]:99999/x.git", None),
])
def test_a_token_goes_only_with_an_https_url_of_its_host(settings, url, token):
    settings.NORN_GIT_CREDENTIALS = {"github.com": TOKEN}
    assert gitauth.token_for(url) == token


def test_no_token_means_no_askpass_and_helpers_still_cleared(settings, tmp_path):
    settings.NORN_GIT_CREDENTIALS = {"github.com": TOKEN}
    env = gitauth.git_env(tmp_path, "http://github.com/team/web.git")
    assert "GIT_ASKPASS" not in env and TOKEN not in env.values()
    assert not (tmp_path / "askpass.sh").exists()
    config = {env[f"GIT_CONFIG_KEY_{n}"]: env[f"GIT_CONFIG_VALUE_{n}"] for n in range(int(env["GIT_CONFIG_COUNT"]))}
    assert config["credential.helper"] == ""
    with_token = gitauth.git_env(tmp_path, "https://github.com/team/web.git")
    assert with_token["NORN_GIT_PASSWORD"] == TOKEN and with_token["NORN_GIT_HOST"] == "github.com"
    assert "http.followRedirects" in with_token.values()
    assert gitauth.secrets() == [TOKEN]  # what redactors mask


# --- the ref check at request time --------------------------------------------


@pytest.fixture
def served(tmp_path):
    repo = make_repo(tmp_path / "repos", "gitapp", {"README": "x\n"})
    with GitHttpServer(tmp_path / "repos", token=TOKEN, tls=True) as https, \
            GitHttpServer(tmp_path / "repos", token=TOKEN) as http:
        yield repo, https, http


@pytest.fixture
def argv_log(tmp_path, monkeypatch):
    shims = tmp_path / "shims"
    shims.mkdir()
    log = tmp_path / "argv.log"
    shim = shims / "git"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "git $*" >> {log}\nexec /usr/bin/git "$@"\n')
    shim.chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    log.touch()
    return log


@pytest.mark.django_db(transaction=True)
def test_ref_check_uses_the_token_of_its_https_host_only(make_app, norn_dirs, settings, served, argv_log, caplog):
    repo, https, _ = served
    settings.NORN_GIT_CREDENTIALS = {https.host_port: TOKEN}
    settings.NORN_GIT_CA_FILE = https.ca_file
    make_app("gitapp", f"app: gitapp\nrole: worker\nrepo:\n  url: {https.url_for('gitapp')}\n")
    with caplog.at_level(logging.DEBUG):
        # Only an authenticated ls-remote / fetch can tell a missing ref apart.
        with pytest.raises(DeployRequestError, match="branch 'nope' does not exist"):
            request_deployment("gitapp", "nope")
        with pytest.raises(DeployRequestError, match="commit deadbeef does not exist"):
            request_deployment("gitapp", "deadbeef")
        request_deployment("gitapp", repo.head()[:10])
    assert any(r.authorized for r in https.requests)
    assert TOKEN not in argv_log.read_text() and TOKEN not in caplog.text


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["http", "other host name"])
def test_ref_check_sends_no_token_over_http_or_to_another_host(make_app, norn_dirs, settings, served, where, caplog):
    _, https, http = served
    settings.NORN_GIT_CREDENTIALS = {https.host_port: TOKEN, http.host_port: TOKEN}
    settings.NORN_GIT_CA_FILE = https.ca_file
    server, url = (http, http.url_for("gitapp")) if where == "http" else (https, https.url_for("gitapp", host="localhost"))
    make_app("gitapp", f"app: gitapp\nrole: worker\nrepo:\n  url: {url}\n")
    with caplog.at_level(logging.WARNING):
        # Unauthenticated, the remote cannot answer: the request goes ahead
        # and the clone step will fail or fall back, saying so.
        deployment = request_deployment("gitapp", "nope")
    assert deployment.status == Deployment.Status.QUEUED
    assert "could not list branches" in caplog.text
    assert server.requests and not any(r.authorization_sent for r in server.requests)


# --- a whole deployment: the token is nowhere ----------------------------------


@pytest.mark.django_db(transaction=True)
def test_token_is_in_no_argv_log_event_or_step_output_after_a_deploy(
    make_app, deploy_now, settings, served, argv_log, caplog, monkeypatch
):
    _, https, _ = served
    settings.NORN_GIT_CREDENTIALS = {https.host_port: TOKEN}
    settings.NORN_GIT_CA_FILE = https.ca_file
    # The clone is what uses the token; the steps after it need not run.
    from deployments.steps import build

    def stop_after_clone(ctx):
        raise StepFailed("stopping after the clone")

    monkeypatch.setattr(build, "run", stop_after_clone)
    make_app("gitapp", f"app: gitapp\nrole: worker\nrepo:\n  url: {https.url_for('gitapp')}\nbuild: {{}}\n")
    with caplog.at_level(logging.DEBUG):
        deployment = deploy_now("gitapp")
    assert deployment.steps.get(name="clone").status == "succeeded", deployment.steps.get(name="clone").output
    assert any(r.authorized for r in https.requests)
    assert TOKEN not in argv_log.read_text()
    assert TOKEN not in caplog.text
    for row in Event.objects.all():
        assert TOKEN not in str(row.payload)
    for step in Step.objects.all():
        assert TOKEN not in step.output + step.error
    assert TOKEN not in Deployment.objects.get(pk=deployment.pk).error

