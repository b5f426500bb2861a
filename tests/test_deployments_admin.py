"""The admin: deployments with steps and output, and the permission-checked
operator actions (deploy an app, cancel a deployment)."""

import pytest
from django.contrib.auth.models import Permission, User

from apps_registry.models import App
from deployments import deferred, pipeline
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
    assert (deployment.status, deployment.error) == ("cancelled", "cancelled by op (admin)")


@pytest.mark.django_db(transaction=True)
def test_deployment_page_shows_steps_output_and_errors(admin_client, make_app, norn_dirs):
    make_app("web", "app: web\nrole: worker\nbuild:\n  test: echo visible-output; exit 1\n", {"Dockerfile": "FROM scratch\n"})
    deployment = request_deployment("web")
    pipeline.execute(deployment.pk)
    deferred.wait()
    listing = admin_client.get("/admin/deployments/deployment/").content.decode()
    assert deployment.short_id in listing and "Failed" in listing
    page = admin_client.get(f"/admin/deployments/deployment/{deployment.pk}/change/").content.decode()
    assert "clone" in page and "cleanup" in page
    assert "test failed" in page and "visible-output" in page
    # Read-only: the history cannot be edited.
    assert admin_client.post(f"/admin/deployments/deployment/{deployment.pk}/change/", {"status": "deployed"}).status_code == 403


def test_a_deployments_admin_history_lists_its_actions(admin_client, make_app):
    """The admin's own history page of a row pages LogEntry rows, not deployments."""
    from django.contrib.admin.models import CHANGE, LogEntry
    from django.contrib.contenttypes.models import ContentType

    make_app("web", "app: web\nrole: worker\n")
    deployment = finished("web", "web:" + "a" * 40)
    user = User.objects.get(username="admin")
    LogEntry.objects.create(user=user, content_type=ContentType.objects.get_for_model(Deployment),
                            object_id=str(deployment.pk), object_repr=str(deployment), action_flag=CHANGE,
                            change_message="Cancelled")
    response = admin_client.get(f"/admin/deployments/deployment/{deployment.pk}/history/")
    assert response.status_code == 200
    assert "Cancelled" in response.content.decode()


def finished(app_name, image, status="deployed"):
    from django.utils import timezone

    from deployments import transitions

    deployment = transitions.create(App.objects.get(name=app_name), "HEAD")
    Deployment.objects.filter(pk=deployment.pk).update(
        status=status, image=image, commit_sha=image.split(":")[1], finished_at=timezone.now()
    )
    return Deployment.objects.get(pk=deployment.pk)


def test_rollback_actions_need_the_permission_and_are_recorded(client, operator, make_app):
    make_app("web", "app: web\nrole: worker\n")
    first = finished("web", "web:" + "1" * 40)
    second = finished("web", "web:" + "2" * 40)
    app = App.objects.get(name="web")
    client.post("/admin/apps_registry/app/", {"action": "roll_back_apps", "_selected_action": [app.pk]})
    assert not Deployment.objects.filter(kind="rollback").exists()
    grant(operator, "start_deployment")
    response = client.post("/admin/apps_registry/app/", {"action": "roll_back_apps", "_selected_action": [app.pk]}, follow=True)
    rollback = Deployment.objects.get(kind="rollback")
    assert (rollback.rollback_to, rollback.replaces, rollback.requested_by) == (first, second, operator)
    assert f"rollback {rollback.short_id}" in response.content.decode()
    # From the deployment list: roll back to a chosen one (one at a time).
    several = client.post("/admin/deployments/deployment/", {"action": "roll_back_to", "_selected_action": [first.pk, second.pk]}, follow=True)
    assert "Select exactly one deployment" in several.content.decode()


def test_app_list_shows_snapshot_disk_usage(admin_client, make_app):
    from deployments.models import Snapshot

    make_app("web", "app: web\nrole: worker\n")
    deployment = finished("web", "web:" + "1" * 40)
    for size in (1024, 2048):
        Snapshot.objects.create(deployment=deployment, app=deployment.app, database="web", path="/x", size=size, sha256="0" * 64)
    html = admin_client.get("/admin/apps_registry/app/").content.decode()
    assert "Snapshots on disk" in html and "3.0\xa0KB" in html


def test_restore_action_asks_first_naming_database_and_time(client, operator, make_app, tmp_path):
    import hashlib

    from deployments.models import Snapshot

    make_app("web", "app: web\nrole: worker\n")
    deployment = finished("web", "web:" + "1" * 40)
    dump = tmp_path / "web.dump"
    dump.write_bytes(b"not really a dump")
    snapshot = Snapshot.objects.create(
        deployment=deployment, app=deployment.app, database="web_db", path=str(dump),
        size=dump.stat().st_size, sha256=hashlib.sha256(dump.read_bytes()).hexdigest(),
    )
    grant(operator, "start_deployment")
    data = {"action": "restore_snapshot", "_selected_action": [snapshot.pk]}
    page = client.post("/admin/deployments/snapshot/", data).content.decode()
    assert "Restore database web_db?" in page
    assert snapshot.created_at.strftime("%Y-%m-%d %H:%M:%S") in page
    assert "Data written since then is lost" in page
    assert not Deployment.objects.filter(kind="restore").exists()
    client.post("/admin/deployments/snapshot/", {**data, "confirmed": "yes"})
    restore = Deployment.objects.get(kind="restore")
    assert (restore.snapshot, restore.requested_by, restore.requested_via) == (snapshot, operator, "admin")
