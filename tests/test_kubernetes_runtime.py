"""The Kubernetes runtime against the fake API server (tests/support/fake_kubernetes.py),
through the real `kubernetes` client, and cross-checked with the real kubectl: every
deploy server-side applies the Deployment and Service (tests/test_kubernetes_reconcile.py
has what that changes and keeps), and the rollout is judged the way `kubectl rollout
status` judges it."""

import base64
import json
import os
import shutil
import subprocess
import threading
import time
import uuid

import pytest
from kubernetes import client

from deployments import appdb, runner
from deployments.runtimes import kubeclient, kuberollout
from deployments.runtimes import kubernetes as runtime
from deployments.outcomes import StepFailed
from tests.support.contexts import parse_spec, step_context
from tests.support import kube_target

# The runtime reads and records its deployment's row (Deployment.kube_applied); here there is none.
pytestmark = pytest.mark.django_db

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")

APP = "web"
# The images the tests deploy: loaded into the cluster, so their pods pull them (an image nobody
# pushed nor loaded fails to pull, on the fake as on a real cluster).
IMAGES = ("registry.local/web:v1", "registry.local/web:v2", "registry.local/web:0123abc", "envoy:1.31")


@pytest.fixture
def kube(kube_cluster):
    """The fake cluster (or NORN_TEST_KUBECONFIG's real one) that the runtime finds through $KUBECONFIG.

    The fake's progress_deadline_scale turns the default 600 s progress
    deadline into 1.2 s, so stuck rollouts fail fast while healthy ones (a
    step every 50 ms) never come near it. A real cluster gets the images
    the tests name loaded into it.
    """
    for image in IMAGES:
        kube_target.make_available(kube_cluster, image)
    return kube_cluster


@pytest.fixture
def fast_retries(monkeypatch):
    """Shrink the backoff between retries, for tests that exhaust them on purpose."""
    monkeypatch.setattr(kubeclient, "RETRY_BACKOFF", 0.01)


@pytest.fixture
def kubectl(kube, tmp_path):
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def run(*args, timeout=60):
        return subprocess.run(
            [KUBECTL, f"--kubeconfig={os.environ['KUBECONFIG']}", f"--cache-dir={tmp_path / 'kube-cache'}", *args],
            capture_output=True, text=True, timeout=timeout, env=env,
        )

    return run


def make_ctx(tmp_path, image="registry.local/web:v1", port=8000, healthcheck="/healthz", replicas=3,
             namespace=None, env=None, extra="", timeout=30, cancel_reason=None, app=APP):
    text = f"app: {app}\nrole: webserver\nreplicas: {replicas}\n"
    if port:
        text += f"port: {port}\n"
        if healthcheck:
            text += f"healthcheck: {healthcheck}\n"
    if namespace:
        text += f"namespace: {namespace}\n"
    if env:
        text += "env:\n" + "".join(f"  {k}: {v!r}\n" for k, v in env.items())
    return step_context(
        parse_spec(text + extra), workdir=tmp_path, app_dir=tmp_path, image=image, timeout=timeout,
        commit_sha="0123456789abcdef0123456789abcdef01234567", cancel_reason=cancel_reason,
    )



