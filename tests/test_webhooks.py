"""Push webhooks (/hooks/github, /hooks/gitlab, /hooks/gitea): real HTTP posts
signed the way each provider documents, payloads shaped like their push
events, against real git repositories (docs/autodeploy.md)."""

import hashlib
import hmac
import json
import urllib.error
import urllib.request
import uuid

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from apps_registry.models import App
from deployments.hooks_providers import normalize_repo_url
from deployments.models import AutoDeployTrigger, Deployment, Event, WebhookDelivery
from tests.support.git_servers import make_repo

pytestmark = pytest.mark.django_db

SECRET = "global-" + uuid.uuid4().hex
APP_SECRET = "per-app-" + uuid.uuid4().hex


def spec(url, branch="main", auto=True, name="web"):
    return f"""
app: {name}
role: worker
repo:
  url: {url}
  branch: {branch}
  autoDeploy: {"true" if auto else "false"}
"""


@pytest.fixture
def repo(tmp_path):
    repo = make_repo(tmp_path / "repos", "web", {"README": "one\n"})
    repo.first = repo.head()
    repo.second = repo.commit({"README": "two\n"}, "second: say two")
    return repo


@pytest.fixture
def web(make_app, repo, monkeypatch):
    monkeypatch.setenv("NORN_WEBHOOK_SECRET", SECRET)
    make_app("web", spec(repo.file_url))
    return App.objects.get(name="web")


def github_push(url, after, ref="refs/heads/main", before="0" * 40, pusher="octocat", commits=None):
    """Shaped like GitHub's documented "push" event."""
    commits = commits if commits is not None else [{"id": after, "message": "second: say two\n\nbody"}]
    return {
        "ref": ref, "before": before, "after": after, "created": False, "deleted": after == "0" * 40,
        "forced": False, "compare": "https://github.com/acme/web/compare/x...y",
        "repository": {"full_name": "acme/web", "clone_url": url, "html_url": "https://github.com/acme/web",
                       "ssh_url": "git@github.com:acme/web.git", "git_url": "git://github.com/acme/web.git"},
        "pusher": {"name": pusher, "email": f"{pusher}@example.com"},
        "sender": {"login": pusher},
        "head_commit": commits[-1] if commits else None,
        "commits": commits,
    }


def gitlab_push(url, after, ref="refs/heads/main", before="0" * 40, user="jdoe", commits=None):
    """Shaped like GitLab's documented "Push Hook"."""
    commits = commits if commits is not None else [{"id": after, "message": "second: say two\n", "title": "second"}]
    return {
        "object_kind": "push", "event_name": "push", "ref": ref, "before": before, "after": after,
        "checkout_sha": after, "user_name": "Jane Doe", "user_username": user,
        "project": {"path_with_namespace": "acme/web", "git_http_url": url,
                    "git_ssh_url": "git@gitlab.example.com:acme/web.git",
                    "web_url": "https://gitlab.example.com/acme/web"},
        "commits": commits, "total_commits_count": len(commits),
    }


def gitea_push(url, after, ref="refs/heads/main", before="0" * 40, login="gitea"):
    """Shaped like Gitea's (and Forgejo's) documented push event."""
    return {
        "ref": ref, "before": before, "after": after,
        "commits": [{"id": after, "message": "second: say two\n", "author": {"name": "Gitea", "username": login}}],
        "repository": {"full_name": "acme/web", "clone_url": url, "html_url": "https://gitea.example.com/acme/web",
                       "ssh_url": "git@gitea.example.com:acme/web.git"},
        "pusher": {"login": login, "username": login, "full_name": "Gi Tea"},
        "sender": {"login": login},
    }


