"""Tests for tests/support/fake_kubernetes.py, driven by the real clients Norn uses.

Every check goes through the official ``kubernetes`` Python client or the real ``kubectl``
binary, so the fake is held to the wire contract those clients expect.  No Django here.
"""
import base64
import http.client
import json
import os
import shutil
import ssl
import subprocess
import threading
import time

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.support.fake_kubernetes import FakeKubernetes

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def deployment(name="web", images=(("app", "app:v1"), ("sidecar", "proxy:1.0")), replicas=2, labels=None):
    labels = labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": n, "image": i} for n, i in images]}}}}


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def status_of(exc):
    return json.loads(exc.body)


# Tests of the pod-count rollout simulation of FakeKubernetes(pods=False): its rollout modes
# ("stuck", "manual" with advance()) and failing_images step Deployment status by counts alone,
# which the pod controller (the default) does not, so these tests opt out of it by name.
POD_COUNT_TESTS = set()


def pod_counts(test):
    POD_COUNT_TESTS.add(test.__name__)
    return test


# What the Deployments here run: loaded, so the pod controller's kubelet pulls them.
IMAGES = ("app:v1", "app:v2", "app:v3", "proxy:1.0", "proxy:2.0", "busybox", "app", "registry.local/api:1.2")


@pytest.fixture
def kube(request):
    pods = request.node.originalname not in POD_COUNT_TESTS
    with FakeKubernetes(progress_deadline_scale=0.002, time_scale=0.01, pods=pods) as fake:
        if pods:
            for image in IMAGES:
                fake.load_image(image)
        yield fake
        assert not fake.internal_errors, fake.internal_errors


@pytest.fixture
def kubeconfig(kube, tmp_path):
    return kube.write_kubeconfig(str(tmp_path / "kubeconfig"))


def api_client_for(kubeconfig_path):
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig_path, client_configuration=configuration)
    return client.ApiClient(configuration)


@pytest.fixture
def api(kubeconfig):
    with api_client_for(kubeconfig) as api_client:
        yield api_client


@pytest.fixture
def apps(api):
    return client.AppsV1Api(api)


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture
def kubectl(kubeconfig, tmp_path):
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def run(*args, timeout=60):
        return subprocess.run([KUBECTL, f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp_path / 'kube-cache'}",
                               *args], capture_output=True, text=True, timeout=timeout, env=env)

    return run


# --------------------------------------------------------------------------- kubectl
@needs_kubectl
def test_set_image_keeps_other_container_and_bumps_generation(kube, apps, kubectl):
    created = apps.create_namespaced_deployment("default", deployment())
    assert created.metadata.generation == 1

    result = kubectl("set", "image", "deployment/web", "app=app:v2")

    assert result.returncode == 0, result.stderr
    current = apps.read_namespaced_deployment("web", "default")
    assert [(c.name, c.image) for c in current.spec.template.spec.containers] == [
        ("app", "app:v2"), ("sidecar", "proxy:1.0")]
    assert current.metadata.generation == 2
    patch = [r for r in kube.requests if r.method == "PATCH"][-1]
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.body["spec"]["template"]["spec"]["$setElementOrder/containers"] == [
        {"name": "app"}, {"name": "sidecar"}]


@needs_kubectl
def test_rollout_status_succeeds_when_rollout_completes(kube, apps, kubectl):
    apps.create_namespaced_deployment("default", deployment(replicas=3))
    assert kubectl("set", "image", "deployment/web", "app=app:v2").returncode == 0

    result = kubectl("rollout", "status", "deployment/web", "--timeout=30s")

    assert result.returncode == 0, result.stderr
    assert 'deployment "web" successfully rolled out' in result.stdout
    assert any(r.query.get("watch") == "true" for r in kube.requests), "rollout status is expected to watch"
    status = apps.read_namespaced_deployment_status("web", "default").status
    assert (status.observed_generation, status.replicas, status.updated_replicas, status.ready_replicas,
            status.available_replicas, status.unavailable_replicas) == (2, 3, 3, 3, 3, None)
    progressing = next(c for c in status.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason) == ("True", "NewReplicaSetAvailable")


@pod_counts
@needs_kubectl
def test_rollout_status_fails_when_image_never_becomes_ready(kube, apps, kubectl):
    kube.failing_images.add("broken")
    apps.create_namespaced_deployment("default", deployment())
    assert kubectl("rollout", "status", "deployment/web", "--timeout=30s").returncode == 0

    assert kubectl("set", "image", "deployment/web", "app=app:broken").returncode == 0
    result = kubectl("rollout", "status", "deployment/web", "--timeout=30s")

    assert result.returncode != 0
    assert 'deployment "web" exceeded its progress deadline' in result.stderr
    status = apps.read_namespaced_deployment("web", "default").status
    progressing = next(c for c in status.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason) == ("False", "ProgressDeadlineExceeded")
    # The old pods keep serving while the new one is stuck, as with a real RollingUpdate.
    assert (status.updated_replicas, status.available_replicas, status.replicas) == (1, 2, 3)


@pod_counts
@needs_kubectl
def test_stuck_rollout_mode_applies_per_deployment(kube, apps, kubectl):
    apps.create_namespaced_deployment("default", deployment("stuck"))
    apps.create_namespaced_deployment("default", deployment("fine"))
    kube.set_rollout_mode("stuck", "stuck")

    assert kubectl("rollout", "status", "deployment/fine", "--timeout=30s").returncode == 0
    result = kubectl("rollout", "status", "deployment/stuck", "--timeout=30s")
    assert "exceeded its progress deadline" in result.stderr


@needs_kubectl
def test_kubectl_get_json_matches_the_stored_object(kube, apps, kubectl):
    apps.create_namespaced_deployment("default", deployment())
    wait_for(lambda: kube.get_object("deployments", "web")["status"].get("availableReplicas") == 2)

    result = kubectl("get", "deployment", "web", "-o", "json", "--show-managed-fields")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == kube.get_object("deployments", "web")
    # Without --show-managed-fields kubectl hides them, as from a real apiserver.
    hidden = json.loads(kubectl("get", "deployment", "web", "-o", "json").stdout)
    assert "managedFields" not in hidden["metadata"]
    assert "managedFields" in kube.get_object("deployments", "web")["metadata"]
    table = kubectl("get", "deployments")
    assert table.returncode == 0 and "web" in table.stdout