def seeded_deployment(images=((APP, "registry.local/web:v1"), ("proxy", "envoy:1.31")), replicas=2, **spec):
    """A Deployment made by someone else: the app's container plus a sidecar."""
    labels = {"app.kubernetes.io/name": APP}
    containers = [{"name": n, "image": i} for n, i in images]
    containers[0]["env"] = [{"name": "FROM_OPERATOR", "value": "kept"}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": APP, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, **spec,
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": containers}}}}


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def writes(kube, method, path_end):
    return [r for r in kube.requests if r.method == method and r.path.endswith(path_end)]


# --- first and later deploys ---------------------------------------------------------


@pytest.mark.fake_kube_only("reads the recorded requests")
def test_first_deploy_creates_deployment_and_service_and_waits_for_the_rollout(kube, tmp_path):
    ctx = make_ctx(tmp_path, env={"LOG_LEVEL": "info"})

    runtime.deploy(ctx)

    deployment = kube.get_object("deployments", APP)
    meta, spec = deployment["metadata"], deployment["spec"]
    assert meta["labels"] == {"app.kubernetes.io/name": APP, "app.kubernetes.io/managed-by": "norn"}
    assert meta["annotations"]["norn.dev/deployment"] == ctx.public_id
    assert spec["replicas"] == 3
    assert spec["selector"] == {"matchLabels": {"app.kubernetes.io/name": APP}}
    [container] = spec["template"]["spec"]["containers"]
    assert (container["name"], container["image"]) == (APP, "registry.local/web:v1")
    assert container["ports"] == [{"containerPort": 8000, "protocol": "TCP"}]
    # As stored by the apiserver, which defaults the scheme and the probe's timings.
    assert container["readinessProbe"] == {"httpGet": {"path": "/healthz", "port": 8000, "scheme": "HTTP"},
                                           "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1,
                                           "failureThreshold": 3}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LOG_LEVEL"] == "info" and env["PORT"] == "8000"
    assert (env["NORN_APP"], env["NORN_DEPLOYMENT"]) == (APP, ctx.public_id)
    assert "PATH" not in env and "KUBECONFIG" not in env  # Norn's own host environment stays out

    service = kube.get_object("services", APP)
    assert service["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "norn"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": APP}
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(8000, 8000)]

    # deploy() returned only once the rollout was complete.
    status = deployment["status"]
    assert (status["observedGeneration"], status["updatedReplicas"], status["availableReplicas"],
            status["replicas"]) == (1, 3, 3, 3)
    assert any(r.query.get("watch") == "true" and r.query.get("fieldSelector") == f"metadata.name={APP}"
               for r in kube.requests)
    assert kube.get_object("secrets", f"{APP}-norn-env") is None  # no password, no Secret
    # The client was configured privately: the process-wide default still points nowhere.
    default = client.Configuration.get_default_copy()
    assert (default.host, default.api_key) == (client.Configuration().host, {})


@pytest.mark.fake_kube_only("compares with the fake's token")
def test_progress_lines_appear_once_each_in_the_output(kube, tmp_path):
    if not kube_target.is_real(kube):
        # minReadySeconds (10 s, no health check here) lasts 1 s on the fake instead of 0.1 s, so the
        # wait sees the ready pods before they count as available, as it does on a real cluster.
        kube.controller.time_scale = 0.1
    ctx = make_ctx(tmp_path, healthcheck=None)

    runtime.deploy(ctx)

    lines = ctx.lines()
    progress = [line for line in lines if line.startswith("Waiting for deployment") or "rolled out" in line]
    assert 'Waiting for deployment "web" rollout to finish: 0 of 3 updated replicas are available...' in lines
    assert progress[-1] == 'deployment "web" successfully rolled out'
    assert all(a != b for a, b in zip(progress, progress[1:])), "a line is logged only when it changes"
    assert kube.token not in "".join(lines)


