"""The whole pipeline on the Kubernetes target: real git, Docker and the
fake API server (over HTTPS, through a real kubeconfig); minikube image load
when there is no registry; a stuck rollout fails the deploy step."""

import os

import pytest

from tests.support import kube_target
from tests.support.git_servers import make_repo

pytestmark = pytest.mark.django_db(transaction=True)

# A numeric non-root USER: under the restricted securityContext a real kubelet refuses root images.
FILES = {"Dockerfile": "FROM norn-busybox:1\nUSER 1000\nCMD [\"sh\", \"-c\", \"sleep 3600\"]\n"}


@pytest.fixture
def cluster(kube_cluster, settings):
    """The fake cluster behind a kubeconfig whose context is named minikube (a name
    that decides nothing: the build step reads the cluster entry), or the real one
    in NORN_TEST_KUBECONFIG, with NORN_TEST_REGISTRY_URL as the registry if set."""
    settings.NORN_RUNTIME = "kubernetes"
    settings.NORN_REGISTRY_URL = kube_cluster.registry if kube_target.is_real(kube_cluster) else ""
    config = kube_cluster.write_kubeconfig(os.environ["KUBECONFIG"], context="minikube")
    assert config == os.environ["KUBECONFIG"]
    return kube_cluster


@pytest.fixture
def minikube(tmp_path, monkeypatch, cluster):
    """A `minikube` on PATH that records its arguments (no VM can run here). A real
    cluster gets the real tool, or the registry."""
    if kube_target.is_real(cluster):
        return None
    bin_dir = tmp_path / "bin"
    log = tmp_path / "minikube.log"
    # It loads what it is asked to into the fake: the pods can pull the built image only that way.
    kube_target.stand_in_loader(cluster, bin_dir, log=log)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return log


def web_app(make_app, tmp_path, name="kweb"):
    repo = make_repo(tmp_path / "repos", name, FILES)
    make_app(name, f"app: {name}\nrole: webserver\nrepo:\n  url: {repo.file_url}\nbuild: {{}}\nport: 8000\nreplicas: 2\nnamespace: default\n")
    return repo


def test_deploy_to_kubernetes_end_to_end(cluster, minikube, make_app, deploy_now, busybox_image, tmp_path, settings):
    repo = web_app(make_app, tmp_path)
    deployment = deploy_now("kweb")
    assert deployment.status == "deployed", deployment.error
    assert deployment.runtime == "kubernetes"
    sha = repo.head()
    image = f"{settings.NORN_REGISTRY_URL}/kweb:{sha}" if settings.NORN_REGISTRY_URL else f"kweb:{sha}"
    assert deployment.image == image
    if minikube:
        assert minikube.read_text().split("\n")[0] == f"image load kweb:{sha} --profile minikube"
    obj = cluster.get_object("deployments", "kweb")
    assert obj["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert obj["status"]["availableReplicas"] == 2
    assert cluster.get_object("services", "kweb")["spec"]["ports"][0]["port"] == 8000
    output = deployment.steps.get(name="deploy").output
    assert "successfully rolled out" in output

    # A second commit is a strategic-merge patch of the image, generation 2.
    second = repo.commit({"README": "two\n"}, "two")
    again = deploy_now("kweb")
    assert again.status == "deployed", again.error
    obj = cluster.get_object("deployments", "kweb")
    assert obj["metadata"]["generation"] == 2
    assert obj["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f"kweb:{second}")


@pytest.mark.fake_kube_only("scales the progress deadline down")
def test_stuck_rollout_fails_the_deploy_step_with_rollback_available(cluster, minikube, make_app, deploy_now,
                                                                      busybox_image, tmp_path, settings):
    web_app(make_app, tmp_path)
    # The pods run and are ready but an hour of minReadySeconds keeps them from counting as available:
    # nothing the gate can name, so the controller's progress deadline ends the rollout.
    settings.NORN_KUBE_MIN_READY_SECONDS = 3600
    deployment = deploy_now("kweb")
    assert deployment.status == "failed"
    assert deployment.error.startswith("deploy failed:")
    assert "exceeded its progress deadline" in deployment.error
    from deployments import states

    steps = dict(deployment.steps.values_list("name", "status"))
    assert states.recovery_options(steps, has_snapshot=False)["rollback"] is True
    assert steps["cleanup"] == "succeeded"