@needs_kubectl
def test_kubectl_create_generators_send_protobuf_that_the_fake_decodes(kube, apps, core, kubectl):
    assert kubectl("create", "namespace", "team-a").returncode == 0
    result = kubectl("create", "deployment", "api", "--image=registry.local/api:1.2", "--replicas=0",
                     "--port=8080", "-n", "team-a")
    assert result.returncode == 0, result.stderr
    assert kubectl("create", "service", "clusterip", "api", "--tcp=80:8080", "-n", "team-a").returncode == 0

    posts = [r for r in kube.requests if r.method == "POST"]
    assert {r.content_type for r in posts} == {"application/vnd.kubernetes.protobuf"}
    created = apps.read_namespaced_deployment("api", "team-a")
    assert created.spec.replicas == 0  # an explicit zero survives decoding
    container = created.spec.template.spec.containers[0]
    assert (container.image, container.ports[0].container_port, container.image_pull_policy) == (
        "registry.local/api:1.2", 8080, "IfNotPresent")
    service = core.read_namespaced_service("api", "team-a")
    assert (service.spec.ports[0].port, service.spec.ports[0].target_port, service.spec.type) == (80, 8080,
                                                                                                   "ClusterIP")


@needs_kubectl
def test_kubectl_create_secret_generic_round_trips(kube, core, kubectl):
    result = kubectl("create", "secret", "generic", "x", "--from-literal=k=v", "--from-literal=empty=")

    assert result.returncode == 0, result.stderr
    post = [r for r in kube.requests if r.method == "POST"][-1]
    assert post.content_type == "application/vnd.kubernetes.protobuf"  # raw bytes on the wire, base64 in JSON
    got = kubectl("get", "secret", "x", "-o", "jsonpath={.data.k}")
    assert got.returncode == 0, got.stderr
    assert base64.b64decode(got.stdout) == b"v"
    secret = core.read_namespaced_secret("x", "default")
    assert (secret.type, secret.data) == ("Opaque", {"k": "dg==", "empty": ""})


@needs_kubectl
def test_kubectl_apply_secret_with_string_data(kube, core, kubectl, tmp_path):
    manifest = tmp_path / "secret.json"
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "stringData": {"password": "one"}}
    manifest.write_text(json.dumps(body))
    first = kubectl("apply", "-f", str(manifest))
    assert first.returncode == 0, first.stderr

    body["stringData"]["password"] = "two"
    manifest.write_text(json.dumps(body))
    second = kubectl("apply", "-f", str(manifest))

    assert second.returncode == 0, second.stderr
    assert "configured" in second.stdout
    assert core.read_namespaced_secret("db", "default").data == {"password": base64.b64encode(b"two").decode()}
    assert "stringData" not in kube.get_object("secrets", "db")


@needs_kubectl
def test_kubectl_apply_creates_then_patches(kube, apps, kubectl, tmp_path):
    manifest = tmp_path / "web.json"
    manifest.write_text(json.dumps(deployment()))
    first = kubectl("apply", "-f", str(manifest))
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout

    manifest.write_text(json.dumps(deployment(images=(("app", "app:v3"), ("sidecar", "proxy:1.0")))))
    second = kubectl("apply", "-f", str(manifest))

    assert second.returncode == 0, second.stderr
    current = apps.read_namespaced_deployment("web", "default")
    assert [c.image for c in current.spec.template.spec.containers] == ["app:v3", "proxy:1.0"]
    assert current.metadata.generation == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in current.metadata.annotations


@needs_kubectl
def test_kubectl_scale_uses_the_scale_subresource(kube, apps, kubectl):
    apps.create_namespaced_deployment("default", deployment())

    result = kubectl("scale", "deployment/web", "--replicas=4")

    assert result.returncode == 0, result.stderr
    assert any(r.method == "PATCH" and r.path.endswith("/deployments/web/scale") for r in kube.requests)
    assert kubectl("rollout", "status", "deployment/web", "--timeout=30s").returncode == 0
    scale = apps.read_namespaced_deployment_scale("web", "default")
    assert (scale.spec.replicas, scale.status.replicas, scale.status.selector) == (4, 4, "app=web")
    assert apps.read_namespaced_deployment("web", "default").metadata.generation == 2


@needs_kubectl
def test_kubectl_with_wrong_token_is_unauthorized(kube, kubectl):
    kube.token = "rotated"
    result = kubectl("get", "deployments")
    assert result.returncode != 0
    assert "Unauthorized" in result.stderr or "provide credentials" in result.stderr


# --------------------------------------------------------------------------- python client
def test_strategic_merge_patch_merges_containers_by_name(kube, apps):
    apps.create_namespaced_deployment("default", deployment())

    patched = apps.patch_namespaced_deployment("web", "default", {"spec": {"template": {"spec": {
        "containers": [{"name": "sidecar", "image": "proxy:2.0"}, {"name": "debug", "image": "busybox"}]}}}})

    assert [(c.name, c.image) for c in patched.spec.template.spec.containers] == [
        ("app", "app:v1"), ("sidecar", "proxy:2.0"), ("debug", "busybox")]
    assert kube.requests[-1].content_type == "application/strategic-merge-patch+json"
    removed = apps.patch_namespaced_deployment("web", "default", {"spec": {"template": {"spec": {
        "containers": [{"name": "debug", "$patch": "delete"}]}}}})
    assert [c.name for c in removed.spec.template.spec.containers] == ["app", "sidecar"]
    assert removed.metadata.generation == 3