@pytest.mark.fake_kube_only("reads the recorded requests")
def test_second_deploy_patches_only_the_app_container_and_keeps_the_sidecar(kube, tmp_path):
    kube.create(seeded_deployment())
    wait_for(lambda: (kube.get_object("deployments", APP)["status"].get("availableReplicas") == 2))
    ctx = make_ctx(tmp_path, image="registry.local/web:v2", replicas=2)

    runtime.deploy(ctx)

    deployment = kube.get_object("deployments", APP)
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [(APP, "registry.local/web:v2"), ("proxy", "envoy:1.31")]
    env = {e["name"]: e["value"] for e in containers[0]["env"]}
    assert env["FROM_OPERATOR"] == "kept"  # only the image and Norn's own facts change
    assert (env["NORN_DEPLOYMENT"], env["NORN_COMMIT"]) == (ctx.public_id, ctx.commit_sha)
    assert deployment["metadata"]["generation"] == 2
    assert deployment["metadata"]["annotations"]["norn.dev/deployment"] == ctx.public_id
    assert deployment["metadata"]["labels"] == {"app.kubernetes.io/name": APP}  # not relabelled as Norn's
    status = deployment["status"]
    assert (status["observedGeneration"], status["updatedReplicas"], status["replicas"]) == (2, 2, 2)

    [patch] = writes(kube, "PATCH", f"/deployments/{APP}")
    assert patch.content_type == "application/apply-patch+yaml"  # server-side apply
    assert patch.query["fieldManager"] == "norn" and patch.query["force"] == "true"
    assert [c["name"] for c in patch.body["spec"]["template"]["spec"]["containers"]] == [APP]
    assert writes(kube, "POST", "/deployments") == []
    assert "generation 1 -> 2" in "".join(ctx.lines())
    # The Service did not exist yet: a declared port gets one on any deploy.
    assert kube.get_object("services", APP)["spec"]["ports"][0]["port"] == 8000


def test_redeploy_of_a_norn_deployment_keeps_its_service(kube, tmp_path):
    runtime.deploy(make_ctx(tmp_path, image="registry.local/web:v1"))
    service = kube.get_object("services", APP)

    runtime.deploy(make_ctx(tmp_path, image="registry.local/web:v2"))

    assert kube.get_object("services", APP)["metadata"]["resourceVersion"] == service["metadata"]["resourceVersion"]
    assert kube.get_object("deployments", APP)["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.local/web:v2")


@pytest.mark.fake_kube_only("reads the recorded requests")
def test_deployment_without_the_app_container_fails_and_is_left_alone(kube, tmp_path):
    kube.create(seeded_deployment(images=(("main", "other:1"), ("proxy", "envoy:1.31"))))
    before = kube.get_object("deployments", APP)

    with pytest.raises(StepFailed) as failed:
        runtime.deploy(make_ctx(tmp_path, image="registry.local/web:v2"))

    assert 'has no container named "web" (it has: main, proxy)' in str(failed.value)
    assert kube.get_object("deployments", APP)["spec"] == before["spec"]
    assert writes(kube, "PATCH", f"/deployments/{APP}") == []


def test_worker_without_port_gets_no_service_and_no_probe(kube, tmp_path):
    runtime.deploy(make_ctx(tmp_path, port=None, replicas=1))

    [container] = kube.get_object("deployments", APP)["spec"]["template"]["spec"]["containers"]
    assert "ports" not in container and "readinessProbe" not in container
    assert kube.get_object("services", APP) is None


def test_missing_namespace_fails_clearly(kube, tmp_path):
    with pytest.raises(StepFailed) as failed:
        runtime.deploy(make_ctx(tmp_path, namespace="shop-prod"))

    message = str(failed.value)
    assert 'namespace "shop-prod" does not exist' in message
    assert "kubectl create namespace shop-prod" in message


def test_deploys_into_the_infraspec_namespace(kube, tmp_path):
    kube.create({"metadata": {"name": "shop-prod"}}, plural="namespaces")

    runtime.deploy(make_ctx(tmp_path, namespace="shop-prod", replicas=1))

    assert kube.get_object("deployments", APP, namespace="shop-prod")["status"]["availableReplicas"] == 1
    assert kube.get_object("services", APP, namespace="shop-prod") is not None
    assert kube.get_object("deployments", APP) is None


# --- the database password -----------------------------------------------------------

POSTGRES = "services:\n  postgres:\n    database: web_db\n"


