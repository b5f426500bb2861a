"""NORN_TEST_KUBECONFIG switches the Kubernetes tests from the in-process fake to the cluster it
names. No real cluster runs here, so a second fake API server, started by this test and not by
the fixture, plays it: the tests must reach it through the given kubeconfig, skip what only the
fake can do, load their images the cluster's way (a recording `kind` here) and clean up after."""

import os
import subprocess
import sys
import uuid

import pytest

from deployments.runtimes import kubernetes as runtime
from tests.conftest import REPO_ROOT
from tests.support import kube_target
from tests.support.contexts import parse_spec, step_context
from tests.support.docker_images import image_exists
from tests.support.fake_kubernetes import FakeKubernetes


@pytest.fixture
def outside_cluster(tmp_path):
    """A fake API server that stands for a real cluster: its kubeconfig names the cluster kind-switch."""
    with FakeKubernetes(time_scale=0.01) as fake:
        fake.kubeconfig = fake.write_kubeconfig(tmp_path / "real-kubeconfig", context="kind-switch")
        yield fake
        assert not fake.internal_errors, fake.internal_errors


@pytest.fixture
def kind_shim(tmp_path, monkeypatch, outside_cluster):
    """A `kind` on PATH recording each call's argv (one line per call), and loading the image into the
    outside cluster as `kind load docker-image` does: its pods can pull only what was loaded."""
    bin_dir = tmp_path / "bin"
    log = tmp_path / "kind.log"
    kube_target.stand_in_loader(outside_cluster, bin_dir, tool="kind", log=log)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return log


def ctx_for(tmp_path, image):
    spec = parse_spec("app: web\nrole: webserver\nport: 8000\nreplicas: 1\nnamespace: default\n")
    return step_context(spec, workdir=tmp_path, app_dir=tmp_path, image=image, runtime="kubernetes",
                        commit_sha="0123456789abcdef0123456789abcdef01234567")


def test_without_the_variable_the_tests_get_the_fake(tmp_path, monkeypatch):
    monkeypatch.delenv(kube_target.VARIABLE, raising=False)
    with kube_target.kube_cluster(tmp_path, monkeypatch) as kube:
        assert isinstance(kube, FakeKubernetes)
        assert str(kube.port) in (tmp_path / "kubeconfig").read_text()


@pytest.mark.django_db  # the runtime records what it applied on its deployment's row
def test_the_variable_points_the_tests_at_that_cluster(outside_cluster, tmp_path, monkeypatch, kind_shim):
    monkeypatch.setenv(kube_target.VARIABLE, outside_cluster.kubeconfig)
    with kube_target.kube_cluster(tmp_path, monkeypatch) as kube:
        assert kube_target.is_real(kube)
        assert os.environ["KUBECONFIG"] == str(tmp_path / "kubeconfig")
        kube.create({"metadata": {"name": "shop-prod"}}, plural="namespaces")
        kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "someone-elses"}, "type": "Opaque"})
        built = not image_exists("registry.local/web:v1")
        try:
            runtime.deploy(ctx_for(tmp_path, kube.load_image("registry.local/web:v1")))  # pods pull only that
        finally:
            if built:
                subprocess.run(["docker", "image", "rm", "-f", "registry.local/web:v1"], capture_output=True,
                               timeout=60)

        # Norn wrote to the outside server, and the test reads it back from there.
        written = outside_cluster.get_object("deployments", "web")
        assert written["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/web:v1"
        assert kube.get_object("deployments", "web")["metadata"]["uid"] == written["metadata"]["uid"]
        assert kube.get_object("secrets", "someone-elses")["metadata"]["labels"][kube_target.CREATED_LABEL] == "true"
        assert kube.get_object("deployments", "absent") is None
        # The fake's controls are not there to be used by mistake: the error names the mark to add.
        with pytest.raises(AttributeError, match=r"kube\.requests exists only on Norn's fake.*fake_kube_only"):
            kube.requests  # noqa: B018
    # Afterwards: what the test created and what Norn wrote are gone, and nothing else.
    for plural, name in (("deployments", "web"), ("services", "web"), ("secrets", "someone-elses")):
        assert outside_cluster.get_object(plural, name) is None, (plural, name)
    assert outside_cluster.get_object("namespaces", "shop-prod") is None
    assert outside_cluster.get_object("namespaces", "default") is not None


def test_images_are_loaded_the_clusters_way(outside_cluster, tmp_path, monkeypatch, kind_shim):
    monkeypatch.setenv(kube_target.VARIABLE, outside_cluster.kubeconfig)
    image = f"norn-switch-{uuid.uuid4().hex[:8]}:1"
    try:
        with kube_target.kube_cluster(tmp_path, monkeypatch) as kube:
            assert kube.load_image(image) == image
            assert kube.load_image(image) == image  # once per test is enough
            assert image_exists(image)  # built from the test image, since the engine lacked it
        assert kind_shim.read_text().splitlines() == [f"load docker-image {image} --name switch"]
        user = subprocess.run(["docker", "image", "inspect", "-f", "{{.Config.User}}", image], capture_output=True,
                              text=True, timeout=60).stdout.strip()
        assert user == "1000"  # the restricted securityContext admits it
    finally:
        subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True, timeout=60)