def test_strategic_merge_directives(kube, apps):
    apps.create_namespaced_deployment("default", deployment())

    patched = apps.patch_namespaced_deployment("web", "default", {"spec": {
        "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
        "template": {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                              "containers": [{"name": "app", "env": [{"name": "A", "value": "1"}]}]}}}})

    assert patched.spec.strategy.type == "Recreate" and patched.spec.strategy.rolling_update is None
    assert [c.name for c in patched.spec.template.spec.containers] == ["sidecar", "app"]
    assert patched.spec.template.spec.containers[1].env[0].value == "1"
    with pytest.raises(ApiException) as no_merge_key:
        apps.patch_namespaced_deployment("web", "default", {"spec": {"template": {"spec": {
            "containers": [{"image": "nameless"}]}}}})
    assert no_merge_key.value.status == 400


def test_merge_patch_and_json_patch(kube, apps):
    created = apps.create_namespaced_deployment("default", deployment())

    merged = apps.patch_namespaced_deployment("web", "default", {"metadata": {"labels": {"team": "core"}}},
                                              _content_type="application/merge-patch+json")
    assert merged.metadata.labels == {"app": "web", "team": "core"}
    assert merged.metadata.generation == 1  # metadata-only change
    assert int(merged.metadata.resource_version) > int(created.metadata.resource_version)

    # RFC 7386 replaces lists wholesale: the sidecar goes away.
    replaced = apps.patch_namespaced_deployment("web", "default", {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "app:v2"}]}}}}, _content_type="application/merge-patch+json")
    assert [c.name for c in replaced.spec.template.spec.containers] == ["app"]

    ops = [{"op": "test", "path": "/spec/replicas", "value": 2},
           {"op": "replace", "path": "/spec/replicas", "value": 4},
           {"op": "add", "path": "/metadata/annotations", "value": {"example.com/note": "1"}}]
    json_patched = apps.patch_namespaced_deployment("web", "default", ops)
    assert kube.requests[-1].content_type == "application/json-patch+json"
    assert json_patched.spec.replicas == 4
    assert json_patched.metadata.generation == 3

    with pytest.raises(ApiException) as failed:
        apps.patch_namespaced_deployment("web", "default", [{"op": "test", "path": "/spec/replicas", "value": 1}])
    assert failed.value.status == 422 and status_of(failed.value)["reason"] == "Invalid"


def test_error_statuses_surface_as_api_exceptions(kube, apps, core):
    with pytest.raises(ApiException) as missing:
        apps.read_namespaced_deployment("nope", "default")
    assert missing.value.status == 404
    assert status_of(missing.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'deployments.apps "nope" not found', "reason": "NotFound",
        "details": {"name": "nope", "group": "apps", "kind": "deployments"}, "code": 404}

    apps.create_namespaced_deployment("default", deployment())
    with pytest.raises(ApiException) as duplicate:
        apps.create_namespaced_deployment("default", deployment())
    assert duplicate.value.status == 409 and status_of(duplicate.value)["reason"] == "AlreadyExists"

    no_containers = deployment("empty", images=())
    with pytest.raises(ApiException) as invalid:
        apps.create_namespaced_deployment("default", no_containers)
    body = status_of(invalid.value)
    assert invalid.value.status == 422 and body["reason"] == "Invalid"
    assert body["message"] == 'Deployment.apps "empty" is invalid: spec.template.spec.containers: Required value'
    assert body["details"]["causes"] == [{"reason": "FieldValueRequired", "message": "Required value",
                                          "field": "spec.template.spec.containers"}]

    with pytest.raises(ApiException) as bad_name:
        apps.create_namespaced_deployment("default", deployment("Bad_Name", labels={"app": "x"}))
    assert bad_name.value.status == 422
    assert status_of(bad_name.value)["details"]["causes"][0]["field"] == "metadata.name"

    with pytest.raises(ApiException) as unnamed:
        apps.create_namespaced_deployment("default", {**deployment(), "metadata": {}})
    assert "metadata.name: Required value" in status_of(unnamed.value)["message"]

    with pytest.raises(ApiException) as no_namespace:
        core.create_namespaced_service("ghost", {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})
    assert no_namespace.value.status == 404
    assert status_of(no_namespace.value)["message"] == 'namespaces "ghost" not found'

    stale = apps.read_namespaced_deployment("web", "default")
    apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 3}})
    with pytest.raises(ApiException) as conflict:
        apps.replace_namespaced_deployment("web", "default", stale)
    assert conflict.value.status == 409 and status_of(conflict.value)["reason"] == "Conflict"


def test_deployment_defaults_and_metadata(kube, apps):
    body = deployment(images=(("app", "app"),))
    del body["spec"]["replicas"]
    created = apps.create_namespaced_deployment("default", body)

    meta, spec = created.metadata, created.spec
    assert meta.uid and meta.creation_timestamp and meta.namespace == "default" and meta.generation == 1
    assert int(meta.resource_version) > 0
    assert spec.replicas == 1 and spec.revision_history_limit == 10 and spec.progress_deadline_seconds == 600
    assert (spec.strategy.type, spec.strategy.rolling_update.max_surge,
            spec.strategy.rolling_update.max_unavailable) == ("RollingUpdate", "25%", "25%")
    assert spec.template.spec.containers[0].image_pull_policy == "Always"  # untagged means :latest


def test_replace_and_status_subresource_only_bump_generation_for_spec(kube, apps):
    kube.rollout_mode = "manual"
    apps.create_namespaced_deployment("default", deployment())
    current = apps.read_namespaced_deployment("web", "default")
    current.metadata.annotations = {"note": "hi"}
    assert apps.replace_namespaced_deployment("web", "default", current).metadata.generation == 1

    current = apps.read_namespaced_deployment("web", "default")
    current.spec.replicas = 5
    current.status = client.V1DeploymentStatus(replicas=99)  # ignored by the main resource
    replaced = apps.replace_namespaced_deployment("web", "default", current)
    assert (replaced.metadata.generation, replaced.status.replicas) == (2, None)

    status_write = apps.patch_namespaced_deployment_status("web", "default", {"status": {"replicas": 7}})
    assert (status_write.metadata.generation, status_write.status.replicas) == (2, 7)