def signed(provider, body, secret, delivery=None, event=None, forgejo=False):
    """Headers as each provider sends them."""
    delivery = delivery or str(uuid.uuid4())
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if provider == "github":
        return {"HTTP_X_HUB_SIGNATURE_256": "sha256=" + digest, "HTTP_X_GITHUB_DELIVERY": delivery,
                "HTTP_X_GITHUB_EVENT": event or "push"}
    if provider == "gitlab":
        return {"HTTP_X_GITLAB_TOKEN": secret, "HTTP_X_GITLAB_EVENT_UUID": delivery,
                "HTTP_X_GITLAB_EVENT": event or "Push Hook"}
    if forgejo:
        return {"HTTP_X_FORGEJO_SIGNATURE": digest, "HTTP_X_FORGEJO_DELIVERY": delivery,
                "HTTP_X_FORGEJO_EVENT": event or "push"}
    return {"HTTP_X_GITEA_SIGNATURE": digest, "HTTP_X_GITEA_DELIVERY": delivery, "HTTP_X_GITEA_EVENT": event or "push",
            "HTTP_X_GITHUB_EVENT": event or "push"}


def post(provider, payload, secret=SECRET, client=None, **headers):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    all_headers = {**signed(provider, body, secret, headers.pop("delivery", None), headers.pop("event", None),
                            headers.pop("forgejo", False)), **headers}
    client = client or Client(enforce_csrf_checks=True)
    return client.post(f"/hooks/{provider}", body, content_type="application/json", **all_headers)


def test_a_github_push_queues_a_deploy_of_the_pushed_commit(web, repo):
    response = post("github", github_push(repo.file_url, repo.second, before=repo.first))
    assert response.status_code == 202, response.content
    answer = response.json()
    assert answer["apps"][0]["app"] == "web" and answer["apps"][0]["result"] == "queued"
    deployment = Deployment.objects.get()
    assert deployment.ref == repo.second
    assert deployment.requested_via == "webhook" and deployment.requested_by is None
    assert deployment.requested_by_name == "octocat"
    assert deployment.requested_by_label == "octocat via webhook"
    assert str(deployment.public_id) == answer["apps"][0]["deployment"]
    assert Event.objects.filter(deployment=deployment, kind="deploy.queued").count() == 1
    trigger = AutoDeployTrigger.objects.get()
    assert (trigger.deployment, trigger.provider, trigger.source, trigger.action) == (deployment, "github", "webhook",
                                                                                       "queued")
    assert trigger.before == repo.first and trigger.after == repo.second
    assert trigger.commits == [{"sha": repo.second, "subject": "second: say two"}]
    delivery = WebhookDelivery.objects.get()
    assert delivery.status_code == 202 and "queued" in delivery.outcome and SECRET not in delivery.outcome


def test_gitlab_and_gitea_and_forgejo_pushes_are_verified_their_own_way(web, repo):
    third = repo.commit({"README": "three\n"}, "third")
    assert post("gitlab", gitlab_push(repo.file_url, repo.second)).status_code == 202
    assert Deployment.objects.get().requested_by_name == "jdoe"
    # The GitLab token is the secret itself: an HMAC of the body is refused.
    body = json.dumps(gitlab_push(repo.file_url, third)).encode()
    wrong = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = Client().post("/hooks/gitlab", body, content_type="application/json",
                             HTTP_X_GITLAB_TOKEN=wrong, HTTP_X_GITLAB_EVENT="Push Hook")
    assert response.status_code == 403
    Deployment.objects.all().delete()
    assert post("gitea", gitea_push(repo.file_url, repo.second)).status_code == 202
    assert Deployment.objects.get().requested_by_name == "gitea"
    Deployment.objects.all().delete()
    response = post("gitea", gitea_push(repo.file_url, third, login="forgejo-user"), forgejo=True)
    assert response.status_code == 202, response.content
    assert Deployment.objects.get().requested_by_name == "forgejo-user"
    # Gitea's signature is the bare hex digest: GitHub's "sha256=" form is not it.
    body = json.dumps(gitea_push(repo.file_url, repo.first)).encode()
    github_style = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = Client().post("/hooks/gitea", body, content_type="application/json",
                             HTTP_X_GITEA_SIGNATURE=github_style, HTTP_X_GITEA_EVENT="push")
    assert response.status_code == 403


