"""The command line's HTTP API (deployments/api.py): an API token is the only
way in, the dashboard's permissions apply, and every bad request gets a JSON
error that says what is wrong, never a 500 or a login page."""

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from apps_registry.models import App
from deployments import transitions
from deployments.models import ApiToken, Deployment

pytestmark = pytest.mark.django_db


def token_for(username, *codenames, active=True):
    user = User.objects.create_user(username, is_active=active)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user, ApiToken.issue(user, "cli")[1]


@pytest.fixture
def deployer():
    return token_for("deployer", "view_deployment", "start_deployment")


@pytest.fixture
def api():
    # CSRF checks on, as in a browser: the token is the login, no CSRF token needed.
    return Client(enforce_csrf_checks=True)


def post(api, token, body, raw=None):
    headers = {"HTTP_AUTHORIZATION": f"Token {token}"} if token else {}
    data = raw if raw is not None else json.dumps(body)
    return api.post("/api/deployments", data, content_type="application/json", **headers)


def test_a_deploy_request_queues_it_for_the_tokens_user(api, deployer, make_app):
    make_app("web", "app: web\nrole: worker\n")
    user, token = deployer
    response = post(api, token, {"app": "web", "ref": "HEAD", "name": "alice"})
    assert response.status_code == 201, response.content
    answer = response.json()
    deployment = Deployment.objects.get()
    assert answer == {
        "id": str(deployment.public_id), "app": "web", "ref": "HEAD", "kind": "deploy", "status": "queued",
        "finished": False, "ahead": 0, "url": f"/deployments/{deployment.public_id}/",
        "commit_sha": None, "commit_subject": "", "commit_author": "", "commit_time": None, "failure_reason": "",
    }
    assert (deployment.requested_by, deployment.requested_by_name, deployment.requested_via) == (user, "alice", "cli")


@pytest.mark.parametrize(
    "body, raw, status, error",
    [
        ({"app": "nope"}, None, 400, "unknown app 'nope'; known apps: web"),
        ({"app": "web", "ref": "bad..ref"}, None, 400, "'bad..ref' is not a valid git ref"),
        ({}, None, 400, "'app' is missing"),
        ({"app": ["web"]}, None, 400, "'app' must be a string"),
        ({"app": "web", "ref": 7}, None, 400, "'ref' must be a string"),
        (None, "not json", 400, "the request body is not JSON"),
        (None, "[1, 2]", 400, "must be a JSON object"),
        (None, b"\xff\xfe", 400, "the request body is not JSON"),
        (None, json.dumps({"app": "web", "name": "x" * 20000}), 413, "over 16384 bytes"),
    ],
    ids=["unknown app", "bad ref", "no app", "app not a string", "ref not a string", "not JSON", "not an object",
         "not UTF-8", "too large"],
)
def test_bad_requests_get_a_json_error_and_queue_nothing(api, deployer, make_app, body, raw, status, error):
    make_app("web", "app: web\nrole: worker\n")
    response = post(api, deployer[1], body, raw=raw)
    assert response.status_code == status, response.content
    assert error in response.json()["error"]
    assert not Deployment.objects.exists()


def test_a_nul_anywhere_is_refused_before_any_query(api, deployer, make_app):
    make_app("web", "app: web\nrole: worker\n")
    response = post(api, deployer[1], {"app": "web\x00"})
    assert response.status_code == 400
    assert not Deployment.objects.exists()


@pytest.mark.parametrize(
    "authorization, status",
    [
        (None, 401),
        ("Token norn_" + "W" * 43, 401),
        ("Bearer {token}", 401),
        ("Token {token}\x00", 401),
    ],
    ids=["none", "unknown token", "other scheme", "NUL"],
)
def test_no_valid_token_no_entry(api, deployer, make_app, authorization, status):
    make_app("web", "app: web\nrole: worker\n")
    headers = {"HTTP_AUTHORIZATION": authorization.format(token=deployer[1])} if authorization else {}
    response = api.post("/api/deployments", json.dumps({"app": "web"}), content_type="application/json", **headers)
    assert response.status_code == status
    assert not Deployment.objects.exists()


