"""Fixtures and builders shared by the dashboard's test files
(test_app_page.py, test_deployment_page.py, ...): the web app, users with
permissions, deployments with their step rows, snapshots on disk.

Import the fixtures by name in a test module, as tests.support.browser's are.
"""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from apps_registry.models import App
from deployments import states, transitions
from deployments.models import TERMINAL_STATUSES, Deployment, DeploymentStatus, Snapshot, Step, StepStatus

WEB = """
app: web
role: webserver
port: 8000
repo:
  url: https://git.example.com/web.git
  branch: main
"""
LOCAL = "app: local\nrole: worker\n"


@pytest.fixture
def web(make_app):
    make_app("web", WEB)
    return App.objects.get(name="web")


def user_with(*codenames, username="op"):
    user = User.objects.create_user(username, password="x")
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def viewer(client):
    client.force_login(user_with("view_deployment", username="viewer"))
    return client


@pytest.fixture
def operator(client):
    user = user_with("view_deployment", "start_deployment", "cancel_deployment")
    client.force_login(user)
    client.user = user
    return client


def make_deployment(app, status=DeploymentStatus.DEPLOYED, *, ref="HEAD", commit="", image="", steps=None,
                    error="", ago=0, kind="deploy", **links):
    """A deployment with its step rows; `steps` maps step name to
    (status, seconds, extra Step fields)."""
    deployment = transitions.create(app, ref, via="dashboard", runtime="docker", kind=kind, **links)
    started = timezone.now() - timedelta(minutes=ago + 5)
    finished = started + timedelta(seconds=90) if status in TERMINAL_STATUSES else None
    Deployment.objects.filter(pk=deployment.pk).update(
        status=status, commit_sha=commit, image=image, error=error, started_at=started, finished_at=finished,
        queued_at=started - timedelta(seconds=1),
    )
    for name, (step_status, seconds, *extra) in (steps or {}).items():
        fields = extra[0] if extra else {}
        Step.objects.filter(deployment=deployment, name=name).update(
            status=step_status,
            started_at=started,
            duration=timedelta(seconds=seconds) if seconds is not None else None,
            **fields,
        )
    deployment.refresh_from_db()
    return deployment


def all_succeeded(seconds=2):
    return {name: (StepStatus.SUCCEEDED, seconds) for name in states.STEPS}


def page(client, url, status=200):
    response = client.get(url)
    assert response.status_code == status, response.content[:500]
    return response.content.decode()


def running_deployment(app):
    return make_deployment(
        app, DeploymentStatus.MIGRATING, ref="main",
        steps={
            "clone": (StepStatus.SUCCEEDED, 1.5, {"output": "Cloned <b>web</b>\n"}),
            "build": (StepStatus.SKIPPED, 0.1, {"skip_reason": "no build section in infraspec.yaml"}),
            "test": (StepStatus.SKIPPED, 0.1, {"skip_reason": "no build.test in infraspec.yaml"}),
            "snapshot": (StepStatus.SUCCEEDED, 3),
            "migrate": (StepStatus.RUNNING, None, {"output": "Applying 0001…\n"}),
        },
    )


def write_snapshot(tmp_path, app, deployment, content=b"PGDMP fake dump"):
    import hashlib

    path = tmp_path / "web_db.dump"
    path.write_bytes(content)
    return Snapshot.objects.create(
        deployment=deployment, app=app, database="web_db", path=str(path),
        size=len(content), sha256=hashlib.sha256(content).hexdigest(),
    )