@pytest.mark.fake_kube_only("reads the recorded requests")
def test_database_password_is_kept_in_a_secret_not_in_the_deployment(kube, tmp_path, settings):
    password = appdb.password(APP)  # the app's own role's, never the admin's
    ctx = make_ctx(tmp_path, extra=POSTGRES)

    runtime.deploy(ctx)

    deployment = kube.get_object("deployments", APP)
    assert password not in json.dumps(deployment)
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name in ("DATABASE_URL", "PGPASSWORD"):
        assert env[name] == {"name": name, "valueFrom": {"secretKeyRef": {"name": "web-norn-env", "key": name}}}
    assert env["PGDATABASE"]["value"] == "web_db"  # what holds no password stays a plain value
    assert env["PGUSER"]["value"] == appdb.role_name(APP)

    secret = kube.get_object("secrets", "web-norn-env")
    assert secret["type"] == "Opaque"
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "norn"
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"DATABASE_URL": appdb.container_env(APP, "web_db")["DATABASE_URL"], "PGPASSWORD": password}
    assert password in decoded["DATABASE_URL"]
    admin_password = settings.NORN_APP_DATABASES.get("PASSWORD")
    for request in kube.requests:
        if "/deployments" in request.path:
            assert password not in json.dumps(request.body)
        assert not admin_password or admin_password not in json.dumps(request.body)
    assert password not in "".join(ctx.lines())


@pytest.mark.fake_kube_only("reads the recorded requests")
def test_changed_password_updates_the_secret_on_the_next_deploy(kube, tmp_path, settings):
    settings.NORN_APP_DATABASES_KEY = "first-key"
    runtime.deploy(make_ctx(tmp_path, extra=POSTGRES))
    settings.NORN_APP_DATABASES_KEY = "second-key"  # rotated

    runtime.deploy(make_ctx(tmp_path, image="registry.local/web:v2", extra=POSTGRES))

    data = kube.get_object("secrets", "web-norn-env")["data"]
    assert base64.b64decode(data["PGPASSWORD"]).decode() == appdb.password(APP)
    assert len(writes(kube, "PATCH", "/secrets/web-norn-env")) == 2  # applied on each deploy


# --- rollouts that do not finish -----------------------------------------------------


def stuck_ctx(tmp_path, settings):
    """A rollout that stops making progress with nothing wrong in its pods (the gate names no pod):
    they run and are ready, but an hour of minReadySeconds keeps them from counting as available,
    so only the controller's progress deadline (1.2 s on the fake) ends the wait."""
    settings.NORN_KUBE_MIN_READY_SECONDS = 3600
    return make_ctx(tmp_path, healthcheck=None)


@pytest.mark.fake_kube_only("scales the progress deadline down")
def test_stuck_rollout_fails_with_the_progress_deadline(kube, tmp_path, settings):
    with pytest.raises(StepFailed) as failed:
        runtime.deploy(stuck_ctx(tmp_path, settings))

    assert 'deployment "web" exceeded its progress deadline' in str(failed.value)
    assert "has timed out progressing" in str(failed.value)  # the controller's own words


@pytest.mark.fake_kube_only("holds a rollout still")
def test_timeout_of_the_step_bounds_the_wait(kube, tmp_path):
    kube.set_rollout_mode(APP, "manual")  # no progress, but no deadline verdict either
    started = time.monotonic()

    with pytest.raises(StepFailed) as failed:
        runtime.deploy(make_ctx(tmp_path, timeout=2))

    assert 'deployment "web" did not finish rolling out within 2 s' in str(failed.value)
    assert "Waiting for deployment spec update to be observed..." in str(failed.value)
    assert time.monotonic() - started < 6


def test_paused_deployment_fails_instead_of_waiting(kube, tmp_path):
    kube.create(seeded_deployment(paused=True))

    with pytest.raises(StepFailed) as failed:
        runtime.deploy(make_ctx(tmp_path, image="registry.local/web:v2", replicas=2))

    assert 'deployment "web" is paused' in str(failed.value)
    assert "kubectl rollout resume deployment/web -n default" in str(failed.value)


