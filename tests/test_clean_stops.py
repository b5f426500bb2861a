"""Clean stops: SIGTERM to the whole process group (what `systemctl stop` and
`docker stop` send) stops qcluster and each of its workers, and daphne, within
seconds; a deployment in flight is finished within NORN_STOP_GRACE or failed
with its processes and containers stopped, and nothing it started outlives it.
(The proxy's own stop is in tests/test_proxy.py.)"""

import os
import signal
import time

import pytest

from deployments.models import Deployment
from deployments.requests import request_deployment
from tests.support.cluster import Cluster, wait_for
from tests.support.docker_images import docker
from tests.support.servers import Daphne

pytestmark = pytest.mark.django_db(transaction=True)

STOPPED_WITHIN = 15.0


def group_members(pgid):
    """Pids of the live (not zombie) processes in process group `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def sigterm_group_and_time(proc):
    """SIGTERM to proc's process group; seconds until every member is gone."""
    pgid = proc.pid
    assert len(group_members(pgid)) >= 1
    started = time.monotonic()
    os.killpg(pgid, signal.SIGTERM)
    while group_members(pgid):
        if time.monotonic() - started > STOPPED_WITHIN + 30:
            os.killpg(pgid, signal.SIGKILL)
            raise AssertionError(f"process group {pgid} still running {STOPPED_WITHIN + 30:g} s after SIGTERM")
        time.sleep(0.05)
    return time.monotonic() - started


def stopped_cluster(cluster):
    """Reap the cluster's parent and close its log (Cluster.stop would signal again)."""
    cluster.proc.wait(timeout=5)
    cluster.log.close()


@pytest.fixture
def idle_cluster(tmp_path, norn_dirs, apps_dir):
    cluster = Cluster(tmp_path / "qcluster.log", workers=2).__enter__()
    cluster.wait_for_log("ready for work", count=2)
    # parent, sentinel, 2 workers, monitor, pusher
    wait_for(lambda: len(group_members(cluster.proc.pid)) >= 6, timeout=30, message="the whole cluster")
    yield cluster
    if cluster.proc.poll() is None:
        os.killpg(cluster.proc.pid, signal.SIGKILL)
    cluster.proc.wait(timeout=5)
    cluster.log.close()


def test_qcluster_and_every_worker_stop_on_sigterm_to_the_group(idle_cluster):
    assert sigterm_group_and_time(idle_cluster.proc) < STOPPED_WITHIN
    stopped_cluster(idle_cluster)
    assert idle_cluster.proc.returncode == 0
    assert "has stopped" in idle_cluster.output()


def test_qcluster_stops_its_workers_when_only_its_parent_gets_sigterm(idle_cluster):
    pgid = idle_cluster.proc.pid
    started = time.monotonic()
    idle_cluster.proc.send_signal(signal.SIGTERM)  # `kill <pid>`, `docker stop` of a container running it
    wait_for(lambda: not group_members(pgid), timeout=STOPPED_WITHIN, message="every process of the cluster to exit")
    assert time.monotonic() - started < STOPPED_WITHIN
    stopped_cluster(idle_cluster)


def slow_app(make_app, name, seconds):
    make_app(name, f"app: {name}\nrole: worker\nbuild:\n  test: sleep {seconds}\n",
             files={"Dockerfile": 'FROM norn-busybox:1\nCMD trap "exit 0" TERM; sleep 3600 & wait\n'})


def containers_of(public_id):
    out = docker(["ps", "--all", "--format", "{{.Names}}", "--filter", f"label=norn.deployment={public_id}"]).stdout
    return out.split()


def test_a_deployment_past_the_grace_period_is_failed_with_its_container_removed(
        tmp_path, norn_dirs, apps_dir, busybox_image, make_app):
    slow_app(make_app, "stopslow", 300)
    with Cluster(tmp_path / "qcluster.log", extra_env={"NORN_STOP_GRACE": "2"}) as cluster:
        deployment = request_deployment("stopslow", "HEAD", name="tester")
        wait_for(lambda: containers_of(deployment.public_id), timeout=120, message="the test container")
        took = sigterm_group_and_time(cluster.proc)
        stopped_cluster(cluster)
        cluster.proc = None  # already reaped
    assert took < STOPPED_WITHIN
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.FAILED
    assert "NORN_STOP_GRACE (2 s)" in deployment.error
    assert deployment.steps.get(name="test").status == "failed"
    assert containers_of(deployment.public_id) == []  # not left running, not left behind
    assert "norn restarted" not in deployment.error  # failed by its own worker, not by recovery


def test_a_deployment_that_finishes_within_the_grace_period_is_deployed(
        tmp_path, norn_dirs, apps_dir, busybox_image, make_app):
    slow_app(make_app, "stopfast", 4)
    try:
        with Cluster(tmp_path / "qcluster.log", extra_env={"NORN_STOP_GRACE": "60"}) as cluster:
            deployment = request_deployment("stopfast", "HEAD", name="tester")
            wait_for(lambda: containers_of(deployment.public_id), timeout=120, message="the test container")
            took = sigterm_group_and_time(cluster.proc)
            stopped_cluster(cluster)
            cluster.proc = None
        assert took < 60
        deployment.refresh_from_db()
        assert deployment.status == Deployment.Status.DEPLOYED, deployment.error
    finally:
        docker(["rm", "--force", "norn-stopfast"], check=False)


def test_daphne_stops_on_sigterm_to_the_group(tmp_path):
    server = Daphne(tmp_path / "daphne.log", tmp_path / "access.log")
    server.start()
    try:
        assert sigterm_group_and_time(server.proc) < 10
        server.proc.wait(timeout=5)
    finally:
        if server.proc.poll() is None:
            server.kill()
        server.log.close()
