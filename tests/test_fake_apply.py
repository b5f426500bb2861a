"""Server-side apply in the fake Kubernetes API server (tests/support/fake_kube_apply.py),
driven by the real `kubectl apply --server-side` and the official Python client: field
ownership in managedFields, removal of fields a manager stops applying, conflicts, force."""

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.support.fake_kube_apply import from_fields_v1
from tests.support.fake_kubernetes import FakeKubernetes

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
APPLY = "application/apply-patch+yaml"


def manifest(replicas=2, env=None, annotations=None, image="app:v1"):
    labels = {"app": "web"}
    container = {"name": "app", "image": image}
    if env is not None:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    meta = {"name": "web", "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    spec = {"selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


@pytest.fixture
def kube():
    with FakeKubernetes(progress_deadline_scale=0.002, time_scale=0.01) as fake:
        for image in ("app:v1", "app:v2", "proxy:1"):  # what the manifests here run
            fake.load_image(image)
        yield fake
        assert not fake.internal_errors, fake.internal_errors


@pytest.fixture
def kubeconfig(kube, tmp_path):
    return kube.write_kubeconfig(str(tmp_path / "kubeconfig"))


@pytest.fixture
def apps(kubeconfig):
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    with client.ApiClient(configuration) as api:
        yield client.AppsV1Api(api)


@pytest.fixture
def kubectl(kubeconfig, tmp_path):
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def run(*args, stdin=None):
        return subprocess.run([KUBECTL, f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp_path / 'cache'}", *args],
                              input=stdin, capture_output=True, text=True, timeout=60, env=env)

    return run


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def apply(apps, body, manager, force=False):
    return apps.patch_namespaced_deployment("web", "default", body, field_manager=manager, force=force,
                                            _content_type=APPLY)


def owners(kube, name="web"):
    """{manager: (operation, set of fields as paths of names)}"""
    out = {}
    for entry in kube.get_object("deployments", name)["metadata"]["managedFields"]:
        paths = {tuple(key for _, key in path) for path in from_fields_v1(entry["fieldsV1"])}
        out[entry["manager"]] = (entry["operation"], paths)
    return out


REPLICAS = ("spec", "replicas")


@needs_kubectl
def test_kubectl_server_side_apply_creates_and_records_the_manager(kube, kubectl):
    result = kubectl("apply", "--server-side", "--field-manager=alice", "-f", "-", stdin=yaml.safe_dump(manifest()))
    assert result.returncode == 0, result.stderr
    assert "serverside-applied" in result.stdout

    shown = yaml.safe_load(kubectl("get", "deployment", "web", "-o", "yaml", "--show-managed-fields").stdout)
    [entry] = shown["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"], entry["fieldsType"]) == ("alice", "Apply", "FieldsV1")
    fields = entry["fieldsV1"]
    assert fields["f:spec"]["f:replicas"] == {} and fields["f:spec"]["f:selector"] == {}  # the selector is atomic
    container = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"app"}']
    assert container == {".": {}, "f:image": {}, "f:name": {}}
    # Defaulted fields belong to nobody.
    assert "f:strategy" not in fields["f:spec"]
    assert shown["spec"]["strategy"]["type"] == "RollingUpdate"


@needs_kubectl
def test_kubectl_sees_a_conflict_with_another_manager_and_force_takes_the_field(kube, kubectl):
    kubectl("apply", "--server-side", "--field-manager=alice", "-f", "-", stdin=yaml.safe_dump(manifest()))
    scaled = kubectl("scale", "deployment", "web", "--replicas=4")
    assert scaled.returncode == 0, scaled.stderr
    assert REPLICAS not in owners(kube)["alice"][1]  # an Update takes the fields it changes

    refused = kubectl("apply", "--server-side", "--field-manager=alice", "-f", "-",
                      stdin=yaml.safe_dump(manifest(replicas=3)))
    assert refused.returncode != 0
    assert "Apply failed with 1 conflict: conflict with " in refused.stderr
    assert ": .spec.replicas" in refused.stderr
    assert kube.get_object("deployments", "web")["spec"]["replicas"] == 4

    forced = kubectl("apply", "--server-side", "--field-manager=alice", "--force-conflicts", "-f", "-",
                     stdin=yaml.safe_dump(manifest(replicas=3)))
    assert forced.returncode == 0, forced.stderr
    assert kube.get_object("deployments", "web")["spec"]["replicas"] == 3
    assert REPLICAS in owners(kube)["alice"][1]
    assert all(REPLICAS not in paths for manager, (_, paths) in owners(kube).items() if manager != "alice")