def test_missing_signature_is_401_and_a_bad_one_403_and_nothing_is_queued(web, repo):
    body = json.dumps(github_push(repo.file_url, repo.second)).encode()
    response = Client().post("/hooks/github", body, content_type="application/json", HTTP_X_GITHUB_EVENT="push")
    assert response.status_code == 401
    assert "X-HUB-SIGNATURE-256" in response.json()["error"]
    response = post("github", github_push(repo.file_url, repo.second), secret="not-the-secret")
    assert response.status_code == 403
    assert "NORN_WEBHOOK_SECRET" in response.json()["error"] and SECRET not in response.content.decode()
    # A signature of another body does not pass for this one.
    other = hmac.new(SECRET.encode(), b"{}", hashlib.sha256).hexdigest()
    response = Client().post("/hooks/github", body, content_type="application/json",
                             HTTP_X_HUB_SIGNATURE_256="sha256=" + other, HTTP_X_GITHUB_EVENT="push")
    assert response.status_code == 403
    assert Deployment.objects.count() == 0 and WebhookDelivery.objects.count() == 0


def test_the_apps_own_secret_wins_over_the_global_one(web, repo, monkeypatch):
    monkeypatch.setenv("NORN_WEBHOOK_SECRET_WEB", APP_SECRET)
    response = post("github", github_push(repo.file_url, repo.second), secret=SECRET)
    assert response.status_code == 403
    assert "NORN_WEBHOOK_SECRET_WEB" in response.json()["error"]
    assert post("github", github_push(repo.file_url, repo.second), secret=APP_SECRET).status_code == 202
    assert Deployment.objects.count() == 1


