"""networking.k8s.io/v1 Ingresses on the fake API server, as strict as a real apiserver:
ValidateIngress's 422s (required fields, the pathType enum, hosts that are names),
the decoder's 400s (a value of the wrong JSON type; unknown fields under Strict
validation), discovery, list/get/apply/delete, and `kubectl get ingress`'s table.

Through the official Python client and the real kubectl, against the fake, or with
NORN_TEST_KUBECONFIG against a real cluster: the tests claim only what both do."""

import json
import os
import shutil
import subprocess

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
APPLY = {"field_manager": "norn", "force": True, "_content_type": "application/apply-patch+yaml"}
# Labelled as Norn's, so a real cluster's clean-up (tests/support/kube_target.py) removes them.
LABELS = {"app.kubernetes.io/managed-by": "norn", "app.kubernetes.io/name": "shop"}


def ingress(name="shop", hosts=("shop.example.com",), tls=True, **path_fields):
    path = {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "shop", "port": {"number": 8000}}},
            **path_fields}
    body = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "labels": dict(LABELS)},
            "spec": {"rules": [{"host": host, "http": {"paths": [path]}} for host in hosts]}}
    if tls:
        body["spec"]["tls"] = [{"hosts": list(hosts), "secretName": f"{name}-tls"}]
    return body


@pytest.fixture
def api(kube_cluster):
    configuration = client.Configuration()
    config.load_kube_config(config_file=os.environ["KUBECONFIG"], client_configuration=configuration)
    with client.ApiClient(configuration) as api:
        yield api


@pytest.fixture
def networking(api):
    return client.NetworkingV1Api(api)


@pytest.fixture
def create(api):
    """POST an Ingress body as it is (the client's own models would refuse bad ones before sending):
    returns (status code, the answer's JSON)."""

    def send(body, **query):
        request = api.param_serialize(
            "POST", "/apis/networking.k8s.io/v1/namespaces/default/ingresses", body=body,
            query_params=list(query.items()), auth_settings=["BearerToken"],
            header_params={"Content-Type": "application/json", "Accept": "application/json"})
        response = api.call_api(*request, _request_timeout=30)
        return response.status, json.loads(response.read())

    return send


@pytest.fixture
def kubectl(kube_cluster, tmp_path):
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def run(*args, stdin=None):
        return subprocess.run([KUBECTL, f"--kubeconfig={os.environ['KUBECONFIG']}",
                               f"--cache-dir={tmp_path / 'kube-cache'}", *args],
                              input=stdin, capture_output=True, text=True, timeout=60, env=env)

    return run


def refused(send):
    with pytest.raises(ApiException) as caught:
        send()
    return caught.value.status, json.loads(caught.value.body)


def invalid(create, body):
    """The causes of the 422 that creating `body` gets, as (field, message) pairs."""
    status, answer = create(body)
    assert (status, answer["reason"]) == (422, "Invalid"), answer
    assert answer["message"].startswith(f'Ingress.networking.k8s.io "{body["metadata"]["name"]}" is invalid: ')
    return causes(answer)


def causes(status):
    return {(cause["field"], cause["message"]) for cause in status["details"]["causes"]}


def test_an_applied_ingress_is_stored_listed_read_and_deleted(networking, kube_cluster):
    created = networking.patch_namespaced_ingress("shop", "default", ingress(hosts=("shop.example.com",
                                                                                    "www.shop.example.com")), **APPLY)
    assert created.metadata.generation == 1
    assert [rule.host for rule in created.spec.rules] == ["shop.example.com", "www.shop.example.com"]
    path = created.spec.rules[0].http.paths[0]
    assert (path.path, path.path_type, path.backend.service.name, path.backend.service.port.number) == (
        "/", "Prefix", "shop", 8000)
    assert created.spec.tls[0].secret_name == "shop-tls"
    assert created.metadata.managed_fields[0].manager == "norn"

    listed = networking.list_namespaced_ingress("default", label_selector="app.kubernetes.io/name=shop")
    assert [item.metadata.name for item in listed.items] == ["shop"]
    assert networking.read_namespaced_ingress("shop", "default").spec.tls[0].hosts == [
        "shop.example.com", "www.shop.example.com"]

    # Applying without tls removes it (Norn's https: off); the generation follows the spec.
    changed = networking.patch_namespaced_ingress("shop", "default", ingress(tls=False), **APPLY)
    assert changed.spec.tls is None and changed.metadata.generation == 2

    networking.delete_namespaced_ingress("shop", "default")
    status, body = refused(lambda: networking.read_namespaced_ingress("shop", "default"))
    assert status == 404 and body["message"] == 'ingresses.networking.k8s.io "shop" not found'


def test_a_path_needs_a_supported_path_type(create):
    body = ingress()
    del body["spec"]["rules"][0]["http"]["paths"][0]["pathType"]
    assert ("spec.rules[0].http.paths[0].pathType", "Required value: pathType must be specified") in invalid(
        create, body)
    assert ("spec.rules[0].http.paths[0].pathType",
            'Unsupported value: "Regex": supported values: "Exact", "ImplementationSpecific", "Prefix"') in invalid(
        create, ingress(pathType="Regex"))


