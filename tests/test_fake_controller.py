"""The fake API server's Deployment controller (tests/support/fake_kube_controller.py), each
behaviour cross-checked with the real kubectl: ReplicaSets per template revision, `kubectl
rollout history/undo`, revisionHistoryLimit, pods that fail to pull, crash-loop, fail readiness
or are refused by PodSecurity or a ResourceQuota, the progress deadline, Table output and cascading deletes."""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from tests.support.fake_kube_controller import ENFORCE_LABEL, EXIT_AFTER_ENV
from tests.support.fake_kubernetes import FakeKubernetes

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")

GOOD, OTHER = "example/web:1", "example/web:2"


@pytest.fixture
def kube(tmp_path):
    with FakeKubernetes(pods=True, registry_url="127.0.0.1:5000", time_scale=0.1,
                        progress_deadline_scale=0.005) as fake:
        fake.load_image(GOOD)
        fake.load_image(OTHER)
        fake.kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        yield fake
        assert not fake.internal_errors, fake.internal_errors


@pytest.fixture
def kubectl(kube, tmp_path):
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def run(*args, check=True, timeout=60):
        done = subprocess.run([KUBECTL, f"--kubeconfig={kube.kubeconfig}", f"--cache-dir={tmp_path / 'cache'}",
                               *args], capture_output=True, text=True, timeout=timeout, env=env)
        if check:
            assert done.returncode == 0, done.stderr
        return done

    return run


def create(kubectl, tmp_path, name="web", image=GOOD, replicas=2, env=None, probe=None, namespace="default",
           resources=None, **spec):
    container = {"name": name, "image": image}
    if resources:
        container["resources"] = resources
    if env:  # no empty list: the real apiserver would drop it (omitempty), and the template hash with it
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if probe:
        container["readinessProbe"] = {"httpGet": {"path": probe, "port": 8080}, "periodSeconds": 1}
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, **spec,
                         "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}}}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(manifest))
    kubectl("create", "-f", str(path))


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def table(kubectl, *args):
    """`kubectl get` output as rows of columns (the header first)."""
    return [line.split() for line in kubectl("get", *args).stdout.splitlines()]