@pytest.mark.fake_kube_only("holds a rollout still")
def test_cancel_during_the_wait_raises_cancelled(kube, tmp_path):
    kube.set_rollout_mode(APP, "manual")
    cancel = threading.Event()
    ctx = make_ctx(tmp_path, cancel_reason=lambda: "cancelled by alice" if cancel.is_set() else None)
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()

    with pytest.raises(runner.Cancelled) as cancelled:
        runtime.deploy(ctx)

    assert str(cancelled.value) == "cancelled by alice"
    # Noticed within one watch slice, not at the step's timeout.
    assert time.monotonic() - started < 0.5 + kuberollout.WATCH_SLICE_SECONDS + 1.5
    assert kube.get_object("deployments", APP) is not None  # what was accepted stays


# --- API errors ----------------------------------------------------------------------


@pytest.mark.fake_kube_only("injects API failures")
def test_transient_500s_are_retried(kube, tmp_path):
    kube.fail_next("GET", rf"/deployments/{APP}$", status_code=500, count=2)
    kube.fail_next("PATCH", rf"/deployments/{APP}\?", status_code=503, count=1)

    runtime.deploy(make_ctx(tmp_path))

    assert len(writes(kube, "PATCH", f"/deployments/{APP}")) == 2
    assert len([r for r in writes(kube, "GET", f"/deployments/{APP}") if not r.query]) >= 3
    assert kube.get_object("deployments", APP)["status"]["availableReplicas"] == 3


@pytest.mark.fake_kube_only("injects API failures")
def test_persistent_500s_fail_clearly(kube, tmp_path, fast_retries):
    kube.fail_next("GET", rf"/deployments/{APP}$", status_code=500, count=100)

    with pytest.raises(StepFailed) as failed:
        runtime.deploy(make_ctx(tmp_path))

    message = str(failed.value)
    assert 'failed to read deployment "web"' in message
    assert "Internal error occurred: injected failure (500 InternalError)" in message
    assert f"after {kubeclient.API_RETRIES} retries" in message
    assert len(writes(kube, "GET", f"/deployments/{APP}")) == kubeclient.API_RETRIES + 1


@pytest.mark.fake_kube_only("injects API failures")
def test_conflict_is_retried_with_a_fresh_read(kube, tmp_path):
    kube.create(seeded_deployment())
    kube.fail_next("PATCH", rf"/deployments/{APP}\?", status_code=409, count=1)
    ctx = make_ctx(tmp_path, image="registry.local/web:v2", replicas=2)

    runtime.deploy(ctx)

    assert len(writes(kube, "PATCH", f"/deployments/{APP}")) == 2
    assert "applying again (attempt 2 of 5)" in "".join(ctx.lines())
    assert kube.get_object("deployments", APP)["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.local/web:v2")


@pytest.mark.fake_kube_only("injects API failures")
def test_persistent_conflicts_fail_clearly(kube, tmp_path, fast_retries):
    kube.create(seeded_deployment())
    kube.fail_next("PATCH", rf"/deployments/{APP}\?", status_code=409, count=100)

    with pytest.raises(StepFailed) as failed:
        runtime.deploy(make_ctx(tmp_path, image="registry.local/web:v2"))

    assert f"{runtime.WRITE_ATTEMPTS} attempts" in str(failed.value)
    assert "(409 Conflict)" in str(failed.value)
    assert len(writes(kube, "PATCH", f"/deployments/{APP}")) == runtime.WRITE_ATTEMPTS


@pytest.mark.fake_kube_only("injects API failures")
def test_watch_failures_are_followed_by_a_fresh_read(kube, tmp_path, fast_retries):
    # One whole watch request fails, urllib3's retries included; the next one works.
    kube.fail_next("GET", r"watch=true", status_code=500, count=kubeclient.API_RETRIES + 1)
    ctx = make_ctx(tmp_path)

    runtime.deploy(ctx)

    assert "Watching the rollout failed" in "".join(ctx.lines())
    assert 'deployment "web" successfully rolled out' in ctx.lines()


