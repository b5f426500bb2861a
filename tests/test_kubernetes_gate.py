"""The Kubernetes rollout gate names a failed rollout's cause within seconds: the runtime
against the fake API server with its Deployment controller (pods=True), whose pods fail to
pull images that are in neither the local registry nor loaded, crash-loop, fail readiness
or are refused by PodSecurity or a ResourceQuota, and through the pipeline, where auto-rollback follows.

Every failure assertion names text only the controller produces (a kubelet reason, a pod
name with its ReplicaSet's hash), so none of these could pass against a fake that lets
every rollout through, nor by waiting for the step's timeout (600 s by default; 60 s here)."""

import re
import subprocess
import time
import uuid

import pytest

from deployments import pipeline as pipeline_module
from deployments.models import Deployment
from deployments.outcomes import StepFailed
from deployments.requests import request_deployment
from deployments.runtimes import kubernetes as runtime
from tests.support.fake_kube_controller import ENFORCE_LABEL, EXIT_AFTER_ENV
from tests.support.fake_kubernetes import FakeKubernetes
from tests.support.git_servers import make_repo
from tests.test_kubernetes_runtime import APP, make_ctx

# The runtime reads and records its deployment's row (what it applied).
pytestmark = pytest.mark.django_db

REGISTRY = "127.0.0.1:5000"
GOOD = "norn-gate/web:good"  # loaded into the fake cluster, like `kind load docker-image`
# Well below the step timeout used here and the 600 s default.
PROMPT = 15


