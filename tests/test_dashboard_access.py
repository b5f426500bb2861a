"""The dashboard's doors: login, the view/start/cancel permissions, 404s
and CSRF on every page."""

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from deployments.models import Deployment, DeploymentStatus, StepStatus
from tests.support.dashboard import web, viewer, operator  # noqa: F401 (fixtures)
from tests.support.dashboard import user_with, make_deployment, page

pytestmark = pytest.mark.django_db


def dashboard_urls(app, deployment):
    base = f"/deployments/{deployment.public_id}/"
    return [
        "/", f"/apps/{app.name}/", base, base + "_steps", base + "_header", base + "_outcome",
        base + "_status", "/simulator/",
    ]


def test_every_page_needs_a_login(client, web):
    deployment = make_deployment(web)
    for url in [*dashboard_urls(web, deployment), "/apps/web/deploy"]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url


def test_every_page_needs_the_view_permission(client, web):
    deployment = make_deployment(web)
    client.force_login(user_with("start_deployment", "cancel_deployment", username="blind"))
    for url in [*dashboard_urls(web, deployment), "/apps/web/deploy"]:
        assert client.get(url).status_code == 403, url
    assert client.post(f"/deployments/{deployment.public_id}/cancel").status_code == 403
    assert client.post("/simulator/", {"step": "clone", "action": "succeed"}).status_code == 403


def test_the_view_permission_shows_everything_but_deploy_and_cancel(viewer, web):
    deployment = make_deployment(web, DeploymentStatus.BUILDING, steps={"clone": (StepStatus.SUCCEEDED, 1)})
    for url in dashboard_urls(web, deployment):
        assert viewer.get(url).status_code == 200, url
    assert 'href="/apps/web/deploy"' not in page(viewer, "/")
    assert 'href="/apps/web/deploy"' not in page(viewer, "/apps/web/")
    assert "Cancel deployment" not in page(viewer, f"/deployments/{deployment.public_id}/")
    assert viewer.get("/apps/web/deploy").status_code == 403
    assert viewer.post("/apps/web/deploy", {"ref": "main", "confirm": "yes"}).status_code == 403
    assert viewer.post(f"/deployments/{deployment.public_id}/cancel").status_code == 403
    assert Deployment.objects.count() == 1
    assert Deployment.objects.get().cancel_requested_at is None


def test_superusers_have_every_permission(admin_client, web):
    deployment = make_deployment(web, DeploymentStatus.QUEUED)
    assert 'href="/apps/web/deploy"' in page(admin_client, "/")
    assert "Cancel deployment" in page(admin_client, f"/deployments/{deployment.public_id}/")


def test_unknown_app_and_deployment_are_404(operator, web):
    assert operator.get("/apps/nope/").status_code == 404
    assert operator.get("/deployments/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_posts_are_csrf_protected(web):
    deployment = make_deployment(web, DeploymentStatus.QUEUED)
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_superuser("root", password="x"))
    assert client.post(f"/deployments/{deployment.public_id}/cancel").status_code == 403
    assert client.post("/apps/web/deploy", {"ref": "main", "confirm": "yes"}).status_code == 403
    assert client.post("/simulator/", {"step": "clone", "action": "succeed"}).status_code == 403
    assert Deployment.objects.get(pk=deployment.pk).status == "queued"
    assert Deployment.objects.count() == 1
    # The pages' forms carry the token.
    form = page(client, "/apps/web/deploy")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    response = client.post("/apps/web/deploy", {"kind": "branch", "ref": "main", "csrfmiddlewaretoken": token})
    assert response.status_code == 200 and "Deploy web at main" in response.content.decode()