@pytest.mark.fake_kube_only("injects API failures")
def test_persistent_watch_failures_fail_clearly(kube, tmp_path, fast_retries):
    kube.set_rollout_mode(APP, "manual")
    kube.fail_next("GET", r"watch=true", status_code=500, count=1000)

    with pytest.raises(StepFailed) as failed:
        runtime.deploy(make_ctx(tmp_path))

    message = str(failed.value)
    assert f"the watch failed {kuberollout.WATCH_ATTEMPTS} times in a row" in message
    assert "Internal error occurred: injected failure" in message


@pytest.mark.fake_kube_only("rotates the fake's token")
def test_wrong_token_fails_with_a_credentials_message(kube, tmp_path):
    kube.token = "rotated-" + uuid.uuid4().hex  # the kubeconfig still holds the old one
    ctx = make_ctx(tmp_path)

    with pytest.raises(StepFailed) as failed:
        runtime.deploy(ctx)

    message = str(failed.value)
    assert "rejected Norn's credentials" in message and "(401 Unauthorized)" in message
    kubeconfig = json.loads(open(os.environ["KUBECONFIG"]).read())
    old_token = kubeconfig["users"][0]["user"]["token"]
    assert old_token not in message and old_token not in "".join(ctx.lines())


@pytest.mark.fake_kube_only("stops the API server")
def test_unreachable_api_fails_clearly(kube, tmp_path, fast_retries):
    kube.stop()

    with pytest.raises(StepFailed) as failed:
        runtime.deploy(make_ctx(tmp_path))

    assert "cannot reach the Kubernetes API at https://127.0.0.1:" in str(failed.value)


def test_missing_configuration_names_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    with pytest.raises(StepFailed) as failed:
        runtime.deploy(make_ctx(tmp_path))

    message = str(failed.value)
    assert "no Kubernetes configuration found" in message
    assert str(tmp_path / "no-such-kubeconfig") in message
    assert "in-cluster service account" in message


def test_norn_kubeconfig_setting_and_context_are_honoured(kube, tmp_path, monkeypatch, settings):
    path = kube.write_kubeconfig(tmp_path / "norn-kubeconfig", context="prod")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "elsewhere"))
    settings.NORN_KUBECONFIG = path
    settings.NORN_KUBE_CONTEXT = "prod"

    ctx = make_ctx(tmp_path, replicas=1)
    runtime.deploy(ctx)
    assert f"kubeconfig {path}, context prod" in "".join(ctx.lines())

    settings.NORN_KUBE_CONTEXT = "staging"
    with pytest.raises(StepFailed) as failed:
        runtime.deploy(make_ctx(tmp_path, replicas=1))
    assert "cannot use NORN_KUBECONFIG" in str(failed.value) and "staging" in str(failed.value)


# --- status and remove ---------------------------------------------------------------


def test_status_reports_image_replicas_and_availability(kube, tmp_path):
    assert runtime.status(APP) is None
    ctx = make_ctx(tmp_path)
    runtime.deploy(ctx)

    current = runtime.status(APP)

    assert current["image"] == "registry.local/web:v1"
    assert (current["replicas"], current["updated"], current["available"]) == (3, 3, 3)
    assert (current["state"], current["deployment"], current["managed"]) == ("complete", ctx.public_id, True)
    assert current["message"] == 'deployment "web" successfully rolled out'


@pytest.mark.fake_kube_only("scales the progress deadline down")
def test_status_of_a_stuck_rollout_says_so(kube, tmp_path, settings):
    with pytest.raises(StepFailed):
        runtime.deploy(stuck_ctx(tmp_path, settings))

    current = runtime.status(APP)

    assert current["state"] == "failed" and current["available"] == 0