@pod_counts
def test_manual_mode_advances_step_by_step(kube, apps):
    kube.rollout_mode = "manual"
    apps.create_namespaced_deployment("default", deployment(replicas=3))
    time.sleep(0.2)
    assert apps.read_namespaced_deployment("web", "default").status.observed_generation is None

    first = kube.advance("web")
    assert first["observedGeneration"] == 1 and first["updatedReplicas"] == 1 and "availableReplicas" not in first
    final = kube.advance("web", steps=None)
    assert (final["updatedReplicas"], final["availableReplicas"], final["replicas"]) == (3, 3, 3)

    apps.patch_namespaced_deployment("web", "default", {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "app:v2"}]}}}})
    mid = kube.advance("web", steps=2)
    # One new pod came up and replaced an old one: surge to 4 pods then back to 3.
    assert (mid["observedGeneration"], mid["updatedReplicas"], mid["replicas"], mid["availableReplicas"]) == (
        2, 1, 3, 3)
    assert kube.get_object("deployments", "web")["metadata"]["annotations"][
        "deployment.kubernetes.io/revision"] == "2"


def test_services_create_get_list_and_delete(kube, core):
    core.create_namespace({"metadata": {"name": "shop"}})
    service = {"metadata": {"name": "cart", "labels": {"tier": "web"}},
               "spec": {"selector": {"app": "cart"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    created = core.create_namespaced_service("shop", service)
    assert created.spec.cluster_ip and created.spec.type == "ClusterIP"
    core.create_namespaced_service("shop", {"metadata": {"name": "db", "labels": {"tier": "data"}},
                                            "spec": {"ports": [{"port": 5432}]}})

    assert core.read_namespaced_service("cart", "shop").spec.ports[0].target_port == 8080
    assert [s.metadata.name for s in core.list_namespaced_service("shop", label_selector="tier in (web)").items] \
        == ["cart"]
    assert [s.metadata.name for s in core.list_namespaced_service(
        "shop", field_selector="metadata.name=db").items] == ["db"]
    page = core.list_namespaced_service("shop", limit=1)
    assert len(page.items) == 1 and page.metadata._continue
    rest = core.list_namespaced_service("shop", limit=1, _continue=page.metadata._continue)
    assert [s.metadata.name for s in page.items + rest.items] == ["cart", "db"]

    core.delete_namespaced_service("db", "shop")
    core.delete_namespace("shop")  # takes its contents with it
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_service("cart", "shop")
    assert gone.value.status == 404


def test_secret_string_data_is_folded_into_data_and_never_returned(kube, core):
    body = client.V1Secret(metadata=client.V1ObjectMeta(name="db"),
                           data={"user": base64.b64encode(b"admin").decode(), "password": "b2xk"},
                           string_data={"password": "hunter2"})  # stringData wins on shared keys

    created = core.create_namespaced_secret("default", body)

    expected = {"user": "YWRtaW4=", "password": base64.b64encode(b"hunter2").decode()}
    assert (created.type, created.data, created.string_data) == ("Opaque", expected, None)
    assert created.metadata.generation is None
    raw = json.loads(core.read_namespaced_secret("db", "default", _preload_content=False).data)
    assert raw["data"] == expected and "stringData" not in raw and "status" not in raw
    assert "stringData" not in kube.get_object("secrets", "db")
    assert [s.metadata.name for s in core.list_namespaced_secret("default").items] == ["db"]

    patched = core.patch_namespaced_secret("db", "default", {"stringData": {"token": "t0k"}})
    assert patched.data == {**expected, "token": "dDBr"} and patched.string_data is None


def test_secret_data_must_be_base64(kube, core):
    with pytest.raises(ApiException) as undecodable:
        core.create_namespaced_secret("default", {"metadata": {"name": "db"}, "data": {"password": "not base64!"}})

    assert undecodable.value.status == 400
    body = status_of(undecodable.value)
    assert body["reason"] == "BadRequest"
    # Go's decoder reports the offending byte: the space after "not".
    assert body["message"] == ('Secret in version "v1" cannot be handled as a Secret: '
                               "illegal base64 data at input byte 3")
    assert kube.get_object("secrets", "db") is None


def test_secret_keys_must_be_config_keys(kube, core):
    with pytest.raises(ApiException) as invalid:
        core.create_namespaced_secret("default", {"metadata": {"name": "db"}, "stringData": {"bad key": "x"}})

    assert invalid.value.status == 422
    body = status_of(invalid.value)
    problem = ('Invalid value: "bad key": a valid config key must consist of alphanumeric characters, \'-\', \'_\' '
               "or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
               "'[-._a-zA-Z0-9]+')")
    assert body["reason"] == "Invalid"
    assert body["message"] == f'Secret "db" is invalid: data[bad key]: {problem}'
    assert body["details"] == {"name": "db", "kind": "Secret", "causes": [
        {"reason": "FieldValueInvalid", "message": problem, "field": "data[bad key]"}]}


def test_secret_type_is_defaulted_then_immutable(kube, core):
    core.create_namespaced_secret("default", {"metadata": {"name": "db"}, "stringData": {"k": "v"}})

    with pytest.raises(ApiException) as retyped:
        core.patch_namespaced_secret("db", "default", {"type": "example.com/custom"})

    assert retyped.value.status == 422
    assert status_of(retyped.value)["details"]["causes"] == [{
        "reason": "FieldValueInvalid", "field": "type",
        "message": 'Invalid value: "example.com/custom": field is immutable'}]
    # A replace that leaves `type` out gets Opaque again by defaulting, so it is accepted.
    replaced = core.replace_namespaced_secret("db", "default", {"metadata": {"name": "db"}, "data": {"k": "dzI="}})
    assert (replaced.type, replaced.data) == ("Opaque", {"k": "dzI="})


def test_discovery_lists_secrets_without_status_or_short_names(kube, core):
    resources = {r.name: r for r in core.get_api_resources().resources}

    secrets = resources["secrets"]
    assert (secrets.kind, secrets.namespaced, secrets.short_names, secrets.categories) == ("Secret", True, None, None)
    assert set(secrets.verbs) == {"create", "delete", "get", "list", "patch", "update", "watch"}
    assert "secrets/status" not in resources and "services/status" in resources
    assert resources["services"].short_names == ["svc"] and resources["services"].categories == ["all"]


def test_selectors(kube, core):
    for name, labels in (("a", {"tier": "web", "env": "prod"}), ("b", {"tier": "web"}), ("c", {"env": "dev"})):
        core.create_namespaced_service("default", {"metadata": {"name": name, "labels": labels},
                                                   "spec": {"ports": [{"port": 80}]}})

    def names(**kwargs):
        return [s.metadata.name for s in core.list_namespaced_service("default", **kwargs).items]

    assert names(label_selector="tier=web,env!=prod") == ["b"]
    assert names(label_selector="env notin (dev),!missing") == ["a", "b"]
    assert names(label_selector="env") == ["a", "c"]
    assert names(field_selector="metadata.name!=a") == ["b", "c"]
    with pytest.raises(ApiException) as unsupported:
        names(field_selector="spec.type=ClusterIP")
    assert unsupported.value.status == 400
    assert status_of(unsupported.value)["message"] == "field label not supported: spec.type"


def test_concurrent_writers_get_distinct_resource_versions(kube, kubeconfig, apps):
    apps.create_namespaced_deployment("default", deployment())
    versions, failures = [], []

    def writer(n):
        with api_client_for(kubeconfig) as api_client:
            own = client.AppsV1Api(api_client)
            for i in range(10):
                try:
                    patched = own.patch_namespaced_deployment("web", "default",
                                                              {"metadata": {"labels": {f"w{n}": str(i)}}})
                    versions.append(int(patched.metadata.resource_version))
                except ApiException as exc:  # pragma: no cover - reported below
                    failures.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert not failures and len(set(versions)) == 40
    labels = kube.get_object("deployments", "web")["metadata"]["labels"]
    assert {labels[f"w{n}"] for n in range(4)} == {"9"}


def test_fail_next_injects_status_errors(kube, apps):
    apps.create_namespaced_deployment("default", deployment())
    kube.fail_next("GET", r"/deployments/web$", status_code=500)

    with pytest.raises(ApiException) as injected:
        apps.read_namespaced_deployment("web", "default")
    assert injected.value.status == 500 and status_of(injected.value)["reason"] == "InternalError"
    assert apps.read_namespaced_deployment("web", "default").metadata.name == "web"

    kube.fail_next("*", "deployments", status_code=503, count=2)
    for _ in range(2):
        with pytest.raises(ApiException) as unavailable:
            apps.list_namespaced_deployment("default")
        assert unavailable.value.status == 503
    assert len(apps.list_namespaced_deployment("default").items) == 1


def test_wrong_token_gets_401_status(kube, kubeconfig):
    kube.token = "rotated"
    with api_client_for(kubeconfig) as api_client:
        with pytest.raises(ApiException) as rejected:
            client.CoreV1Api(api_client).list_namespace()
    assert rejected.value.status == 401 and status_of(rejected.value)["reason"] == "Unauthorized"


def test_watch_streams_events_from_a_resource_version(kube, apps):
    start = apps.list_namespaced_deployment("default").metadata.resource_version
    kube.rollout_mode = "manual"
    apps.create_namespaced_deployment("default", deployment())
    apps.patch_namespaced_deployment("web", "default", {"metadata": {"labels": {"x": "y"}}})
    apps.delete_namespaced_deployment("web", "default")

    events = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        apps.list_namespaced_deployment, "default", resource_version=start, timeout_seconds=1)]

    assert events == [("ADDED", "web"), ("MODIFIED", "web"), ("DELETED", "web")]


def test_raw_watch_with_watch_1_replays_state_and_honours_timeout(kube, apps):
    apps.create_namespaced_deployment("default", deployment())
    connection = http.client.HTTPSConnection("127.0.0.1", kube.port,
                                             context=ssl.create_default_context(cafile=kube.ca_path))
    started = time.monotonic()
    connection.request("GET", "/apis/apps/v1/namespaces/default/deployments?watch=1&timeoutSeconds=1",
                       headers={"Authorization": f"Bearer {kube.token}"})
    response = connection.getresponse()
    lines = response.read().decode().splitlines()
    connection.close()

    assert 1 <= time.monotonic() - started < 5
    assert response.getheader("Transfer-Encoding") == "chunked"
    first = json.loads(lines[0])
    assert (first["type"], first["object"]["kind"], first["object"]["metadata"]["name"]) == (
        "ADDED", "Deployment", "web")


def test_watch_from_an_expired_resource_version_gets_410():
    with FakeKubernetes(history_size=3, rollout_mode="manual") as kube:
        for n in range(3):
            kube.create({"metadata": {"name": f"ns-{n}"}}, plural="namespaces")
        connection = http.client.HTTPSConnection("127.0.0.1", kube.port,
                                                 context=ssl.create_default_context(cafile=kube.ca_path))
        connection.request("GET", "/api/v1/namespaces?watch=true&resourceVersion=1",
                           headers={"Authorization": f"Bearer {kube.token}"})
        event = json.loads(connection.getresponse().read().decode().splitlines()[0])
        connection.close()
    assert event["type"] == "ERROR" and event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"


def test_stop_ends_open_watches(kubeconfig, kube):
    finished = threading.Event()

    def watch_forever():
        with api_client_for(kubeconfig) as api_client:
            for _ in watch.Watch().stream(client.CoreV1Api(api_client).list_namespace, timeout_seconds=300):
                pass
        finished.set()

    threading.Thread(target=watch_forever, daemon=True).start()
    wait_for(lambda: any(r.query.get("watch", "").lower() == "true" for r in kube.requests))
    kube.stop()
    assert finished.wait(5), "watch did not end when the server stopped"


# --------------------------------------------------------------------------- strictness: fields, names, labels
def raw(kube, method, path, body=None, content_type="application/json"):
    """(status, Warning headers, parsed body) of one request sent without any client's help:
    the Python client itself refuses unknown fields in dict bodies before sending them."""
    connection = http.client.HTTPSConnection("127.0.0.1", kube.port,
                                             context=ssl.create_default_context(cafile=kube.ca_path))
    headers = {"Authorization": f"Bearer {kube.token}", "Content-Type": content_type}
    connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    response = connection.getresponse()
    result = response.status, response.headers.get_all("Warning") or [], json.loads(response.read() or b"null")
    connection.close()
    return result


DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


def typo_deployment(name="web"):
    body = deployment(name, images=(("app", "app:v1"),))
    body["spec"]["replica"] = 3
    body["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Never"
    return body


@needs_kubectl
def test_kubectl_apply_is_strict_about_unknown_fields(kube, apps, kubectl, tmp_path):
    manifest = tmp_path / "web.json"
    manifest.write_text(json.dumps(typo_deployment()))

    refused = kubectl("apply", "-f", str(manifest))

    assert refused.returncode != 0
    assert ('Error from server (BadRequest): error when creating "' in refused.stderr
            and 'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field '
                '"spec.replica", unknown field "spec.template.spec.containers[0].imagePullPolcy"' in refused.stderr)
    assert [r.query.get("fieldValidation") for r in kube.requests if r.method == "POST"] == ["Strict"]
    assert kube.get_object("deployments", "web") is None  # nothing half-written

    # On an existing object kubectl apply sends a strategic merge patch, refused the same way.
    manifest.write_text(json.dumps(deployment(images=(("app", "app:v1"),))))
    assert kubectl("apply", "-f", str(manifest)).returncode == 0
    manifest.write_text(json.dumps(typo_deployment()))
    patched = kubectl("apply", "-f", str(manifest))
    assert patched.returncode != 0 and "error when applying patch" in patched.stderr
    assert ('strict decoding error: unknown field "spec.replica", unknown field '
            '"spec.template.spec.containers[0].imagePullPolcy"') in patched.stderr
    stored = kube.get_object("deployments", "web")
    assert "replica" not in stored["spec"] and stored["metadata"]["generation"] == 1


@needs_kubectl
def test_kubectl_validate_warn_and_false_drop_unknown_fields(kube, kubectl, tmp_path):
    manifest = tmp_path / "web.json"
    manifest.write_text(json.dumps(typo_deployment()))

    warned = kubectl("apply", "--validate=warn", "-f", str(manifest))
    assert warned.returncode == 0, warned.stderr
    assert 'Warning: unknown field "spec.replica"' in warned.stderr
    assert 'Warning: unknown field "spec.template.spec.containers[0].imagePullPolcy"' in warned.stderr
    stored = kube.get_object("deployments", "web")
    assert "replica" not in stored["spec"] and stored["spec"]["replicas"] == 2
    assert stored["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"

    manifest.write_text(json.dumps(typo_deployment("api")))
    ignored = kubectl("apply", "--validate=false", "-f", str(manifest))
    assert ignored.returncode == 0 and "Warning" not in ignored.stderr, ignored.stderr
    assert "replica" not in kube.get_object("deployments", "api")["spec"]


def test_field_validation_directives_over_raw_http(kube):
    code, _, status = raw(kube, "POST", f"{DEPLOYMENTS}?fieldValidation=Strict", typo_deployment())
    assert (code, status["reason"]) == (400, "BadRequest")
    # In the order of the document (kubectl sorts keys; this body has "replica" after "template").
    assert status["message"] == ('Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
                                 'unknown field "spec.template.spec.containers[0].imagePullPolcy", unknown field '
                                 '"spec.replica"')

    # No directive means Warn, the apiserver's default since 1.23: dropped, one Warning header per field.
    code, warnings, created = raw(kube, "POST", DEPLOYMENTS, typo_deployment())
    assert code == 201 and "replica" not in created["spec"]
    assert warnings == ['299 - "unknown field \\"spec.template.spec.containers[0].imagePullPolcy\\""',
                        '299 - "unknown field \\"spec.replica\\""']

    code, _, status = raw(kube, "PATCH", f"{DEPLOYMENTS}/web?fieldValidation=Strict",
                          {"spec": {"replica": 5, "template": {"metadata": {"labelz": {"a": "b"}}}}},
                          "application/merge-patch+json")
    assert (code, status["message"]) == (400, 'strict decoding error: unknown field "spec.replica", '
                                               'unknown field "spec.template.metadata.labelz"')
    code, warnings, patched = raw(kube, "PATCH", f"{DEPLOYMENTS}/web?fieldValidation=Ignore", {"spec": {"replica": 5}},
                                  "application/strategic-merge-patch+json")
    assert (code, warnings, "replica" in patched["spec"]) == (200, [], False)
    assert patched["metadata"]["generation"] == 1  # an ignored field changes nothing

    code, _, status = raw(kube, "PUT", f"{DEPLOYMENTS}/web?fieldValidation=Sometimes", created)
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["message"] == ('UpdateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: '
                                 '"Sometimes": supported values: "", "Ignore", "Strict", "Warn"')

    # Secrets too: a v1 Secret has no spec.
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "spec": {"x": 1},
              "stringData": {"a": "b"}}
    code, _, status = raw(kube, "POST", "/api/v1/namespaces/default/secrets?fieldValidation=Strict", secret)
    assert (code, status["message"]) == (400, 'Secret in version "v1" cannot be handled as a Secret: strict decoding '
                                              'error: unknown field "spec"')
    code, warnings, stored = raw(kube, "POST", "/api/v1/namespaces/default/secrets", secret)
    assert (code, warnings, "spec" in stored) == (201, ['299 - "unknown field \\"spec\\""'], False)


def test_the_official_client_refuses_unknown_fields_before_sending(apps):
    # Why the raw requests above: the client Norn uses validates dict bodies against its models.
    with pytest.raises(Exception, match="replica"):
        apps.create_namespaced_deployment("default", typo_deployment(), field_validation="Strict")


def causes(exc):
    return [(c["field"], c["message"]) for c in status_of(exc)["details"]["causes"]]


def test_label_and_annotation_syntax_is_validated(kube, apps, core):
    bad = deployment(labels={"app": "web"})
    bad["metadata"]["labels"] = {"app": "bad value", "-team": "x", "a/b/c": "y", "Example.com/x": "z"}
    bad["metadata"]["annotations"] = {"ok.example/note": "free text is fine", "not ok": "x"}
    with pytest.raises(ApiException) as refused:
        apps.create_namespaced_deployment("default", bad)
    assert refused.value.status == 422 and status_of(refused.value)["reason"] == "Invalid"
    found = causes(refused.value)
    assert ("metadata.labels", 'Invalid value: "bad value": a valid label must be an empty string or consist of '
            "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
            "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
            "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')") in found
    assert ("metadata.labels", 'Invalid value: "-team": name part must consist of alphanumeric characters, \'-\', '
            "'_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
            "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')") in found
    assert any(f == "metadata.labels" and m.startswith('Invalid value: "a/b/c": a qualified name must consist')
               for f, m in found)
    assert any(f == "metadata.labels" and m.startswith('Invalid value: "Example.com/x": prefix part a lowercase '
                                                       "RFC 1123 subdomain") for f, m in found)
    assert [f for f, m in found if "not ok" in m] == ["metadata.annotations"]
    assert not any("ok.example/note" in m for _, m in found)
    assert kube.get_object("deployments", "web") is None

    long_value = deployment(labels={"app": "x" * 64})
    with pytest.raises(ApiException) as too_long:
        apps.create_namespaced_deployment("default", long_value)
    fields = {f: m for f, m in causes(too_long.value) if "must be no more than 63 characters" in m}
    assert set(fields) == {"metadata.labels", "spec.template.metadata.labels", "spec.selector.matchLabels"}

    apps.create_namespaced_deployment("default", deployment())
    with pytest.raises(ApiException) as relabel:
        apps.patch_namespaced_deployment("web", "default", {"metadata": {"labels": {"tier": "front end"}}})
    assert [f for f, _ in causes(relabel.value)] == ["metadata.labels"]

    service = {"metadata": {"name": "web"}, "spec": {"selector": {"app": "no spaces"}, "ports": [{"port": 80}]}}
    with pytest.raises(ApiException) as selector:
        core.create_namespaced_service("default", service)
    assert [f for f, _ in causes(selector.value)] == ["spec.selector"]


@needs_kubectl
def test_names_are_validated_per_kind(kube, kubectl, tmp_path):
    manifest = tmp_path / "objects.json"

    def apply(obj):
        manifest.write_text(json.dumps(obj))
        return kubectl("apply", "-f", str(manifest))

    # A Service name is a DNS-1035 label: no leading digit, even though a Deployment may have one.
    assert apply(deployment("9web")).returncode == 0
    service = apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "9web"},
                     "spec": {"selector": {"app": "9web"}, "ports": [{"port": 80}]}})
    assert service.returncode != 0
    assert ('The Service "9web" is invalid: metadata.name: Invalid value: "9web": a DNS-1035 label must consist of '
            "lower case alphanumeric characters or '-', start with an alphabetic character") in service.stderr
    # A Namespace name is a DNS-1123 label: no dots, which Deployments and Secrets may carry.
    namespace = kubectl("create", "namespace", "team.web")
    assert namespace.returncode != 0 and 'metadata.name: Invalid value: "team.web": a lowercase RFC 1123 label' \
        in namespace.stderr
    assert apply(deployment("team.web")).returncode == 0
    trailing = kubectl("create", "deployment", "web-", "--image=app:v1")
    assert trailing.returncode != 0 and 'metadata.name: Invalid value: "web-"' in trailing.stderr
    long_name = apply(deployment("a" * 254))
    assert long_name.returncode != 0 and "must be no more than 253 characters" in long_name.stderr


