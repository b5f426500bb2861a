"""A rollback goes to the newest deployment that went live and was healthy,
never to one whose rollout failed: on the real Docker runtime, v1 and v2 go
live, v3 fails its health check and is rolled back to v2 automatically (it
ends rolled_back), and the next rollback goes to v1: `manage.py rollback`,
the rollback page and the admin's action all choose the same way."""

import io
import socket
import urllib.request

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from apps_registry.models import App

from deployments import deferred, pipeline, rollback
from deployments.models import Deployment, DeploymentStatus
from deployments.requests import DeployRequestError, request_deployment, request_rollback
from deployments.runtimes import docker as docker_runtime
from tests.support.dashboard import make_deployment, all_succeeded, user_with
from tests.support.git_servers import make_repo

pytestmark = pytest.mark.django_db(transaction=True)

SERVE = 'CMD trap "exit 0" TERM; httpd -f -p "$PORT" -h /www & wait\n'
HEALTHY = {"www/healthz": "ok\n", "Dockerfile": "FROM norn-busybox:1\nCOPY www/ /www/\n" + SERVE}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(port):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/index.html", timeout=5) as response:
        return response.read().decode()


def run(deployment):
    pipeline.execute(deployment.pk)
    deferred.wait()
    deployment.refresh_from_db()
    return deployment


@pytest.fixture
def web(make_app, tmp_path, norn_dirs, busybox_image, settings):
    """A webserver app on the Docker runtime with three versions deployed: v1
    and v2 live in turn, then v3, which never answers its health check and is
    rolled back to v2 automatically. Yields (port, v1, v2, v3, auto rollback)."""
    settings.NORN_RUNTIME = "docker"
    # v3's health check gives up after this long (and fails the deploy step).
    settings.NORN_STEP_TIMEOUTS = {**settings.NORN_STEP_TIMEOUTS, "deploy": 8}
    port = free_port()
    repo = make_repo(tmp_path / "repos", "pick", {**HEALTHY, "www/index.html": "v1\n"})
    make_app("pick", f"app: pick\nrole: webserver\nrepo:\n  url: {repo.file_url}\nbuild: {{}}\n"
                     f"port: {port}\nhealthcheck: /healthz\n")
    try:
        v1 = run(request_deployment("pick"))
        assert v1.status == "deployed", v1.error
        repo.commit({"www/index.html": "v2\n"}, "v2")
        v2 = run(request_deployment("pick"))
        assert v2.status == "deployed", v2.error
        assert fetch(port) == "v2\n"
        repo.commit({"www/index.html": "v3\n"}, "v3: no health check any more", delete=["www/healthz"])
        v3 = run(request_deployment("pick"))
        assert v3.status == "failed"
        assert "did not pass its health check" in v3.error
        assert f"rolling back automatically to {v2.image}" in v3.error
        auto = run(Deployment.objects.get(kind="rollback", replaces=v3))
        assert (auto.status, auto.rollback_to, auto.requested_via) == ("deployed", v2, "auto-rollback")
        v3.refresh_from_db()
        assert v3.status == "rolled_back"
        assert fetch(port) == "v2\n"
        yield port, v1, v2, v3, auto
    finally:
        docker_runtime.remove("pick")


def test_after_an_automatic_rollback_the_next_rollback_goes_to_the_last_healthy_image(web, client):
    port, v1, v2, v3, auto = web
    app = v1.app
    # The image in service is v2's, put back by the automatic rollback.
    assert Deployment.objects.live_for(app) == auto and auto.image == v2.image
    # v3 ended rolled_back like a deployment that was live once, but it never
    # passed its rollout gate: it is no candidate.
    assert v3 not in Deployment.objects.went_live(app)
    assert list(Deployment.objects.rollback_candidates(app, exclude_image=auto.image)) == [v1]

    # The rollback page offers v1, not v3.
    user = user_with("view_deployment", "start_deployment")
    client.force_login(user)
    html = client.get("/apps/pick/rollback").content.decode()
    assert f'value="{v1.public_id}"' in html and f'value="{v3.public_id}"' not in html
    # The admin's "roll back to the selected deployment" refuses v3, with the reason.
    User.objects.filter(pk=user.pk).update(is_staff=True, is_superuser=True)
    response = client.post(
        "/admin/deployments/deployment/", {"action": "roll_back_to", "_selected_action": [str(v3.pk)]}, follow=True
    )
    assert "never went live: its rollout failed" in response.content.decode()
    # So do the command and the request behind every entry point.
    with pytest.raises(CommandError, match="never went live: its rollout failed") as refused:
        call_command("rollback", "pick", str(v3.public_id), "--no-wait", stdout=io.StringIO())
    assert refused.value.returncode == 2
    with pytest.raises(DeployRequestError, match=rf"deployment {v3.short_id} never went live: its rollout failed"):
        request_rollback("pick", v3)
    assert not Deployment.objects.filter(kind="rollback", rollback_to=v3).exists()

    # `manage.py rollback pick` goes to v1, replacing the automatic rollback.
    out = io.StringIO()
    call_command("rollback", "pick", "--no-wait", stdout=out)
    back = Deployment.objects.get(public_id=out.getvalue().strip())
    assert (back.rollback_to, back.replaces) == (v1, auto)
    back = run(back)
    assert back.status == "deployed", back.error
    assert fetch(port) == "v1\n"
    # The automatic rollback it replaced was live: it ends rolled_back and is
    # a candidate (with v2's image), while v3 never becomes one.
    auto.refresh_from_db()
    assert auto.status == "rolled_back"
    assert list(Deployment.objects.rollback_candidates(app, exclude_image=back.image)) == [auto, v2]


def test_went_live_without_docker(make_app):
    """The definition on rows alone: deployed counts; rolled_back counts only
    when its deploy step succeeded; failed, restores and imageless never do."""
    make_app("rows", "app: rows\nrole: worker\n")
    app = App.objects.get(name="rows")
    ok = {**all_succeeded()}
    failed_deploy = {**all_succeeded(), "deploy": ("failed", 1), "cleanup": ("succeeded", 1)}
    live_then_replaced = make_deployment(app, DeploymentStatus.ROLLED_BACK, image="rows:1", steps=ok, ago=50)
    rolled_back_failure = make_deployment(app, DeploymentStatus.ROLLED_BACK, image="rows:2", steps=failed_deploy, ago=40)
    plain_failure = make_deployment(app, DeploymentStatus.FAILED, image="rows:3", steps=failed_deploy, ago=30)
    make_deployment(app, DeploymentStatus.DEPLOYED, image="", steps=ok, ago=25)  # no image
    make_deployment(app, DeploymentStatus.DEPLOYED, kind="restore", steps={}, ago=20)
    live = make_deployment(app, DeploymentStatus.DEPLOYED, image="rows:4", steps=ok, ago=10)
    assert list(Deployment.objects.went_live(app)) == [live, live_then_replaced]
    assert Deployment.objects.live_for(app) == live
    assert rollback.choose(app) == (live_then_replaced, live)
    for never in (rolled_back_failure, plain_failure):
        with pytest.raises(rollback.NothingToRollBackTo, match="never went live"):
            rollback.choose(app, never)
