"""Crash recovery with real workers: SIGKILL a worker in the middle of each
step; the restarted worker fails the deployment as the seed says, kills the
step's leftover processes, removes the work directory and unlocks the app."""

import os
import signal
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from deployments import recovery, runner, transitions
from deployments.runtimes import docker as docker_runtime
from deployments.models import Deployment, Step
from deployments.requests import request_deployment
from tests.support.cluster import Cluster, wait_for
from tests.support.docker_images import docker
from tests.support.git_servers import make_repo

pytestmark = pytest.mark.django_db(transaction=True)

DOCKERFILE = "FROM norn-busybox:1\nCOPY . /app\n{extra}CMD [\"sh\", \"-c\", \"sleep 3600\"]\n"


def shim(directory, tool, when):
    """A PATH shim that makes `tool` hang (sleep) when its first argument is `when`."""
    path = directory / tool
    real = f"/usr/bin/{tool}"
    path.write_text(f'#!/bin/sh\nif [ "$1" = "{when}" ] || [ "{when}" = "*" ]; then sleep 300; fi\nexec {real} "$@"\n')
    path.chmod(stat.S_IRWXU)


# For each step: how to make it last long enough to be killed in the middle.
SLOW = {
    "clone": dict(shim=("git", "clone")),
    "build": dict(dockerfile_extra="RUN sleep 25\n"),
    "test": dict(test="sleep 300"),
    "snapshot": dict(shim=("pg_dump", "*"), database=True),
    "migrate": dict(migrations="sleep 300", database=True),
    # The new container never answers its health check: deploy waits for it.
    "deploy": dict(webserver=True),
    # Cleanup only removes files: give it many to remove.
    "cleanup": dict(test="mkdir -p many && cd many && seq 1 150000 | xargs touch", migrations="exit 1", database=True),
}


def slow_app(make_app, name, step, db_name, repos):
    how = SLOW[step]
    files = {"Dockerfile": DOCKERFILE.format(extra=how.get("dockerfile_extra", ""))}
    repo = make_repo(repos, name, files)
    role = "webserver\nport: 18431\nhealthcheck: /healthz" if how.get("webserver") else "worker"
    text = f"app: {name}\nrole: {role}\nrepo:\n  url: {repo.file_url}\nbuild:\n  dockerfile: Dockerfile\n"
    if how.get("test"):
        text += f"  test: {how['test']!r}\n"
    if how.get("database"):
        text += f"services:\n  postgres:\n    database: {db_name}\n"
    if how.get("migrations"):
        text += f"migrations:\n  command: {how['migrations']!r}\n"
    return make_app(name, text)


def alive(pid):
    return runner.pid_alive(pid)


@pytest.fixture
def remove_containers():
    yield
    docker_runtime.remove("crashy")  # and its network