# --------------------------------------------------------------------------- defaulting and generation
@needs_kubectl
def test_defaults_match_the_apiserver(kube, apps, core, kubectl):
    body = deployment(images=(("app", "registry.example/app:v1"), ("sidecar", "proxy")))
    body["spec"]["template"]["spec"]["containers"][0].update(
        ports=[{"containerPort": 8000}],
        readinessProbe={"httpGet": {"port": 8000}}, livenessProbe={"tcpSocket": {"port": 8000}},
        env=[{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    apps.create_namespaced_deployment("default", body)
    core.create_namespaced_service("default", {"metadata": {"name": "web"},
                                               "spec": {"selector": {"app": "web"}, "ports": [{"port": 8000}]}})

    got = json.loads(kubectl("get", "deployment", "web", "-o", "json").stdout)
    spec = got["spec"]
    assert (spec["strategy"], spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (
        {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}, 10, 600)
    pod = spec["template"]["spec"]
    assert {k: pod[k] for k in ("restartPolicy", "dnsPolicy", "schedulerName", "terminationGracePeriodSeconds",
                                "securityContext")} == {
        "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
        "terminationGracePeriodSeconds": 30, "securityContext": {}}
    app, sidecar = pod["containers"]
    assert app["readinessProbe"] == {"httpGet": {"path": "/", "port": 8000, "scheme": "HTTP"}, "timeoutSeconds": 1,
                                     "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
    assert app["livenessProbe"]["tcpSocket"] == {"port": 8000} and app["livenessProbe"]["failureThreshold"] == 3
    assert app["env"][0]["valueFrom"]["fieldRef"] == {"apiVersion": "v1", "fieldPath": "metadata.name"}
    assert app["ports"] == [{"containerPort": 8000, "protocol": "TCP"}]
    assert (app["imagePullPolicy"], sidecar["imagePullPolicy"]) == ("IfNotPresent", "Always")
    assert (app["terminationMessagePath"], app["terminationMessagePolicy"]) == ("/dev/termination-log", "File")

    svc = json.loads(kubectl("get", "service", "web", "-o", "json").stdout)["spec"]
    assert (svc["type"], svc["sessionAffinity"], svc["ports"]) == (
        "ClusterIP", "None", [{"port": 8000, "targetPort": 8000, "protocol": "TCP"}])


@needs_kubectl
def test_generation_follows_the_spec_including_the_pod_template(kube, apps, kubectl):
    kube.rollout_mode = "manual"
    apps.create_namespaced_deployment("default", deployment())

    def generation():
        return kube.get_object("deployments", "web")["metadata"]["generation"]

    assert kubectl("annotate", "deployment", "web", "note=metadata only").returncode == 0
    assert kubectl("label", "deployment", "web", "team=core").returncode == 0
    assert generation() == 1
    # rollout restart writes spec.template.metadata.annotations: that is the pod template, so a new generation.
    restarted = kubectl("rollout", "restart", "deployment/web")
    assert restarted.returncode == 0, restarted.stderr
    stored = kube.get_object("deployments", "web")
    assert "kubectl.kubernetes.io/restartedAt" in stored["spec"]["template"]["metadata"]["annotations"]
    assert stored["metadata"]["generation"] == 2
    apps.patch_namespaced_deployment_status("web", "default", {"status": {"replicas": 1}})
    assert generation() == 2


@needs_kubectl
def test_pause_and_resume_show_in_the_progressing_condition(kube, apps, kubectl):
    apps.create_namespaced_deployment("default", deployment())

    def progressing():
        conditions = (kube.get_object("deployments", "web").get("status") or {}).get("conditions") or []
        return next(((c["status"], c["reason"], c["message"]) for c in conditions if c["type"] == "Progressing"),
                    None)

    wait_for(lambda: (progressing() or ("",))[1:2] == ("NewReplicaSetAvailable",))
    assert kubectl("rollout", "pause", "deployment/web").returncode == 0
    wait_for(lambda: progressing() == ("Unknown", "DeploymentPaused", "Deployment is paused"))
    assert kubectl("set", "image", "deployment/web", "app=app:v2").returncode == 0
    time.sleep(0.3)  # a paused Deployment does not roll out its new template
    assert progressing() == ("Unknown", "DeploymentPaused", "Deployment is paused")
    status = kube.get_object("deployments", "web")["status"]
    # Pausing is a spec change too (generation 2), the new image another (3): observed, not rolled out.
    assert (status["observedGeneration"], status["replicas"], status["availableReplicas"]) == (3, 2, 2)

    resumed = kubectl("rollout", "resume", "deployment/web")
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: progressing()[1] in ("DeploymentResumed", "ReplicaSetUpdated", "NewReplicaSetAvailable"))
    done = kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert progressing()[:2] == ("True", "NewReplicaSetAvailable")


def test_containers_are_validated_like_the_apiserver(kube, apps):
    body = deployment(images=(("app", "app:v1"),))
    body["spec"]["template"]["spec"]["containers"][0].update(
        ports=[{"containerPort": 70000}, {"containerPort": 80, "protocol": "tcp", "name": "web_http"}],
        env=[{"name": "A=B", "value": "1"}, {"name": "", "value": "2"}, {"name": "SPACE OK", "value": "3"}],
        imagePullPolicy="Sometimes",
        readinessProbe={"periodSeconds": 5}, livenessProbe={"tcpSocket": {"port": 80}, "successThreshold": 2},
        resources={"requests": {"cpu": "2", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}})
    with pytest.raises(ApiException) as refused:
        apps.create_namespaced_deployment("default", body)
    base = "spec.template.spec.containers[0]"
    assert causes(refused.value) == [
        (f"{base}.ports[0].containerPort", "Invalid value: 70000: must be between 1 and 65535, inclusive"),
        (f"{base}.ports[1].protocol", 'Unsupported value: "tcp": supported values: "SCTP", "TCP", "UDP"'),
        (f"{base}.ports[1].name", 'Invalid value: "web_http": must contain only alpha-numeric characters (a-z, '
                                  '0-9), and hyphens (-)'),
        (f"{base}.env[0].name", "Invalid value: \"A=B\": a valid environment variable name must consist only of "
                                "printable ASCII characters other than '='"),
        (f"{base}.env[1].name", "Required value"),
        (f"{base}.imagePullPolicy", 'Unsupported value: "Sometimes": supported values: "Always", "IfNotPresent", '
                                    '"Never"'),
        (f"{base}.livenessProbe.successThreshold", "Invalid value: 2: must be 1"),
        (f"{base}.readinessProbe", "Required value: must specify a handler type"),
        (f"{base}.resources.requests", 'Invalid value: "2": must be less than or equal to cpu limit of 1'),
    ]
    assert kube.get_object("deployments", "web") is None


def test_unparseable_quantities_fail_decoding(kube):
    body = deployment(images=(("app", "app:v1"),))
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"memory": "lots"}}
    code, _, status = raw(kube, "POST", DEPLOYMENTS, body)
    assert (code, status["message"]) == (400, 'Deployment in version "v1" cannot be handled as a Deployment: '
                                               "quantities must match the regular expression "
                                               "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"memory": "1.5Gi", "cpu": 2},
                                                                      "requests": {"cpu": "500m"}}
    assert raw(kube, "POST", DEPLOYMENTS, body)[0] == 201


@needs_kubectl
def test_kubectl_set_resources_is_refused_when_requests_exceed_limits(kube, apps, kubectl):
    apps.create_namespaced_deployment("default", deployment())
    refused = kubectl("set", "resources", "deployment/web", "-c", "app", "--requests=cpu=2", "--limits=cpu=1")
    assert refused.returncode != 0
    assert ('spec.template.spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal to '
            'cpu limit of 1') in refused.stderr
    accepted = kubectl("set", "resources", "deployment/web", "-c", "app", "--requests=cpu=250m,memory=64Mi",
                       "--limits=cpu=1,memory=128Mi")
    assert accepted.returncode == 0, accepted.stderr
    resources = kube.get_object("deployments", "web")["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}
