"""The admin: deployments with steps and output, and the permission-checked
operator actions (deploy an app, cancel a deployment)."""

import pytest
from django.contrib.auth.models import Permission, User

from apps_registry.models import App
from deployments import pipeline
from deployments.models import Deployment
from deployments.requests import request_deployment

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    """A staff user who may view everything, and nothing more yet."""
    user = User.objects.create_user("op", password="x", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__startswith="view_"))
    client.force_login(user)
    return user


def grant(user, codename):
    user.user_permissions.add(Permission.objects.get(codename=codename))


def test_deploy_action_needs_the_permission(client, operator, make_app):
    make_app("web", "app: web\nrole: worker\n")
    app = App.objects.get(name="web")
    changelist = client.get("/admin/apps_registry/app/")
    assert b"deploy_apps" not in changelist.content
    post = client.post("/admin/apps_registry/app/", {"action": "deploy_apps", "_selected_action": [app.pk]})
    assert Deployment.objects.count() == 0
    grant(operator, "start_deployment")
    assert b"deploy_apps" in client.get("/admin/apps_registry/app/").content
    client.post("/admin/apps_registry/app/", {"action": "deploy_apps", "_selected_action": [app.pk]})
    deployment = Deployment.objects.get()
    assert (deployment.ref, deployment.requested_by, deployment.requested_via) == ("HEAD", operator, "admin")
    assert post.status_code in (200, 302)


def test_deploy_action_reports_an_invalid_spec(admin_client, make_app):
    make_app("broken", "app: broken\nrole: nope\n")
    app = App.objects.get(name="broken")
    response = admin_client.post(
        "/admin/apps_registry/app/", {"action": "deploy_apps", "_selected_action": [app.pk]}, follow=True
    )
    assert "broken&#x27; has an invalid infraspec.yaml" in response.content.decode()
    assert Deployment.objects.count() == 0


def test_cancel_action_needs_the_permission(client, operator, make_app):
    make_app("web", "app: web\nrole: worker\n")
    deployment = request_deployment("web")
    data = {"action": "cancel_deployments", "_selected_action": [deployment.pk]}
    client.post("/admin/deployments/deployment/", data)
    assert Deployment.objects.get(pk=deployment.pk).status == "queued"
    grant(operator, "cancel_deployment")
    client.post("/admin/deployments/deployment/", data)
    deployment.refresh_from_db()
    assert (deployment.status, deployment.error) == ("failed", "cancelled by op (admin)")


@pytest.mark.django_db(transaction=True)
def test_deployment_page_shows_steps_output_and_errors(admin_client, make_app, norn_dirs):
    make_app("web", "app: web\nrole: worker\nbuild:\n  test: echo visible-output; exit 1\n", {"Dockerfile": "FROM scratch\n"})
    deployment = request_deployment("web")
    pipeline.execute(deployment.pk)
    listing = admin_client.get("/admin/deployments/deployment/").content.decode()
    assert deployment.short_id in listing and "Failed" in listing
    page = admin_client.get(f"/admin/deployments/deployment/{deployment.pk}/change/").content.decode()
    assert "clone" in page and "cleanup" in page
    assert "test failed" in page and "visible-output" in page
    # Read-only: the history cannot be edited.
    assert admin_client.post(f"/admin/deployments/deployment/{deployment.pk}/change/", {"status": "deployed"}).status_code == 403
