"""No input gets a 500: every URL pattern, walked with hostile values, anonymous and logged in.

The patterns are read from the resolver, so a URL added later is walked too.
Each answer must be below 500; what is refused is logged as one line.
"""

import logging
import re
import uuid

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from deployments.models import Snapshot
from tests.support.dashboard import make_deployment, web  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

# Path segments, as a client would send them (percent-encoded where needed).
HOSTILE_SEGMENTS = [
    "%00", "x%00y", "%ff%fe", "%C0%AF", "é", "😀", "%E2%80%AE", "\u202e", "a" * 3000,
    "-1", "0", "99999999999999999999999", "1e999", "%2e%2e", "%20", "'\"<>", "%25",
    "00000000-0000-0000-0000-000000000000", "%0d%0aSet-Cookie:x=1",
]
HOSTILE_QUERIES = [
    "page=abc", "page=-1", "page=99999999999", "page=0", "page=%00", "page=1e999",
    "page=" + "9" * 5000, "ref=%00", "ref=" + "a" * 5000, "q=%00", "q=%ff", "o=abc", "o=99", "o=-0.x",
    "p=abc", "p=-5", "e=1", "status__exact=%00", "id__gt=abc", "id__in=a,b", "_changelist_filters=%00",
    "after=%00", "next=%00", "next=http://evil.example/", "all=", "%00=1", "_popup=1&_to_field=password",
    "app__id__exact=%00", "queued_at__gte=x", "queued_at__day=99",
]
HOSTILE_FORMS = [
    {"ref": "\x00", "kind": "\x00", "to": "\x00", "confirm": "yes", "step": "\x00", "action": "\x00",
     "username": "\x00", "password": "\x00", "name": "\x00", "next": "\x00"},
    {"ref": "a" * 5000, "kind": "sha", "to": "not-a-uuid", "confirm": "yes", "step": "clone",
     "action": "succeed", "state": "{{{", "action_checkbox": "x", "index": "-1", "_selected_action": "x"},
    {"ref": "é😀\u202e", "kind": "branch", "to": str(uuid.uuid4()), "step": "nope", "action": "delete_selected",
     "_selected_action": ["99999999999999999999999", "abc"], "post": "yes"},
]
RAW_PATHS = [
    "/%00", "/apps/%00/", "/apps/%00/deploy", "/" + "a" * 20000, "/%ff/", "/..%2f..%2fetc/passwd",
    "/deployments/%00/", "/snapshots/99999999999999999999999/restore", "/admin/%00/", "/admin/auth/user/%00/change/",
    "/static/%00", "/static/../settings.py", "/healthz%00", "/login/%00", "/ws/", "/ws/nope/",
]

GROUP = re.compile(r"<(?:(?P<conv>[^>:]+):)?(?P<name>[^>]+)>|\(\?P<(?P<rname>\w+)>(?P<rbody>[^)]*)\)")


def templates(resolver=None, prefix=""):
    """(template, pattern) for every URL: template is a list of literal strings and {name: ...} holes."""
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        route = str(entry.pattern)
        route = route.removeprefix("^").removesuffix("$").replace("\\.", ".").replace("\\Z", "")
        if isinstance(entry, URLResolver):
            yield from templates(entry, prefix + route)
        elif isinstance(entry, URLPattern):
            yield prefix + route


def fill(template, valid, hostile_name=None, hostile=None):
    def one(match):
        name = match["name"] or match["rname"]
        if name == hostile_name:
            return hostile
        if match["rbody"] and re.fullmatch(r"[\w|]+", match["rbody"]):
            return match["rbody"].split("|")[0]  # admin's app_label alternatives
        return valid.get(name, "1")

    return "/" + GROUP.sub(one, template)


def holes(template):
    return [m["name"] or m["rname"] for m in GROUP.finditer(template)]


@pytest.fixture
def targets(web):
    deployment = make_deployment(web)
    snapshot = Snapshot.objects.create(
        app=web, deployment=deployment, database="web", path="/nonexistent/web.dump", size=0, kind=Snapshot.Kind.PRE_MIGRATION,
    )
    valid = {
        "name": web.name, "public_id": str(deployment.public_id), "deployment_id": str(deployment.public_id),
        "pk": str(snapshot.pk), "object_id": "1", "url": "x", "content_type_id": "1",
    }
    paths = set(RAW_PATHS)
    valid_paths = set()
    for template in templates():
        valid_paths.add(fill(template, valid))
        for name in holes(template):
            for value in HOSTILE_SEGMENTS:
                paths.add(fill(template, valid, name, value))
    for path in list(valid_paths):
        paths.update({path + "%00", path + "%ff"})
    return sorted(paths | valid_paths), sorted(valid_paths)