@pytest.mark.parametrize("step", list(SLOW))
def test_sigkill_of_a_worker_mid_step_is_recovered(step, make_app, norn_dirs, busybox_image, app_database, tmp_path, remove_containers):
    shims = tmp_path / "shims"
    shims.mkdir()
    if "shim" in SLOW[step]:
        shim(shims, *SLOW[step]["shim"])
    slow_app(make_app, "crashy", step, app_database("crash"), tmp_path / "repos")
    env = {"PATH": f"{shims}:{os.environ['PATH']}"}
    with Cluster(tmp_path / "qcluster.log", extra_env=env) as cluster:
        deployment = request_deployment("crashy")
        wait_for(lambda: Step.objects.filter(deployment=deployment, name=step, status="running").exists(),
                 timeout=120, message=f"{step} to start")
        deployment.refresh_from_db()
        if step in ("test", "migrate"):
            # The worker runs these containers through the engine's API (no
            # process of its own): wait until the step's container runs.
            wait_for(lambda: docker(["ps", "--quiet", "--filter", f"label=norn.deployment={deployment.public_id}",
                                     "--filter", "label=norn.purpose"]).stdout.strip(), message="step container")
        elif step not in ("cleanup", "deploy"):
            # Wait until the step's command runs, so there is a tree to leave behind.
            wait_for(lambda: Deployment.objects.get(pk=deployment.pk).step_pgid, message="step command")
        deployment.refresh_from_db()
        pgid = deployment.step_pgid
        workdir = Path(deployment.workdir)
        _, pid, _ = transitions.parse_owner(deployment.owner)
        os.kill(pid, signal.SIGKILL)

        # django-q2 restarts the worker; the new one recovers at start.
        wait_for(lambda: Deployment.objects.get(pk=deployment.pk).is_terminal, timeout=60,
                 message=f"recovery after SIGKILL in {step}:\n{cluster.output()[-2000:]}")
        deployment.refresh_from_db()
        assert deployment.status == "failed"
        assert deployment.error == "norn restarted during deployment"
        assert deployment.finished_at is not None
        killed = deployment.steps.get(name=step)
        table = [(s.name, s.status, s.error, s.output[-300:]) for s in deployment.steps.all()]
        assert (killed.status, killed.error) == ("failed", "norn restarted during deployment"), table
        assert not deployment.steps.filter(status__in=["running", "pending"]).exists()
        # Recovery removes the work directory right after failing the deployment.
        wait_for(lambda: not workdir.exists(), timeout=60, message="work directory removal")
        if pgid:
            wait_for(lambda: not alive(pgid), timeout=10, message="the step's process group to die")
        # The test and migrate commands ran in throwaway containers, which
        # outlive the killed worker: recovery removes them too.
        assert docker(["ps", "--all", "--quiet", "--filter", f"label=norn.deployment={deployment.public_id}",
                       "--filter", "label=norn.purpose"]).stdout.strip() == ""
        assert deployment.events.filter(kind="deploy.failed").exists()

        # The app is unlocked: its next deployment gets claimed (and is not
        # recovered by mistake: its owner is alive).
        later = request_deployment("crashy")
        wait_for(lambda: Deployment.objects.get(pk=later.pk).status != "queued", timeout=60, message="next deployment to start")
        transitions.request_cancel(later, "test")
        wait_for(lambda: Deployment.objects.get(pk=later.pk).is_terminal, timeout=60, message="cancel")
        assert Deployment.objects.get(pk=later.pk).error == "cancelled by test"


def test_recovery_leaves_live_workers_alone(make_app, norn_dirs, busybox_image, tmp_path):
    make_app("live", "app: live\nrole: worker\nbuild:\n  test: sleep 300\n", {"Dockerfile": DOCKERFILE.format(extra="")})
    with Cluster(tmp_path / "qcluster.log"):
        deployment = request_deployment("live")
        wait_for(lambda: Step.objects.filter(deployment=deployment, name="test", status="running").exists(),
                 timeout=120, message="test step")
        # Another worker restarting runs recovery: this deployment's owner is alive.
        assert recovery.recover() == []
        assert Deployment.objects.get(pk=deployment.pk).status == "testing"
        transitions.request_cancel(deployment, "test")
        wait_for(lambda: Deployment.objects.get(pk=deployment.pk).is_terminal, message="cancel")


def test_silent_owner_on_another_host_is_recovered(make_app, norn_dirs):
    make_app("remote", "app: remote\nrole: worker\n")
    deployment = request_deployment("remote")
    assert transitions.claim(deployment.pk, "elsewhere:4242:abcd")
    # Fresh heartbeat: alive, whatever host it is on.
    assert recovery.recover() == []
    Deployment.objects.filter(pk=deployment.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert recovery.recover() == [deployment.pk]
    deployment.refresh_from_db()
    assert (deployment.status, deployment.error) == ("failed", "norn restarted during deployment")


def test_seed_recovery_rule_terminal_statuses_untouched(make_app, norn_dirs):
    make_app("done", "app: done\nrole: worker\n")
    deployment = request_deployment("done")
    transitions.claim(deployment.pk, "gone:1:x")
    transitions.finish(deployment.pk, "deployed")
    Deployment.objects.filter(pk=deployment.pk).update(heartbeat_at=timezone.now() - timedelta(days=1))
    assert recovery.recover() == []
    assert Deployment.objects.get(pk=deployment.pk).status == "deployed"
