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
    # Anonymous callers learn only which component fails: no address,
    # port or error text.
    assert response.json() == {"status": "unavailable", "checks": {"database": "ok", "redis": "failing"}}
    assert b"127.0.0.1" not in response.content and b":1" not in response.content


def test_anonymous_health_names_no_role_or_address_when_the_database_fails(client, settings):
    from django.db import connection

    real = dict(connection.settings_dict)
    try:
        connection.close()
        connection.settings_dict.update(USER="norn_no_such_role", PORT="5432", HOST="127.0.0.1")
        response = client.get("/healthz")
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(real)
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "failing"
    assert b"norn_no_such_role" not in response.content and b"5432" not in response.content


def test_staff_see_why_a_component_fails(client, settings, django_user_model):
    staff = django_user_model.objects.create_user("ops", is_staff=True)
    viewer = django_user_model.objects.create_user("viewer")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    client.force_login(viewer)
    assert "details" not in client.get("/healthz").json()
    client.force_login(staff)
    body = client.get("/healthz").json()
    assert body["checks"]["redis"] == "failing"
    assert "127.0.0.1" in body["details"]["redis"] or "refused" in body["details"]["redis"].lower()
    assert "database" not in body["details"]


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