def test_remove_deletes_what_norn_created_and_nothing_else(kube, tmp_path, settings):
    runtime.deploy(make_ctx(tmp_path, extra=POSTGRES))

    assert runtime.remove(APP) == ["deployment/web", "service/web", "secret/web-norn-env"]

    assert kube.get_object("deployments", APP) is None
    assert kube.get_object("services", APP) is None
    assert kube.get_object("secrets", "web-norn-env") is None
    assert runtime.remove(APP) == []
    assert runtime.status(APP) is None


def test_remove_leaves_objects_norn_did_not_create(kube, tmp_path):
    kube.create(seeded_deployment())  # no managed-by label
    runtime.deploy(make_ctx(tmp_path, image="registry.local/web:v2", replicas=2))

    assert runtime.remove(APP) == ["service/web"]
    assert kube.get_object("deployments", APP) is not None


@pytest.mark.fake_kube_only("rotates the fake's token")
def test_status_and_remove_raise_kubernetes_error_on_api_failure(kube, fast_retries):
    kube.token = "rotated"

    with pytest.raises(runtime.KubernetesError, match="rejected Norn's credentials"):
        runtime.status(APP)
    with pytest.raises(runtime.KubernetesError, match="rejected Norn's credentials"):
        runtime.remove(APP)


# --- the same verdicts as kubectl ----------------------------------------------------


@needs_kubectl
def test_kubectl_agrees_that_norns_rollout_finished(kube, tmp_path, kubectl):
    ctx = make_ctx(tmp_path, image="registry.local/web:0123abc")
    runtime.deploy(ctx)

    status = kubectl("rollout", "status", f"deployment/{APP}", "--timeout=20s")
    image = kubectl("get", "deployment", APP, "-o", "jsonpath={.spec.template.spec.containers[0].image}")

    assert status.returncode == 0, status.stderr
    assert f'deployment "{APP}" successfully rolled out' in status.stdout
    assert ctx.lines()[-1] == f'deployment "{APP}" successfully rolled out'
    assert image.returncode == 0, image.stderr
    assert image.stdout == "registry.local/web:0123abc"


@needs_kubectl
@pytest.mark.fake_kube_only("scales the progress deadline down")
def test_kubectl_agrees_that_a_stuck_rollout_failed(kube, tmp_path, kubectl, settings):
    with pytest.raises(StepFailed) as failed:
        runtime.deploy(stuck_ctx(tmp_path, settings))

    result = kubectl("rollout", "status", f"deployment/{APP}", "--timeout=20s")

    assert result.returncode != 0
    verdict = f'deployment "{APP}" exceeded its progress deadline'
    assert verdict in result.stderr and verdict in str(failed.value)


@needs_kubectl
@pytest.mark.fake_kube_only("steps the rollout by hand")
def test_kubectl_sees_norns_progress_lines_verbatim(kube, tmp_path, kubectl):
    """Mid-rollout, Norn's rollout_status and kubectl print the same line."""
    kube.set_rollout_mode(APP, "manual")
    kube.create(seeded_deployment(images=((APP, "registry.local/web:v1"),), replicas=3))
    kube.advance(APP, steps=None)
    kubectl("set", "image", f"deployment/{APP}", f"{APP}=registry.local/web:v2")
    kube.advance(APP, steps=3)

    result = kubectl("rollout", "status", f"deployment/{APP}", "--watch=false")

    current = client.ApiClient().deserialize(json.dumps(kube.get_object("deployments", APP)), "V1Deployment",
                                             "application/json")
    state, message = kuberollout.rollout_status(current)
    assert state == "progressing"
    assert result.stdout.strip() == message