@pytest.fixture
def kube(tmp_path, monkeypatch, settings):
    """A fake cluster with the Deployment controller; a tenth of real time for probes,
    minReadySeconds and restart back-offs, so 10 s of minReadySeconds last 1 s."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeKubernetes(pods=True, registry_url=REGISTRY, time_scale=0.1, progress_deadline_scale=0.01) as fake:
        fake.load_image(GOOD)
        monkeypatch.setenv("KUBECONFIG", fake.write_kubeconfig(tmp_path / "kubeconfig"))
        yield fake
        assert not fake.internal_errors, fake.internal_errors


def deploy_fails(ctx):
    started = time.monotonic()
    with pytest.raises(StepFailed) as failure:
        runtime.deploy(ctx)
    elapsed = time.monotonic() - started
    assert elapsed < PROMPT, f"took {elapsed:.1f} s: {failure.value}"
    return str(failure.value)


def pod_names(kube):
    with kube._lock:
        return [k[2] for k in kube._objects if k[0] == "pods"]


def test_a_good_rollout_passes_with_replica_sets_and_ready_pods(kube, tmp_path):
    runtime.deploy(make_ctx(tmp_path, image=GOOD, healthcheck="/healthz", replicas=2, timeout=60))
    obj = kube.get_object("deployments", APP)
    assert obj["status"]["availableReplicas"] == 2
    assert obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert len(pod_names(kube)) == 2 and all(n.startswith(f"{APP}-") for n in pod_names(kube))


def test_an_image_in_the_registry_is_pulled(kube, tmp_path, busybox_image):
    image = f"{REGISTRY}/norn-gate/pushed:{uuid.uuid4().hex[:12]}"
    for argv in (["docker", "tag", busybox_image, image], ["docker", "push", "--quiet", image]):
        subprocess.run(argv, check=True, capture_output=True, timeout=120)
    runtime.deploy(make_ctx(tmp_path, image=image, replicas=1, timeout=60))
    assert kube.get_object("deployments", APP)["status"]["availableReplicas"] == 1


def test_an_image_the_cluster_cannot_pull_is_named_in_seconds(kube, tmp_path):
    image = f"{REGISTRY}/norn-gate/never-pushed:{uuid.uuid4().hex[:12]}"
    error = deploy_fails(make_ctx(tmp_path, image=image, replicas=2, timeout=60))
    assert f'cannot finish rolling out: pod "{APP}-' in error
    assert f'container "{APP}"' in error
    assert "ErrImagePull" in error or "ImagePullBackOff" in error
    # The kubelet's reason, from its event: the tag is not in the registry.
    assert f'Failed to pull image "{image}"' in error and "not found" in error


def test_a_crash_loop_is_named_with_restarts_and_exit_code(kube, tmp_path):
    # The container's command exits at once, before its readiness probe could pass.
    ctx = make_ctx(tmp_path, image=GOOD, healthcheck="/healthz", replicas=1, env={EXIT_AFTER_ENV: "0"},
                   timeout=60)
    error = deploy_fails(ctx)
    assert re.search(f'container "{APP}": CrashLoopBackOff: restarted [1-9][0-9]* times, last exit code 1 '
                     r"\(Error\)", error), error
    assert "kubectl logs --previous" in error


def test_crash_on_start_without_a_health_check_is_caught_by_min_ready_seconds(kube, tmp_path, settings):
    settings.NORN_KUBE_MIN_READY_SECONDS = 10  # 1 s in the fake's time; the app dies after 0.3 s
    ctx = make_ctx(tmp_path, image=GOOD, healthcheck=None, replicas=1, env={EXIT_AFTER_ENV: "0.3"}, timeout=60)
    error = deploy_fails(ctx)
    assert "CrashLoopBackOff" in error
    assert kube.get_object("deployments", APP)["spec"]["minReadySeconds"] == 10


def test_without_min_ready_seconds_a_crash_on_start_would_pass(kube, tmp_path, settings):
    """What the setting is for: with 0, the pod counts as available the moment it starts."""
    settings.NORN_KUBE_MIN_READY_SECONDS = 0
    ctx = make_ctx(tmp_path, image=GOOD, healthcheck=None, replicas=1, env={EXIT_AFTER_ENV: "0.5"}, timeout=60)
    runtime.deploy(ctx)
    assert kube.get_object("deployments", APP)["status"]["availableReplicas"] == 1


def test_a_failing_readiness_probe_is_named_after_its_failure_threshold(kube, tmp_path):
    error = deploy_fails(make_ctx(tmp_path, image=GOOD, healthcheck="/fail", replicas=1, timeout=60))
    assert f'container "{APP}": readiness probe failing (GET /fail on port 8000): failed 3 times' in error
    assert "failureThreshold 3: Readiness probe failed: HTTP probe failed with statuscode: 503" in error


def test_pod_security_refusal_is_named_from_the_replica_set(kube, tmp_path):
    kube.create({"metadata": {"name": "locked", "labels": {ENFORCE_LABEL: "restricted"}}}, plural="namespaces")
    ctx = make_ctx(tmp_path, image=GOOD, namespace="locked", replicas=1, timeout=60,
                   extra="security:\n  runAsNonRoot: false\n")
    error = deploy_fails(ctx)
    assert "cannot create pods (FailedCreate)" in error
    assert 'violates PodSecurity "restricted:latest": runAsNonRoot != true' in error
    assert not pod_names(kube)


def test_norns_default_security_context_passes_the_restricted_profile(kube, tmp_path):
    kube.create({"metadata": {"name": "locked", "labels": {ENFORCE_LABEL: "restricted"}}}, plural="namespaces")
    runtime.deploy(make_ctx(tmp_path, image=GOOD, namespace="locked", replicas=1, timeout=60))
    assert kube.get_object("deployments", APP, namespace="locked")["status"]["availableReplicas"] == 1


@pytest.fixture
def short_deadline(tmp_path, monkeypatch):
    """Like kube, but the 600 s progress deadline lasts 0.6 s: shorter than three failed probes."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeKubernetes(pods=True, registry_url=REGISTRY, time_scale=0.1, progress_deadline_scale=0.001) as fake:
        fake.load_image(GOOD)
        monkeypatch.setenv("KUBECONFIG", fake.write_kubeconfig(tmp_path / "kubeconfig"))
        yield fake
        assert not fake.internal_errors, fake.internal_errors


