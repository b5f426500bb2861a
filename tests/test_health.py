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
    assert response["Location"].startswith("/admin/login/")


def test_logged_in_user_sees_the_app_list(admin_client, apps_dir):
    response = admin_client.get("/")
    assert response.status_code == 200
    assert b"No apps discovered yet" in response.content
