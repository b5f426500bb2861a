"""The fake API server's batch/v1 Jobs (tests/support/fake_jobs.py), through the real client
and cross-checked with the real kubectl: validation and defaults as the apiserver does them,
pods that really run on Docker (log, exit code, env from Secrets), image pull failures,
deadlines, and deletion that follows the propagation policy."""

import json
import os
import shutil
import subprocess
import time
import uuid

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.fake_jobs import wait_until
from tests.support.fake_kubernetes import FakeKubernetes
# The same API client and kubectl as the Deployment tests, against this file's `kube`.
from tests.test_fake_kubernetes import api, core, kubectl  # noqa: F401 (fixtures)

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


@pytest.fixture
def kube(busybox_image):
    with FakeKubernetes() as fake:
        yield fake
        assert not fake.internal_errors, fake.internal_errors


@pytest.fixture
def kubeconfig(kube, tmp_path):
    return kube.write_kubeconfig(str(tmp_path / "kubeconfig"))


@pytest.fixture
def batch(api):
    return client.BatchV1Api(api)


def job(name="task", command="echo hello", image="norn-busybox:1", restart="Never", **spec):
    container = {"name": "main", "image": image, "command": ["sh", "-c", command]}
    container.update(spec.pop("container", {}))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, **spec,
                     "template": {"spec": {"restartPolicy": restart, "containers": [container]}}}}


def finished(batch, name):
    def check():
        current = batch.read_namespaced_job(name, "default")
        return next((c for c in current.status.conditions or [] if c.type in ("Complete", "Failed")), None)
    return wait_until(check, timeout=60)


def containers(kube):
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=norn.fake-kube={kube.jobs.instance}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def pods_of(core, name):
    return core.list_namespaced_pod("default", label_selector=f"batch.kubernetes.io/job-name={name}").items


# --------------------------------------------------------------------------- validation and defaults
def test_job_validation_matches_the_apiserver(batch):
    with pytest.raises(ApiException) as always:
        batch.create_namespaced_job("default", job(restart=None))  # defaults to Always, which Jobs refuse
    body = json.loads(always.value.body)
    assert always.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "spec.template.spec.restartPolicy"
    assert 'Unsupported value: "Always": supported values: "OnFailure", "Never"' in body["message"]

    with pytest.raises(ApiException) as long_name:
        batch.create_namespaced_job("default", job(name="j" * 64))
    assert long_name.value.status == 422 and "must be no more than 63 characters" in long_name.value.body

    with pytest.raises(ApiException) as no_image:
        batch.create_namespaced_job("default", job(container={"image": ""}, activeDeadlineSeconds=0))
    fields = {c["field"] for c in json.loads(no_image.value.body)["details"]["causes"]}
    assert fields == {"spec.template.spec.containers[0].image", "spec.activeDeadlineSeconds"}

    with pytest.raises(ApiException) as missing_ns:
        batch.create_namespaced_job("nowhere", job())
    assert missing_ns.value.status == 404


def test_job_defaults_selector_and_labels(batch):
    created = batch.create_namespaced_job("default", job(suspend=True))
    uid = created.metadata.uid
    assert created.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    assert created.spec.template.metadata.labels["batch.kubernetes.io/job-name"] == "task"
    assert created.spec.completions == 1 and created.spec.parallelism == 1
    assert created.spec.completion_mode == "NonIndexed"
    unbounded = job(name="six", suspend=True)
    del unbounded["spec"]["backoffLimit"]
    assert batch.create_namespaced_job("default", unbounded).spec.backoff_limit == 6
    # The template is immutable once created.
    created.spec.template.spec.containers[0].image = "other:1"
    with pytest.raises(ApiException) as immutable:
        batch.replace_namespaced_job("task", "default", created)
    assert immutable.value.status == 422 and "field is immutable" in immutable.value.body


# --------------------------------------------------------------------------- running pods
def test_job_runs_its_pod_on_docker_and_kubectl_reads_it(kube, batch, core, kubectl):
    core.create_namespaced_secret("default", {"metadata": {"name": "creds"}, "stringData": {"TOKEN": "s3cret"}})
    spec = job(command='echo "token=$TOKEN"; echo "plain=$PLAIN"; echo done', container={
        "env": [{"name": "PLAIN", "value": "p"}],
        "envFrom": [{"secretRef": {"name": "creds"}}]})
    batch.create_namespaced_job("default", spec)

    condition = finished(batch, "task")
    assert (condition.type, condition.reason) == ("Complete", "CompletionsReached")
    current = batch.read_namespaced_job("task", "default")
    assert current.status.succeeded == 1 and not current.status.failed and current.status.completion_time
    [pod] = pods_of(core, "task")
    assert pod.status.phase == "Succeeded"
    assert pod.metadata.owner_references[0].kind == "Job" and pod.metadata.owner_references[0].controller
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")

    logs = kubectl("logs", "job/task")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "token=s3cret\nplain=p\ndone\n"
    assert core.read_namespaced_pod_log(pod.metadata.name, "default", tail_lines=1) == "done\n"
    listed = kubectl("get", "jobs", "-o", "name")
    assert listed.stdout.split() == ["job.batch/task"]
    events = kubectl("get", "events", "-o", "json")
    reasons = {e["reason"] for e in json.loads(events.stdout)["items"]}
    assert {"SuccessfulCreate", "Started", "Completed"} <= reasons
    # Docker's bridge network, never the host's.
    [argv] = kube.jobs.docker_runs
    assert "host" not in argv[argv.index("--network") + 1]