@pytest.mark.parametrize("path, message", [
    ("shop", 'Invalid value: "shop": must be an absolute path'),
    ("/a//b", "Invalid value: \"/a//b\": must not contain '//'"),
    ("/a/..", "Invalid value: \"/a/..\": cannot end with '/..'"),
])
def test_a_prefix_path_must_be_absolute_and_clean(create, path, message):
    assert ("spec.rules[0].http.paths[0].path", message) in invalid(create, ingress(path=path))


def test_hosts_must_be_dns_names_not_addresses(create):
    found = invalid(create, ingress(hosts=("192.0.2.1", "Shop.example.com"), tls=False))
    assert ("spec.rules[0].host", 'Invalid value: "192.0.2.1": must be a DNS name, not an IP address') in found
    assert any(field == "spec.rules[1].host" and "a lowercase RFC 1123 subdomain" in message
               for field, message in found)
    body = ingress()
    body["spec"]["tls"][0]["hosts"] = ["bad_host.example.com"]
    assert any(field == "spec.tls[0].hosts[0]" for field, _ in invalid(create, body))


def test_a_service_backend_needs_a_port_and_an_ingress_needs_rules(create):
    body = ingress()
    body["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = {}
    assert ("spec.rules[0].http.paths[0].backend", "Required value: port name or number is required") in invalid(
        create, body)

    body["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = {"number": 70000}
    assert ("spec.rules[0].http.paths[0].backend.service.port.number",
            "Invalid value: 70000: must be between 1 and 65535, inclusive") in invalid(create, body)

    body = ingress(tls=False)
    body["spec"] = {}
    assert any(field == "spec" and message.endswith("either `defaultBackend` or `rules` must be specified")
               for field, message in invalid(create, body))


def test_a_value_of_the_wrong_type_cannot_be_decoded(create):
    body = ingress()
    body["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"] = "8000"
    status, answer = create(body)
    assert (status, answer["reason"]) == (400, "BadRequest")
    assert answer["message"].startswith('Ingress in version "v1" cannot be handled as a Ingress: json: cannot '
                                        "unmarshal string into Go struct field")
    assert answer["message"].endswith("spec.rules.http.paths.backend.service.port.number of type int32")

    body = ingress()
    body["spec"]["tls"] = {"hosts": ["shop.example.com"]}
    status, answer = create(body)
    assert status == 400 and "cannot unmarshal object into Go struct field" in answer["message"]


def test_unknown_fields_are_refused_under_strict_validation(create):
    body = ingress()
    body["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["portt"] = 80
    body["spec"]["tlss"] = []
    status, answer = create(body, fieldValidation="Strict")
    assert status == 400
    assert 'unknown field "spec.rules[0].http.paths[0].backend.service.portt"' in answer["message"]
    assert 'unknown field "spec.tlss"' in answer["message"]


@needs_kubectl
def test_kubectl_applies_lists_and_deletes_ingresses(kubectl):
    applied = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(ingress(hosts=(
        "a.example.com", "b.example.com", "c.example.com", "d.example.com"))))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip() == "ingress.networking.k8s.io/shop created"

    table = kubectl("get", "ingress")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert row.split()[:3] == ["shop", "<none>", "a.example.com,b.example.com,c.example.com"]
    assert "+ 1 more..." in row and "80, 443" in row

    hosts = kubectl("get", "ing", "shop", "-o", "jsonpath={.spec.tls[0].hosts}")
    assert json.loads(hosts.stdout) == ["a.example.com", "b.example.com", "c.example.com", "d.example.com"]

    bad = ingress(name="bad")
    bad["spec"]["rules"][0]["http"]["paths"][0]["pathTyp"] = "Prefix"
    refused_by_kubectl = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad))
    assert refused_by_kubectl.returncode != 0
    assert 'unknown field "spec.rules[0].http.paths[0].pathTyp"' in refused_by_kubectl.stderr

    deleted = kubectl("delete", "ingress", "shop")
    assert deleted.returncode == 0 and deleted.stdout.strip() == 'ingress.networking.k8s.io "shop" deleted'
    assert "No resources found" in kubectl("get", "ingress").stderr


@pytest.mark.fake_kube_only("asks the fake's discovery documents directly")
def test_discovery_serves_the_networking_group(kube_cluster):
    assert kube_cluster._discovery("/apis/networking.k8s.io")["preferredVersion"]["groupVersion"] == \
        "networking.k8s.io/v1"
    resources = kube_cluster._discovery("/apis/networking.k8s.io/v1")["resources"]
    ingresses = next(r for r in resources if r["name"] == "ingresses")
    assert (ingresses["kind"], ingresses["shortNames"], ingresses["namespaced"]) == ("Ingress", ["ing"], True)
    assert "ingresses/status" in {r["name"] for r in resources}