def test_a_session_is_no_token(api, make_app):
    make_app("web", "app: web\nrole: worker\n")
    api.force_login(User.objects.create_superuser("root", password="x"))
    response = post(api, None, {"app": "web"})
    assert response.status_code == 401
    assert "NORN_API_TOKEN" in response.json()["error"]
    assert not Deployment.objects.exists()


def test_the_dashboards_permissions_apply(api, make_app):
    make_app("web", "app: web\nrole: worker\n")
    _, viewer = token_for("viewer", "view_deployment")
    _, inactive = token_for("gone", "view_deployment", "start_deployment", active=False)
    refused = post(api, viewer, {"app": "web"})
    assert refused.status_code == 403 and "viewer" in refused.json()["error"]
    assert post(api, inactive, {"app": "web"}).status_code == 401
    assert not Deployment.objects.exists()


def test_a_deployment_carries_its_commit_context_and_why(api, make_app):
    import datetime

    make_app("web", "app: web\nrole: worker\n")
    deployment = transitions.create(App.objects.get(name="web"), "main", name="tester")
    Deployment.objects.filter(pk=deployment.pk).update(
        status="failed", failed_step="test", error="test failed: sh exited with status 2:\nmore",
        commit_sha="c" * 40, commit_subject="Tidy up", commit_author="Grace Hopper",
        commit_time=datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
    _, viewer = token_for("viewer", "view_deployment")
    found = api.get(f"/api/deployments/{deployment.public_id}", HTTP_AUTHORIZATION=f"Token {viewer}").json()
    assert {key: found[key] for key in ("commit_sha", "commit_subject", "commit_author", "commit_time",
                                        "failure_reason", "kind")} == {
        "commit_sha": "c" * 40, "commit_subject": "Tidy up", "commit_author": "Grace Hopper",
        "commit_time": "2026-01-02T03:04:05Z", "failure_reason": "test: sh exited with status 2:", "kind": "deploy"}


def test_a_deployment_is_found_by_its_id_or_a_prefix(api, make_app):
    make_app("web", "app: web\nrole: worker\n")
    app = App.objects.get(name="web")
    first = transitions.create(app, "HEAD", name="tester")
    second = transitions.create(app, "HEAD", name="tester")
    _, viewer = token_for("viewer", "view_deployment")
    headers = {"HTTP_AUTHORIZATION": f"Token {viewer}"}

    by_uuid = api.get(f"/api/deployments/{second.public_id}", **headers).json()
    assert (by_uuid["id"], by_uuid["status"], by_uuid["ahead"]) == (str(second.public_id), "queued", 1)
    assert "events" not in api.get(f"/api/deployments/{second.public_id}?events=1", **headers).json()
    assert api.get(f"/api/deployments/{str(first.public_id)[:8]}", **headers).json()["id"] == str(first.public_id)

    transitions.request_cancel(first, "tester")
    ended = api.get(f"/api/deployments/{first.public_id}?events=1", **headers).json()
    assert ended["finished"] is True
    assert (ended["status"], ended["failure_reason"]) == ("cancelled", "cancelled by tester")
    assert [(e["seq"], e["event"]) for e in ended["events"]] == [
        (1, "deploy.queued"), (2, "deploy.cancelled"), (3, "deploy.failed")]
    assert ended["events"][-1]["payload"]["status"] == "cancelled"

    assert api.get("/api/deployments/0123abcd", **headers).status_code == 404
    assert "not a deployment id" in api.get("/api/deployments/abc", **headers).json()["error"]
    assert "not a deployment id" in api.get("/api/deployments/" + "a" * 5000, **headers).json()["error"]
    assert api.get(f"/api/deployments/{first.public_id}").status_code == 401
    assert api.post(f"/api/deployments/{first.public_id}", **headers).status_code == 405