def test_conflict_status_names_the_fields_and_managers(kube, apps):
    apply(apps, manifest(env={"A": "1"}), "alice")
    with pytest.raises(ApiException) as refused:
        apply(apps, manifest(replicas=5, env={"A": "2"}, image="app:v2"), "bob")
    status = json.loads(refused.value.body)
    assert (refused.value.status, status["reason"]) == (409, "Conflict")
    assert status["message"] == (
        'Apply failed with 3 conflicts: conflicts with "alice" using apps/v1:\n'
        '- .spec.replicas\n'
        '- .spec.template.spec.containers[name="app"].env[name="A"].value\n'
        '- .spec.template.spec.containers[name="app"].image')
    assert {c["field"] for c in status["details"]["causes"]} == {
        ".spec.replicas", '.spec.template.spec.containers[name="app"].image',
        '.spec.template.spec.containers[name="app"].env[name="A"].value'}
    # The same values are no conflict: both managers own them.
    apply(apps, manifest(env={"A": "1"}), "bob")
    assert REPLICAS in owners(kube)["alice"][1] and REPLICAS in owners(kube)["bob"][1]


def test_fields_a_manager_stops_applying_are_removed_unless_someone_else_owns_them(kube, apps):
    apply(apps, manifest(env={"A": "1", "B": "2"}, annotations={"x": "1", "y": "2"}), "alice")
    apply(apps, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "annotations": {"y": "2"}},
                 "spec": {"template": {"spec": {"containers": [
                     {"name": "app", "env": [{"name": "B", "value": "2"}]},
                     {"name": "sidecar", "image": "proxy:1"}]}}}}, "bob")

    apply(apps, manifest(replicas=None, env={}), "alice")

    stored = kube.get_object("deployments", "web")
    annotations = stored["metadata"]["annotations"]
    assert "x" not in annotations and annotations["y"] == "2"  # x was alice's alone
    containers = stored["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "sidecar"]
    assert containers[0]["env"] == [{"name": "B", "value": "2"}]  # bob owns B too
    assert stored["spec"]["replicas"] == 1  # nobody owns it any more: removed, then defaulted


def test_apply_of_yaml_text_and_required_field_manager(kube, apps):
    # The Python client only sends dicts (as JSON, which is YAML too); this is YAML proper.
    body = yaml.safe_dump(manifest(replicas=3))
    request = urllib.request.Request(
        f"{kube.url}/apis/apps/v1/namespaces/default/deployments/web?fieldManager=alice", data=body.encode(),
        method="PATCH", headers={"Content-Type": APPLY, "Authorization": f"Bearer {kube.token}"})
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=kube.ca_path)) as response:
        assert response.status == 201  # created by the apply
        assert json.load(response)["spec"]["replicas"] == 3

    with pytest.raises(ApiException) as refused:
        apps.patch_namespaced_deployment("web", "default", manifest(), _content_type=APPLY)
    assert refused.value.status == 422
    assert "fieldManager: Required value: is required for apply patch" in json.loads(refused.value.body)["message"]


def test_an_unchanged_apply_is_a_no_op(kube, apps):
    apply(apps, manifest(), "alice")
    settled = wait_for(lambda: (d := kube.get_object("deployments", "web"))["status"].get("availableReplicas") == 2
                       and d)
    again = apply(apps, manifest(), "alice")
    assert again.metadata.resource_version == settled["metadata"]["resourceVersion"]
    assert kube.get_object("deployments", "web")["metadata"]["managedFields"] == settled["metadata"]["managedFields"]


def test_updates_by_other_means_record_an_update_manager(kube, apps):
    apply(apps, manifest(), "alice")
    apps.patch_namespaced_deployment("web", "default", {"metadata": {"annotations": {"team": "shop"}}},
                                     field_manager="kubectl-edit")
    operation, paths = owners(kube)["kubectl-edit"]
    assert operation == "Update"
    assert ("metadata", "annotations", "team") in paths