def test_no_secret_at_all_is_refused_naming_the_variable_to_set(make_app, repo, monkeypatch):
    monkeypatch.delenv("NORN_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("NORN_WEBHOOK_SECRET_HELLO_WEB", raising=False)
    make_app("hello-web", spec(repo.file_url, name="hello-web"))
    response = post("github", github_push(repo.file_url, repo.second), secret="anything")
    assert response.status_code == 403
    assert "NORN_WEBHOOK_SECRET_HELLO_WEB" in response.json()["error"]
    assert Deployment.objects.count() == 0


def test_a_repeated_delivery_queues_nothing_more(web, repo):
    payload = github_push(repo.file_url, repo.second)
    assert post("github", payload, delivery="d-1").status_code == 202
    again = post("github", payload, delivery="d-1")
    assert again.status_code == 200 and again.json()["result"] == "already handled"
    assert "queued" in again.json()["outcome"]
    assert Deployment.objects.count() == 1 and WebhookDelivery.objects.count() == 1
    # The same push under a new delivery id finds the deployment that has it.
    response = post("github", payload, delivery="d-2")
    assert response.json()["apps"][0]["result"] == "covered"
    assert Deployment.objects.count() == 1


def test_other_branches_tags_deletions_and_apps_without_autodeploy_are_acknowledged_and_ignored(
    web, repo, make_app, tmp_path
):
    def result(response):
        assert response.status_code == 202, response.content
        return response.json()

    answer = result(post("github", github_push(repo.file_url, repo.second, ref="refs/heads/feature")))
    assert answer["apps"][0]["result"] == "ignored" and "'main'" in answer["apps"][0]["reason"]
    answer = result(post("github", github_push(repo.file_url, repo.second, ref="refs/tags/v1")))
    assert answer["result"] == "ignored" and "tag" in answer["reason"]
    answer = result(post("gitlab", gitlab_push(repo.file_url, "0" * 40, before=repo.second), event="Push Hook"))
    assert answer["result"] == "ignored" and "deleted" in answer["reason"]
    answer = result(post("gitlab", gitlab_push(repo.file_url, repo.second, ref="refs/tags/v1"), event="Tag Push Hook"))
    assert answer["result"] == "ignored"
    answer = result(post("github", github_push(str(tmp_path / "unknown.git"), repo.second)))
    assert answer["result"] == "ignored" and "no app" in answer["reason"]
    answer = result(post("github", github_push(repo.file_url, repo.second), event="issues"))
    assert answer["result"] == "ignored" and "not a push" in answer["reason"]
    assert post("github", github_push(repo.file_url, repo.second), event="ping").json()["result"] == "pong"
    make_app("web", spec(repo.file_url, auto=False))
    answer = result(post("github", github_push(repo.file_url, repo.second)))
    assert answer["apps"][0]["result"] == "ignored" and "autoDeploy" in answer["apps"][0]["reason"]
    assert Deployment.objects.count() == 0


def test_bad_bodies_get_clear_errors_never_a_500(web, repo, settings):
    settings.NORN_WEBHOOK_MAX_BYTES = 2048
    huge = json.dumps(github_push(repo.file_url, repo.second, commits=[{"id": "a" * 40, "message": "x" * 4000}]))
    response = post("github", huge.encode())
    assert response.status_code == 413 and "NORN_WEBHOOK_MAX_BYTES" in response.json()["error"]
    response = post("github", b"this is not json")
    assert response.status_code == 400 and "not JSON" in response.json()["error"]
    assert post("github", b"[1, 2]").status_code == 400
    response = post("github", b"[" * 1020 + b"]" * 1020)
    assert response.status_code == 400 and "nested too deeply" in response.json()["error"]
    response = post("github", {"ref": "refs/heads/main"})
    assert response.status_code == 400 and "repository" in response.json()["error"]
    bad_after = github_push(repo.file_url, "not-a-sha")
    response = post("github", bad_after)
    assert response.status_code == 400 and "after must be a full commit SHA" in response.json()["error"]
    bad_commits = github_push(repo.file_url, repo.second, commits="nope")
    assert post("github", bad_commits).status_code == 400
    nul = github_push(repo.file_url, repo.second, pusher="bad\x00name")
    assert post("github", nul).status_code == 202
    assert Deployment.objects.get().requested_by_name == "badname"
    body = json.dumps(github_push(repo.file_url, repo.first)).encode()
    headers = signed("github", body, SECRET)
    response = Client().post("/hooks/github", body, content_type="application/x-www-form-urlencoded", **headers)
    assert response.status_code == 400 and "application/json" in response.json()["error"]
    assert Client().get("/hooks/github").status_code == 405
    assert Client().post("/hooks/bitbucket", b"{}", content_type="application/json").status_code in (302, 404)


def test_a_body_bigger_than_djangos_form_limit_but_within_ours_is_read(web, repo, settings):
    """Django refuses request.body over DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB);
    a push of many commits may be bigger, up to NORN_WEBHOOK_MAX_BYTES."""
    assert settings.NORN_WEBHOOK_MAX_BYTES == 5 * 1024 * 1024
    payload = github_push(repo.file_url, repo.second)
    payload["padding"] = "x" * (3 * 1024 * 1024)
    response = post("github", payload)
    assert response.status_code == 202, response.content[:300]
    assert response.json()["apps"][0]["result"] == "queued"


def test_a_commit_the_repository_does_not_have_is_refused(web, repo):
    response = post("github", github_push(repo.file_url, "ab" * 20))
    assert response.status_code == 422
    assert "does not exist" in response.json()["apps"][0]["message"]
    assert Deployment.objects.count() == 0


def test_a_refused_delivery_is_acted_on_when_sent_again(web, repo, tmp_path):
    """The push arrived before the commit could be fetched: refused (422);
    the same delivery sent again later deploys it."""
    from tests.support.git_servers import run_git

    work = tmp_path / "work"
    run_git("clone", "--quiet", str(repo.bare_path), str(work))
    run_git("commit", "--quiet", "--allow-empty", "-m", "not pushed yet", cwd=work)
    sha = run_git("rev-parse", "HEAD", cwd=work).stdout.strip()
    payload = github_push(repo.file_url, sha)
    assert post("github", payload, delivery="late-1").status_code == 422
    run_git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=work)
    response = post("github", payload, delivery="late-1")
    assert response.status_code == 202 and response.json()["apps"][0]["result"] == "queued"
    assert WebhookDelivery.objects.get().status_code == 202
    assert post("github", payload, delivery="late-1").json()["result"] == "already handled"
    assert Deployment.objects.get().ref == sha