def test_rollout_makes_a_replica_set_per_revision_with_history_and_undo(kube, kubectl, tmp_path):
    create(kubectl, tmp_path)
    kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    kubectl("set", "image", "deployment/web", f"web={OTHER}")
    kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    rs = json.loads(kubectl("get", "rs", "-l", "app=web", "-o", "json").stdout)["items"]
    assert sorted(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] for r in rs) == ["1", "2"]
    for r in rs:
        owner = r["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("Deployment", "web", True)
        assert r["metadata"]["name"] == f'web-{r["metadata"]["labels"]["pod-template-hash"]}'
    assert {r["spec"]["template"]["spec"]["containers"][0]["image"]: r["spec"]["replicas"] for r in rs} == {
        GOOD: 0, OTHER: 2}
    history = kubectl("rollout", "history", "deployment/web").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    detail = kubectl("rollout", "history", "deployment/web", "--revision=1").stdout
    assert "Image:" in detail and GOOD in detail and OTHER not in detail

    assert "rolled back" in kubectl("rollout", "undo", "deployment/web").stdout
    kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    image = kubectl("get", "deployment/web", "-o", "jsonpath={.spec.template.spec.containers[0].image}").stdout
    assert image == GOOD
    # The first revision's ReplicaSet is reused and becomes revision 3, as the real controller does.
    history = kubectl("rollout", "history", "deployment/web").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["2", "3"]
    pods = json.loads(kubectl("get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]
    assert len(pods) == 2 and {p["spec"]["containers"][0]["image"] for p in pods} == {GOOD}
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet" for p in pods)


def test_revision_history_limit_removes_the_oldest_idle_replica_sets(kube, kubectl, tmp_path):
    create(kubectl, tmp_path, revisionHistoryLimit=1)
    for n in range(3):
        kubectl("set", "env", "deployment/web", f"ROUND={n}")
        kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    def two_left():
        items = json.loads(kubectl("get", "rs", "-o", "json").stdout)["items"]
        return items if len(items) == 2 else None

    rs = wait_for(two_left)
    assert sorted(int(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) for r in rs) == [3, 4]


def test_get_prints_the_real_columns(kube, kubectl, tmp_path):
    create(kubectl, tmp_path)
    kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    deployments = table(kubectl, "deployments")
    assert deployments[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert deployments[1][:4] == ["web", "2/2", "2", "2"]
    replica_sets = table(kubectl, "rs")
    assert replica_sets[0] == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    assert replica_sets[1][1:4] == ["2", "2", "2"]
    pods = table(kubectl, "pods")
    assert pods[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [row[1:4] for row in pods[1:]] == [["1/1", "Running", "0"]] * 2
    wide = table(kubectl, "deployments", "-o", "wide")
    assert wide[0][-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"] and wide[1][-3:] == ["web", GOOD, "app=web"]
    # Kinds the fake has no printer columns for are sent as JSON; kubectl prints NAME and AGE.
    kubectl("create", "secret", "generic", "token", "--from-literal=a=b")
    assert table(kubectl, "secrets")[0] == ["NAME", "AGE"]


def test_an_image_nobody_pushed_goes_to_image_pull_back_off_with_the_kubelets_events(kube, kubectl, tmp_path):
    image = "127.0.0.1:5000/norn-fake-controller/missing:never-pushed"
    create(kubectl, tmp_path, image=image, replicas=1)
    row = wait_for(lambda: (rows := table(kubectl, "pods"))[1:] and rows[1][2] == "ImagePullBackOff" and rows[1])
    assert row[1] == "0/1"
    events = kubectl("get", "events", "--field-selector", f"involvedObject.name={row[0]}", "-o", "json").stdout
    messages = {(e["type"], e["reason"], e["message"]) for e in json.loads(events)["items"]}
    assert ("Warning", "Failed", f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull '
            f'and unpack image "{image}": failed to resolve reference "{image}": {image}: not found') in messages
    assert ("Normal", "BackOff", f'Back-off pulling image "{image}"') in messages
    assert "Back-off pulling image" in kubectl("describe", "pod", row[0]).stdout
    # An image outside the registry the fake knows, never loaded, fails the same way.
    create(kubectl, tmp_path, name="hub", image="docker.io/library/nginx:1", replicas=1)
    wait_for(lambda: any(r[0].startswith("hub-") and r[2] in ("ErrImagePull", "ImagePullBackOff")
                         for r in table(kubectl, "pods")[1:]))


def test_a_container_that_exits_crash_loops_with_restarts(kube, kubectl, tmp_path):
    create(kubectl, tmp_path, replicas=1, env={EXIT_AFTER_ENV: "0"})
    row = wait_for(lambda: (rows := table(kubectl, "pods"))[1:] and rows[1][2] == "CrashLoopBackOff" and rows[1])
    assert int(row[3]) >= 1
    pod = json.loads(kubectl("get", "pod", row[0], "-o", "json").stdout)
    status = pod["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["state"]["waiting"]["message"].startswith("back-off ")
    reasons = json.loads(kubectl("get", "events", "--field-selector", f"involvedObject.name={row[0]}",
                                 "-o", "json").stdout)["items"]
    assert any(e["reason"] == "BackOff" and e["message"].startswith("Back-off restarting failed container web")
               for e in reasons)


def test_a_failing_readiness_probe_keeps_the_pod_not_ready(kube, kubectl, tmp_path):
    create(kubectl, tmp_path, replicas=1, probe="/fail")
    wait_for(lambda: any(e["reason"] == "Unhealthy" and e.get("count", 1) >= 3 for e in json.loads(
        kubectl("get", "events", "-o", "json").stdout)["items"]))
    row = table(kubectl, "pods")[1]
    assert row[1:3] == ["0/1", "Running"]
    assert "Readiness probe failed: HTTP probe failed with statuscode: 503" in kubectl("describe", "pod",
                                                                                       row[0]).stdout
    assert kubectl("get", "deployment/web", "-o", "jsonpath={.status.availableReplicas}").stdout == ""


def test_the_progress_deadline_is_exceeded_and_kubectl_says_so(kube, kubectl, tmp_path):
    create(kubectl, tmp_path, replicas=1, probe="/fail")  # 600 s * 0.005 = 3 s without progress
    done = kubectl("rollout", "status", "deployment/web", "--timeout=30s", check=False)
    assert done.returncode != 0
    assert 'deployment "web" exceeded its progress deadline' in done.stderr


def test_pod_security_restricted_refuses_pods_with_a_replica_failure(kube, kubectl, tmp_path):
    kube.create({"metadata": {"name": "locked", "labels": {ENFORCE_LABEL: "restricted"}}}, plural="namespaces")
    create(kubectl, tmp_path, replicas=1, namespace="locked")
    condition = wait_for(lambda: json.loads(kubectl("get", "rs", "-n", "locked", "-o", "json").stdout)["items"][0]
                         .get("status", {}).get("conditions"))
    assert condition[0]["type"] == "ReplicaFailure" and condition[0]["reason"] == "FailedCreate"
    assert 'violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false' in condition[0]["message"]
    assert 'runAsNonRoot != true (pod or container "web" must set securityContext.runAsNonRoot=true)' in \
        condition[0]["message"]
    assert kubectl("get", "pods", "-n", "locked", "-o", "name").stdout == ""
    dep = json.loads(kubectl("get", "deployment/web", "-n", "locked", "-o", "json").stdout)
    assert "ReplicaFailure" in [c["type"] for c in dep["status"]["conditions"]]
    assert "FailedCreate" in kubectl("describe", "rs", "-n", "locked").stdout


def test_deleting_the_deployment_removes_its_replica_sets_and_pods(kube, kubectl, tmp_path):
    create(kubectl, tmp_path)
    kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    kubectl("delete", "deployment/web")
    wait_for(lambda: not kubectl("get", "rs,pods", "-o", "name").stdout.strip())


def quota(kubectl, tmp_path, hard, name="compute"):
    path = tmp_path / f"quota-{name}.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
                                "spec": {"hard": hard}}))
    return kubectl("create", "-f", str(path), check=False)


def test_a_resource_quota_refuses_the_pod_that_would_exceed_it(kube, kubectl, tmp_path):
    assert quota(kubectl, tmp_path, {"requests.memory": "256Mi", "pods": "4"}).returncode == 0
    create(kubectl, tmp_path, replicas=1, resources={"requests": {"memory": "512Mi"}})

    condition = wait_for(lambda: json.loads(kubectl("get", "rs", "-o", "json").stdout)["items"][0]
                         .get("status", {}).get("conditions"))
    assert (condition[0]["type"], condition[0]["reason"]) == ("ReplicaFailure", "FailedCreate")
    assert re.fullmatch(r'pods "web-[a-z0-9]+-[a-z0-9]{5}" is forbidden: exceeded quota: compute, requested: '
                        r"requests.memory=512Mi, used: requests.memory=0, limited: requests.memory=256Mi",
                        condition[0]["message"]), condition[0]["message"]
    assert kubectl("get", "pods", "-o", "name").stdout == ""
    described = kubectl("describe", "rs").stdout
    assert re.search(r"Warning\s+FailedCreate\s+.*Error creating: pods \"web-.*exceeded quota: compute", described), \
        described
    # The quota's status: kubectl describe reads status.hard and status.used.
    lines = [line.split() for line in kubectl("describe", "resourcequota", "compute").stdout.splitlines()]
    assert ["requests.memory", "0", "256Mi"] in lines and ["pods", "0", "4"] in lines, lines


def test_quota_status_counts_the_running_pods_and_the_last_pod_over_it_is_refused(kube, kubectl, tmp_path):
    assert quota(kubectl, tmp_path, {"pods": "2", "requests.cpu": "1", "limits.memory": "1Gi"}).returncode == 0
    create(kubectl, tmp_path, replicas=3, resources={"requests": {"cpu": "250m"}, "limits": {"memory": "256Mi"}})

    wait_for(lambda: len(kubectl("get", "pods", "-o", "name").stdout.split()) == 2)
    used = wait_for(lambda: (q := json.loads(kubectl("get", "resourcequota", "compute", "-o", "json").stdout))
                    ["status"]["used"].get("pods") == "2" and q["status"])
    assert used == {"hard": {"pods": "2", "requests.cpu": "1", "limits.memory": "1Gi"},
                    "used": {"pods": "2", "requests.cpu": "500m", "limits.memory": "512Mi"}}
    message = wait_for(lambda: (json.loads(kubectl("get", "rs", "-o", "json").stdout)["items"][0]["status"]
                                .get("conditions") or [{}])[0].get("message"))
    assert message.endswith("exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"), message
    assert len(kubectl("get", "pods", "-o", "name").stdout.split()) == 2


@pytest.mark.parametrize("value, error", [
    ("lots", 'ResourceQuota in version "v1" cannot be handled as a ResourceQuota: quantities must match the '
             "regular expression"),
    ("-1Gi", "spec.hard[requests.memory]: Invalid value: \"-1Gi\": must be greater than or equal to 0"),
])
def test_a_quota_with_a_bad_quantity_is_refused_naming_the_field(kube, kubectl, tmp_path, value, error):
    refused = quota(kubectl, tmp_path, {"requests.memory": value})
    assert refused.returncode != 0
    assert error in refused.stderr, refused.stderr
    assert kube.get_object("resourcequotas", "compute") is None
