"""The health endpoint is public; every other page needs a login."""

import pytest

pytestmark = pytest.mark.django_db


def test_health_endpoint_needs_no_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_health_endpoint_reports_redis_down(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] != "ok"


@pytest.mark.parametrize("url", ["/", "/admin/", "/admin/apps_registry/app/"])
def test_everything_else_needs_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    # The admin index has its own login page; everything else uses Norn's.
    assert response["Location"].startswith("/admin/login/" if url == "/admin/" else "/login/")


def test_logged_in_user_sees_the_app_list(admin_client, apps_dir):
    response = admin_client.get("/")
    assert response.status_code == 200
    assert b"No apps discovered yet" in response.content


def test_login_page_lets_non_staff_users_in(client, django_user_model):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("viewer", password="a-long-password-1")
    user.user_permissions.add(Permission.objects.get(codename="view_deployment"))
    page = client.get("/login/?next=/")
    assert page.status_code == 200 and b'name="username"' in page.content
    response = client.post("/login/", {"username": "viewer", "password": "a-long-password-1", "next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_static_files_are_served_by_the_app(client):
    # daphne serves no static files: WhiteNoise does, in the same process.
    response = client.get("/static/norn/norn.css")
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"Norn" in body