def test_other_events_without_a_repository_are_ignored(web):
    body = {"zen": "Keep it logically awesome.", "hook_id": 1}
    response = post("github", body, event="github_app_authorization")
    assert response.status_code == 202 and "not a push" in response.json()["reason"]


def test_repository_urls_match_across_https_ssh_and_scp_forms(make_app, monkeypatch):
    monkeypatch.setenv("NORN_WEBHOOK_SECRET", SECRET)
    # Nothing listens on port 9: the commit check cannot reach it and lets
    # the push through, as for a deploy asked by hand.
    make_app("web", spec("http://127.0.0.1:9/Acme/Web.git"))
    payload = github_push("ssh://git@127.0.0.1/acme/web/", "c" * 40)
    assert post("github", payload).json()["apps"][0]["result"] == "queued"
    same = {
        "https://GitHub.com/acme/web.git", "git@github.com:acme/web", "ssh://git@github.com:22/acme/web/",
        "http://user:pw@github.com/acme/web", "git://github.com/acme/web.git",
    }
    assert {normalize_repo_url(url) for url in same} == {"github.com/acme/web"}
    assert normalize_repo_url("https://github.com/acme/web2") != normalize_repo_url("https://github.com/acme/web")
    assert normalize_repo_url("file:///srv/repos/web.git") == normalize_repo_url("/srv/repos/web")


def test_only_the_webhooks_health_login_favicon_and_token_api_need_no_login_or_csrf_token():
    """Every view Django would serve without a session login or a CSRF token,
    by name: a new one must be added here on purpose."""

    def views(patterns, prefix=""):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                yield from views(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                yield prefix + str(entry.pattern), entry.callback

    no_login, no_csrf = set(), set()
    for route, view in views(get_resolver().url_patterns):
        if route.startswith("admin/"):
            continue  # the admin has its own login and CSRF checks
        if getattr(view, "login_required", True) is False:
            no_login.add(route)
        if getattr(view, "csrf_exempt", False):
            no_csrf.add(route)
    hooks = {"hooks/github", "hooks/gitlab", "hooks/gitea"}
    api = {"api/deployments", "api/deployments/<str:text>"}
    # The favicon: a browser asks for it on the login page too.
    # /metrics: Prometheus' scrape, by bearer token (NORN_METRICS_TOKEN), a GET only.
    assert no_login == {"healthz", "login/", "favicon.ico", "metrics", *api, *hooks}
    assert no_csrf == {*api, *hooks}


@pytest.mark.django_db(transaction=True)
def test_a_push_through_a_real_daphne(make_app, repo, apps_dir, tmp_path, monkeypatch):
    from tests.support.servers import Daphne

    make_app("web", spec(repo.file_url))
    body = json.dumps(gitea_push(repo.file_url, repo.second)).encode()
    headers = {"Content-Type": "application/json", "X-Gitea-Event": "push", "X-Gitea-Delivery": "real-1",
               "X-Gitea-Signature": hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()}
    env = {"NORN_APPS_DIR": str(apps_dir), "NORN_WEBHOOK_SECRET_WEB": APP_SECRET, "NORN_WORK_DIR": str(tmp_path / "w")}
    with Daphne(tmp_path / "daphne.log", tmp_path / "access.log", extra_env=env) as daphne:
        request = urllib.request.Request(f"{daphne.url}/hooks/gitea", data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 202
            assert json.load(response)["apps"][0]["result"] == "queued"
        tampered = urllib.request.Request(f"{daphne.url}/hooks/gitea", data=body + b" ", headers=headers,
                                          method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(tampered, timeout=30)
        assert refused.value.code == 403
        assert APP_SECRET not in daphne.output() and APP_SECRET not in daphne.access_log()
    deployment = Deployment.objects.get()
    assert deployment.ref == repo.second and deployment.requested_via == "webhook"