def server_errors(client, requests):
    errors = []
    for method, path, data in requests:
        response = getattr(client, method)(path, data) if data is not None else getattr(client, method)(path)
        if response.status_code >= 500:
            errors.append(f"{method.upper()} {path[:200]} -> {response.status_code}")
    return errors


@pytest.fixture
def superuser_client():
    client = Client(raise_request_exception=False)
    client.force_login(User.objects.create_superuser("root", password="x"))
    return client


def test_hostile_paths_never_get_a_500(targets, superuser_client):
    paths, _ = targets
    anonymous = Client(raise_request_exception=False)
    assert len(paths) > 500
    errors = server_errors(superuser_client, [("get", p, None) for p in paths])
    errors += server_errors(anonymous, [("get", p, None) for p in paths])
    assert errors == []


def test_hostile_query_parameters_never_get_a_500(targets, superuser_client):
    _, valid_paths = targets
    requests = [("get", f"{path}?{query}", None) for path in valid_paths for query in HOSTILE_QUERIES]
    assert server_errors(superuser_client, requests) == []
    assert server_errors(Client(raise_request_exception=False), requests[::7]) == []


def test_hostile_form_posts_never_get_a_500(targets, superuser_client):
    _, valid_paths = targets
    # Logging out would end the walk as the superuser; it is posted to last.
    ordered = sorted(valid_paths, key=lambda p: p == "/logout/")
    requests = [("post", path, form) for path in ordered for form in HOSTILE_FORMS]
    assert server_errors(superuser_client, requests) == []
    assert server_errors(Client(raise_request_exception=False), requests) == []
    # With CSRF enforced, as a browser session is: 403, not 500.
    strict = Client(enforce_csrf_checks=True, raise_request_exception=False)
    strict.force_login(User.objects.get(username="root"))
    assert server_errors(strict, requests) == []


def test_nul_in_a_path_or_parameter_is_a_bad_request(superuser_client, web):
    assert superuser_client.get("/apps/%00/").status_code in (400, 404)
    assert superuser_client.get("/apps/web/?page=%00").status_code == 400
    assert superuser_client.get("/admin/auth/user/?q=%00").status_code == 400
    assert superuser_client.post("/apps/web/deploy", {"ref": "main\x00"}).status_code == 400


def test_a_cookie_with_nul_is_a_bad_request(client):
    # A session cookie is looked up in PostgreSQL, which cannot compare NUL.
    client.cookies["sessionid"] = "abcdefgh\x00ijkl"
    assert client.get("/").status_code == 400
    assert client.get("/healthz").status_code == 400


def test_admin_actions_on_ids_that_are_no_ids_are_bad_requests(superuser_client):
    response = superuser_client.post("/admin/auth/user/", {"action": "delete_selected", "_selected_action": ["abc"]})
    assert response.status_code == 400
    assert b"'abc' is not an id of a user" in response.content
    assert User.objects.filter(username="root").exists()


def test_pagination_takes_any_page_number(superuser_client, web):
    for page in ("abc", "-1", "99999999999", "0", "9" * 5000):
        assert superuser_client.get(f"/apps/web/?page={page}").status_code == 200, page


def test_anonymous_404_lists_no_url_patterns(client):
    response = client.get("/nope/")
    assert response.status_code in (302, 404)
    response = client.get("/healthz/nope")
    assert b"apps/<str:name>/" not in response.content and b"URLconf" not in response.content


def test_refusals_log_one_line_without_a_traceback(superuser_client, web, caplog, django_user_model):
    nobody = Client(raise_request_exception=False)
    nobody.force_login(django_user_model.objects.create_user("nobody"))
    strict = Client(enforce_csrf_checks=True, raise_request_exception=False)
    strict.force_login(User.objects.get(username="root"))
    with caplog.at_level(logging.INFO):
        assert nobody.get("/apps/web/").status_code == 403  # PermissionDenied
        assert superuser_client.get("/apps/nope/").status_code == 404  # Http404
        assert superuser_client.get("/apps/%00/").status_code in (400, 404)
        assert strict.post("/apps/web/deploy", {"ref": "main"}).status_code == 403  # CSRF
        assert superuser_client.get("/", HTTP_HOST="evil.example").status_code == 400  # DisallowedHost
    refusals = [r for r in caplog.records if r.name in ("django.request", "django.security.csrf", "django.security.DisallowedHost")]
    assert len(refusals) >= 5, [r.getMessage() for r in caplog.records]
    for record in refusals:
        assert record.exc_info is None, record.getMessage()
    # What reaches the console: one line each.
    handler = logging.getLogger().handlers[0] if logging.getLogger().handlers else None
    if handler is not None:
        for record in refusals:
            assert "\n" not in handler.format(record), handler.format(record)