def test_a_cluster_norn_cannot_load_into_stops_the_run(tmp_path, monkeypatch):
    with FakeKubernetes() as other:
        monkeypatch.setenv(kube_target.VARIABLE, other.write_kubeconfig(tmp_path / "prod", context="prod"))
        with kube_target.kube_cluster(tmp_path, monkeypatch) as kube:
            with pytest.raises(pytest.UsageError, match="cannot load images into this cluster.*NORN_REGISTRY_URL"):
                kube.load_image("registry.local/web:v1")


def test_a_missing_kubeconfig_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(kube_target.VARIABLE, str(tmp_path / "nowhere"))
    with pytest.raises(pytest.UsageError, match="NORN_TEST_KUBECONFIG=.*nowhere.* is not a file"):
        with kube_target.kube_cluster(tmp_path, monkeypatch):
            pass


def test_the_runtime_tests_run_against_the_given_cluster(outside_cluster, tmp_path, kind_shim):
    """A pytest run of the runtime's own tests with NORN_TEST_KUBECONFIG set: the tests that fit a
    real cluster pass against the outside server, the fake-only ones are skipped with their reason."""
    selection = ("test_redeploy_of_a_norn_deployment_keeps_its_service or test_deploys_into_the_infraspec_namespace"
                 " or test_first_deploy_creates_deployment or test_transient_500s_are_retried")
    images = ("registry.local/web:v1", "registry.local/web:v2", "registry.local/web:0123abc", "envoy:1.31")
    built = [image for image in images if not image_exists(image)]  # test images the run will make
    env = {**os.environ, kube_target.VARIABLE: outside_cluster.kubeconfig,
           "NORN_TEST_DATABASE_NAME": os.environ.get("NORN_TEST_DATABASE_NAME", "test_norn") + "_switch"}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
             "tests/test_kubernetes_runtime.py", "-k", selection],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
        )
    finally:
        subprocess.run(["docker", "image", "rm", "-f", *built], capture_output=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "2 passed, 2 skipped" in output, output[-4000:]
    assert ("fake Kubernetes API server only (injects API failures); NORN_TEST_KUBECONFIG names a real cluster"
            in output)
    # The passing tests talked to the outside server, through the kubeconfig they were given …
    # (server-side apply: a PATCH of the Deployment by name creates it too)
    applied = [r.path.split("?")[0] for r in outside_cluster.requests if r.method == "PATCH"]
    assert "/apis/apps/v1/namespaces/default/deployments/web" in applied
    assert "/apis/apps/v1/namespaces/shop-prod/deployments/web" in applied
    # … loaded their images the kind way …
    assert "load docker-image registry.local/web:v1 --name switch" in kind_shim.read_text().splitlines()
    # … and left it as they found it.
    assert outside_cluster.get_object("deployments", "web") is None
    assert outside_cluster.get_object("namespaces", "shop-prod") is None