@pytest.mark.django_db
def test_the_deploy_step_uses_the_runtime_the_deployment_was_queued_for(kube, tmp_path, settings):
    # NORN_RUNTIME changed after this deployment was queued for Kubernetes:
    # the deployment's recorded runtime (ctx.runtime) decides, not the setting.
    from deployments.steps import deploy as deploy_step

    settings.NORN_RUNTIME = "docker"
    ctx = make_ctx(tmp_path, replicas=1)
    ctx.runtime = "kubernetes"
    deploy_step.run(ctx)
    [container] = kube.get_object("deployments", APP)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.local/web:v1"
    assert 'deployment "web" successfully rolled out' in ctx.lines()


# --- resources, securityContext and the database host (infraspec resources/security) ---------


RESOURCES = ("resources:\n  requests: {cpu: 250m, memory: 256Mi}\n  limits: {cpu: '1', memory: 512Mi}\n"
             "security: {runAsUser: 1000}\n")


@needs_kubectl
def test_the_deployments_pods_get_the_resources_and_the_restricted_security_context(kube, tmp_path, kubectl):
    ctx = make_ctx(tmp_path, replicas=1, extra=RESOURCES)

    runtime.deploy(ctx)

    # What the apiserver stored (and kubectl reads back), not only what Norn sent.
    result = kubectl("get", "deployment", APP, "-o", "jsonpath={.spec.template.spec}")
    assert result.returncode == 0, result.stderr
    pod = json.loads(result.stdout)
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    [container] = pod["containers"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"},
                                      "limits": {"cpu": "1", "memory": "512Mi"}}
    assert 'deployment "web" successfully rolled out' in ctx.lines()


@pytest.mark.fake_kube_only("reads the recorded requests")
def test_a_loopback_database_host_fails_the_deploy_before_anything_is_written(kube, tmp_path, settings):
    settings.NORN_KUBE_APP_DATABASES_HOST = None
    settings.NORN_APP_DATABASES = {**settings.NORN_APP_DATABASES, "HOST": "127.0.0.1"}
    ctx = make_ctx(tmp_path, extra=POSTGRES)
    ctx.runtime = "kubernetes"

    with pytest.raises(StepFailed) as failed:
        runtime.deploy(ctx)

    error = str(failed.value)
    assert "NORN_KUBE_APP_DATABASES_HOST is not set and NORN_APP_DATABASES_URL's host is 127.0.0.1" in error
    assert "Set NORN_KUBE_APP_DATABASES_HOST to an address the cluster's pods reach" in error
    assert not [r for r in kube.requests if r.method in ("POST", "PUT", "PATCH")]
    assert kube.get_object("deployments", APP) is None and kube.get_object("secrets", "web-norn-env") is None


def test_pods_get_the_configured_database_host(kube, tmp_path, settings):
    settings.NORN_KUBE_APP_DATABASES_HOST = "pg.databases.svc.cluster.local"
    ctx = make_ctx(tmp_path, extra=POSTGRES)
    ctx.runtime = "kubernetes"

    runtime.deploy(ctx)

    [container] = kube.get_object("deployments", APP)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PGHOST"] == "pg.databases.svc.cluster.local"
    url = base64.b64decode(kube.get_object("secrets", "web-norn-env")["data"]["DATABASE_URL"]).decode()
    assert url.startswith(f"postgres://{appdb.role_name(APP)}:") and "@pg.databases.svc.cluster.local:" in url


@pytest.mark.fake_kube_only("uses the fake's own kubelet")
def test_the_default_fake_refuses_an_image_nobody_pushed_or_loaded(kube, tmp_path):
    """The fake these tests run against does not accept everything: an image neither loaded into it
    nor in a registry fails to pull, so a runtime test passes only if its images could run."""
    with pytest.raises(StepFailed) as failed:
        runtime.deploy(make_ctx(tmp_path, image="registry.local/web:never-loaded", timeout=30))

    assert 'Failed to pull image "registry.local/web:never-loaded"' in str(failed.value)
    assert "ErrImagePull" in str(failed.value) or "ImagePullBackOff" in str(failed.value)
    assert kube.get_object("deployments", APP)["status"].get("availableReplicas", 0) == 0