def test_failing_container_fails_the_job_with_its_exit_code(batch, core):
    batch.create_namespaced_job("default", job(command="echo oops >&2; exit 7"))

    condition = finished(batch, "task")
    assert (condition.type, condition.reason) == ("Failed", "BackoffLimitExceeded")
    assert condition.message == "Job has reached the specified backoff limit"
    [pod] = pods_of(core, "task")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, terminated.exit_code, terminated.reason) == ("Failed", 7, "Error")
    assert core.read_namespaced_pod_log(pod.metadata.name, "default") == "oops\n"


def test_backoff_limit_retries_with_new_pods(batch, core):
    batch.create_namespaced_job("default", job(command="exit 1", backoffLimit=1))

    assert finished(batch, "task").reason == "BackoffLimitExceeded"
    assert batch.read_namespaced_job("task", "default").status.failed == 2
    assert len(pods_of(core, "task")) == 2


def test_active_deadline_kills_the_pod(kube, batch, core):
    batch.create_namespaced_job("default", job(command="sleep 60", activeDeadlineSeconds=1))

    condition = finished(batch, "task")
    assert (condition.type, condition.reason) == ("Failed", "DeadlineExceeded")
    assert condition.message == "Job was active longer than specified deadline"
    wait_until(lambda: not containers(kube), timeout=20)


def test_unpullable_image_waits_in_image_pull_back_off(kube, batch, core):
    image = f"127.0.0.1:5000/norn-never-pushed-{uuid.uuid4().hex[:8]}:1"
    batch.create_namespaced_job("default", job(image=image))

    def waiting():
        pods = pods_of(core, "task")
        statuses = pods and pods[0].status.container_statuses
        state = statuses and statuses[0].state.waiting
        return state if state and state.reason in ("ErrImagePull", "ImagePullBackOff") else None

    state = wait_until(waiting, timeout=20)
    assert image in state.message
    pod = pods_of(core, "task")[0].metadata.name
    with pytest.raises(ApiException) as not_started:
        core.read_namespaced_pod_log(pod, "default")
    assert not_started.value.status == 400
    assert "is waiting to start: trying and failing to pull image" in not_started.value.body
    reasons = {e.reason for e in core.list_namespaced_event("default").items}
    assert "Failed" in reasons
    assert not batch.read_namespaced_job("task", "default").status.conditions


def test_missing_secret_is_a_create_container_config_error(batch, core):
    batch.create_namespaced_job("default", job(container={
        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "X"}}}]}))

    def waiting():
        pods = pods_of(core, "task")
        statuses = pods and pods[0].status.container_statuses
        return statuses and statuses[0].state.waiting and statuses[0].state.waiting.reason == \
            "CreateContainerConfigError" and statuses[0].state.waiting
    assert wait_until(waiting, timeout=20).message == 'secret "absent" not found'


# --------------------------------------------------------------------------- deletion
def test_kubectl_delete_job_deletes_its_pods_and_kills_the_container(kube, batch, core, kubectl):
    batch.create_namespaced_job("default", job(command="echo up; sleep 120"))
    wait_until(lambda: containers(kube) and pods_of(core, "task")
               and pods_of(core, "task")[0].status.phase == "Running", timeout=30)

    result = kubectl("delete", "job", "task")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'job.batch "task" deleted'
    assert pods_of(core, "task") == []
    wait_until(lambda: not containers(kube), timeout=20)


def test_deleting_a_job_without_a_policy_orphans_its_pods_as_batch_v1_does(kube, batch, core):
    batch.create_namespaced_job("default", job(command="sleep 120"))
    wait_until(lambda: pods_of(core, "task"), timeout=30)

    batch.delete_namespaced_job("task", "default")

    [pod] = pods_of(core, "task")
    assert not pod.metadata.owner_references
    time.sleep(0.5)
    assert pods_of(core, "task"), "an orphaned pod keeps running"
    core.delete_namespaced_pod(pod.metadata.name, "default")
    wait_until(lambda: not containers(kube), timeout=20)


def test_ttl_after_finished_deletes_the_job(batch, core):
    batch.create_namespaced_job("default", job(ttlSecondsAfterFinished=0))

    wait_until(lambda: not batch.list_namespaced_job("default").items, timeout=30)
    assert pods_of(core, "task") == []