def test_the_progress_deadline_still_fails_a_rollout_with_no_named_cause(short_deadline, tmp_path):
    error = deploy_fails(make_ctx(tmp_path, image=GOOD, healthcheck="/fail", replicas=1, timeout=60))
    assert f'deployment "{APP}" exceeded its progress deadline' in error
    assert f'ReplicaSet "{APP}-' in error and "has timed out progressing" in error


def test_without_rights_to_read_pods_the_deployment_alone_decides(short_deadline, tmp_path):
    short_deadline.fail_next("GET", r"/replicasets", status_code=403, count=100, message="replicasets is forbidden")
    ctx = make_ctx(tmp_path, image=GOOD, healthcheck="/fail", replicas=1, timeout=60)
    assert "exceeded its progress deadline" in deploy_fails(ctx)
    assert "Cannot read the new pods (Forbidden: replicasets is forbidden)" in ctx.text()


# --- through the pipeline: the step fails in seconds, auto-rollback follows ----------------------

DOCKERFILE = 'FROM norn-busybox:1\nCMD ["sh", "-c", "sleep 3600"]\n'
pipeline = pytest.mark.django_db(transaction=True)


def run(deployment):
    pipeline_module.execute(deployment.pk)
    deployment.refresh_from_db()
    return deployment


@pipeline
def test_a_crashing_release_fails_in_seconds_and_is_rolled_back(make_app, tmp_path, norn_dirs, busybox_image,
                                                                settings, monkeypatch):
    settings.NORN_RUNTIME = "kubernetes"
    settings.NORN_REGISTRY_URL = f"{REGISTRY}/norn-gate"
    settings.NORN_KUBE_MIN_READY_SECONDS = 10
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeKubernetes(pods=True, registry_url=REGISTRY, time_scale=0.1) as kube:
        monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
        repo = make_repo(tmp_path / "repos", "kweb", {"Dockerfile": DOCKERFILE})
        make_app("kweb", f"app: kweb\nrole: webserver\nrepo:\n  url: {repo.file_url}\nbuild: {{}}\nport: 8000\n")
        good = run(request_deployment("kweb"))
        assert good.status == "deployed", good.error
        # The next release's image exits a moment after it starts (the fake reads its ENV from the registry).
        repo.commit({"Dockerfile": DOCKERFILE + f"ENV {EXIT_AFTER_ENV}=0.3\n"}, "crashes on start")
        bad = run(request_deployment("kweb"))
        assert bad.status == "failed"
        assert 'container "kweb": CrashLoopBackOff' in bad.error
        step = bad.steps.get(name="deploy")
        assert (step.finished_at - step.started_at).total_seconds() < PROMPT
        assert f"rolling back automatically to {good.image}" in bad.error
        rollback = run(Deployment.objects.get(kind="rollback"))
        assert rollback.status == "deployed", rollback.error
        image = kube.get_object("deployments", "kweb")["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == good.image
        assert not kube.internal_errors, kube.internal_errors


def test_a_deploy_refused_by_a_resource_quota_fails_in_seconds_naming_the_quota(kube, tmp_path):
    kube.create({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute"},
                 "spec": {"hard": {"requests.memory": "256Mi"}}}, plural="resourcequotas")
    ctx = make_ctx(tmp_path, image=GOOD, replicas=1, timeout=60,
                   extra="resources:\n  requests:\n    memory: 512Mi\n")
    error = deploy_fails(ctx)
    assert "cannot create pods (FailedCreate)" in error, error
    assert re.search(f'pods "{APP}-[a-z0-9]+-[a-z0-9]{{5}}" is forbidden: exceeded quota: compute, requested: '
                     r"requests.memory=512Mi, used: requests.memory=0, limited: requests.memory=256Mi", error), error
    assert not pod_names(kube)
