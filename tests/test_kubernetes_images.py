"""Images the cluster can pull: without a registry the build step loads the image into a
local minikube, kind or k3d cluster, recognised by the kubeconfig's cluster entry (recording
shims stand in for the three tools); any other cluster fails the step before the build;
imagePullSecrets from NORN_KUBE_IMAGE_PULL_SECRETS reach the pods' specs."""

import json
import os
import shutil
import stat
import subprocess
import time
import uuid

import pytest

from deployments.runtimes import kubeimages, kubemanifests
from deployments.steps import build
from deployments.outcomes import StepFailed
from tests.support.contexts import parse_spec, step_context
from tests.support.docker_images import image_exists
from tests.support import kube_target
from tests.test_settings import run_manage

SHA = "0123456789abcdef0123456789abcdef01234567"
MINIKUBE_EXTENSION = [{"name": "cluster_info",
                       "extension": {"provider": "minikube.sigs.k8s.io", "version": "v1.34.0"}}]


def write_kubeconfig(path, context, cluster, server="https://127.0.0.1:6443", **cluster_fields):
    config = {"apiVersion": "v1", "kind": "Config", "current-context": context,
              "clusters": [{"name": cluster, "cluster": {"server": server, **cluster_fields}},
                           {"name": "unrelated", "cluster": {"server": "https://10.0.0.1"}}],
              "users": [{"name": "me", "user": {"token": "t"}}],
              "contexts": [{"name": context, "context": {"cluster": cluster, "user": "me"}},
                           {"name": "other", "context": {"cluster": "unrelated", "user": "me"}}]}
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch, settings):
    """kubeconfig(context, cluster, **fields): point Norn at a kubeconfig with that current context."""
    settings.NORN_KUBECONFIG = None
    settings.NORN_KUBE_CONTEXT = None
    settings.NORN_REGISTRY_URL = ""

    def make(context, cluster, **fields):
        path = write_kubeconfig(tmp_path / f"kubeconfig-{uuid.uuid4().hex[:6]}", context, cluster, **fields)
        monkeypatch.setenv("KUBECONFIG", str(path))
        return path

    return make


@pytest.fixture
def shims(tmp_path, monkeypatch):
    """minikube, kind and k3d on PATH, each writing its argv (one per line) to <tool>.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("minikube", "kind", "k3d"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path / (tool + ".log")}\necho "{tool}: loaded"\n')
        script.chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    def calls():
        return {tool: (tmp_path / f"{tool}.log").read_text().splitlines()
                for tool in ("minikube", "kind", "k3d") if (tmp_path / f"{tool}.log").exists()}

    return calls


# --- which cluster is which ------------------------------------------------------------


@pytest.mark.parametrize("context, cluster, fields, expected", [
    ("kind-dev", "kind-dev", {}, ["kind", "load", "docker-image", "web:1", "--name", "dev"]),
    # The context's own name says nothing: only its cluster counts.
    ("work", "kind-ci.2", {}, ["kind", "load", "docker-image", "web:1", "--name", "ci.2"]),
    ("k3d-local", "k3d-local", {}, ["k3d", "image", "import", "web:1", "-c", "local"]),
    ("minikube", "minikube", {"extensions": MINIKUBE_EXTENSION},
     ["minikube", "image", "load", "web:1", "--profile", "minikube"]),
    # A second minikube profile: named after the profile, known by minikube's extension…
    ("laptop", "dev", {"extensions": MINIKUBE_EXTENSION}, ["minikube", "image", "load", "web:1", "--profile", "dev"]),
    # … or by its certificate authority under ~/.minikube.
    ("laptop", "dev", {"certificate-authority": "/home/me/.minikube/ca.crt"},
     ["minikube", "image", "load", "web:1", "--profile", "dev"]),
])
def test_the_loader_is_chosen_from_the_contexts_cluster(kubeconfig, context, cluster, fields, expected):
    kubeconfig(context, cluster, **fields)
    target = kubeimages.current_target()
    assert (target.context, target.cluster) == (context, cluster)
    assert kubeimages.loader_for("web:1", target).argv == expected


def test_norn_kube_context_picks_the_cluster(kubeconfig, settings):
    kubeconfig("kind-dev", "kind-dev")
    settings.NORN_KUBE_CONTEXT = "other"
    target = kubeimages.current_target()
    assert target.cluster == "unrelated"
    with pytest.raises(kubeimages.NoImageLoader):
        kubeimages.loader_for("web:1", target)


@pytest.mark.parametrize("context, cluster", [
    ("minikube", "prod-eks"),  # a context named minikube is not a minikube cluster
    ("kind-dev", "gke_project_zone_prod"),
    ("x", "kind-"), ("x", "kind--rm"), ("x", "k3d-a b"),  # nothing a tool could take as an option or two words
])
def test_other_clusters_have_no_loader(kubeconfig, context, cluster):
    kubeconfig(context, cluster)
    with pytest.raises(kubeimages.NoImageLoader) as error:
        kubeimages.loader_for("web:1", kubeimages.current_target())
    message = str(error.value)
    assert "NORN_REGISTRY_URL" in message and f"cluster {cluster}" in message and f"context {context}" in message


def test_no_kubeconfig_has_no_loader(tmp_path, monkeypatch, settings):
    settings.NORN_KUBECONFIG = settings.NORN_KUBE_CONTEXT = None
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(kubeimages.NoImageLoader, match="in-cluster service account.*NORN_REGISTRY_URL"):
        kubeimages.loader_for("web:1", kubeimages.current_target())


# --- the build step ----------------------------------------------------------------------


def build_ctx(tmp_path, app):
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    (source / "Dockerfile").write_text('FROM norn-busybox:1\nCMD ["sleep", "3600"]\n')
    spec = parse_spec(f"app: {app}\nrole: worker\nbuild: {{}}\nnamespace: default\n")
    return step_context(spec, workdir=tmp_path, app_dir=tmp_path, commit_sha=SHA, runtime="kubernetes", timeout=120)


@pytest.fixture
def app_name():
    name = f"img{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["docker", "image", "rm", "-f", f"{name}:{SHA}"], capture_output=True, timeout=60)


@pytest.mark.parametrize("cluster, fields, tool, argv_tail", [
    ("kind-norn", {}, "kind", ["--name", "norn"]),
    ("k3d-norn", {}, "k3d", ["-c", "norn"]),
    ("minikube", {"extensions": MINIKUBE_EXTENSION}, "minikube", ["--profile", "minikube"]),
])
def test_build_loads_its_own_image_into_the_local_cluster(kubeconfig, shims, tmp_path, busybox_image, app_name,
                                                          cluster, fields, tool, argv_tail):
    kubeconfig("dev", cluster, **fields)
    ctx = build_ctx(tmp_path, app_name)
    build.run(ctx)
    image = f"{app_name}:{SHA}"
    verb = {"kind": ["load", "docker-image"], "k3d": ["image", "import"], "minikube": ["image", "load"]}[tool]
    assert shims() == {tool: [*verb, image, *argv_tail]}
    assert image_exists(image)  # what was loaded is what docker build just tagged
    assert ctx.image == image
    assert f"{tool}: loaded" in ctx.text()


def test_a_registry_wins_over_loading(kubeconfig, shims, tmp_path, busybox_image, app_name, settings):
    kubeconfig("kind-norn", "kind-norn")
    settings.NORN_REGISTRY_URL = "127.0.0.1:5000"
    ctx = build_ctx(tmp_path, app_name)
    try:
        build.run(ctx)
    finally:
        subprocess.run(["docker", "image", "rm", "-f", f"127.0.0.1:5000/{app_name}:{SHA}"], capture_output=True,
                       timeout=60)
    assert shims() == {}
    assert ctx.image == f"127.0.0.1:5000/{app_name}:{SHA}"


def test_unknown_cluster_without_registry_fails_before_building(kubeconfig, shims, tmp_path, app_name):
    kubeconfig("minikube", "prod", server="https://prod.example.com:6443")
    ctx = build_ctx(tmp_path, app_name)
    started = time.monotonic()
    with pytest.raises(StepFailed) as error:
        build.run(ctx)
    assert time.monotonic() - started < 2
    message = str(error.value)
    assert message.startswith("NORN_REGISTRY_URL is not set")
    assert "context minikube, cluster prod, server https://prod.example.com:6443" in message
    assert "docker build" not in ctx.text() and not image_exists(f"{app_name}:{SHA}")
    assert shims() == {}


def test_a_kubeconfig_that_cannot_be_used_fails_the_build_with_its_reason(tmp_path, settings, shims, app_name):
    broken = tmp_path / "broken-kubeconfig"
    broken.write_text("this: [is not a kubeconfig\n")
    settings.NORN_KUBECONFIG = str(broken)
    ctx = build_ctx(tmp_path, app_name)
    with pytest.raises(StepFailed, match=r"cannot use NORN_KUBECONFIG: kubeconfig .*broken-kubeconfig"):
        build.run(ctx)
    assert "docker build" not in ctx.text() and shims() == {}


def test_missing_tool_is_named(kubeconfig, tmp_path, monkeypatch, app_name):
    kubeconfig("dev", "k3d-norn")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    docker = shutil.which("docker")
    monkeypatch.setenv("PATH", f"{empty}:{os.path.dirname(docker)}" if docker else str(empty))
    if shutil.which("k3d"):
        pytest.skip("k3d is installed on this machine")
    with pytest.raises(StepFailed, match="k3d cluster .*the k3d command is not installed.*NORN_REGISTRY_URL"):
        build.run(build_ctx(tmp_path, app_name))


def test_the_docker_runtime_never_loads(kubeconfig, shims, tmp_path, busybox_image, app_name):
    kubeconfig("dev", "prod")  # no loader, but the Docker runtime does not need one
    ctx = build_ctx(tmp_path, app_name)
    ctx.runtime = "docker"
    build.run(ctx)
    assert shims() == {} and ctx.image == f"{app_name}:{SHA}"


# --- imagePullSecrets --------------------------------------------------------------------


def manifest_ctx(tmp_path):
    spec = parse_spec("app: web\nrole: webserver\nport: 8000\nnamespace: default\n")
    return step_context(spec, workdir=tmp_path, app_dir=tmp_path, commit_sha=SHA, image="127.0.0.1:5000/web:1",
                        runtime="kubernetes")


def test_pull_secrets_go_on_every_pod_spec(tmp_path, settings):
    settings.NORN_KUBE_IMAGE_PULL_SECRETS = ["registry-creds", "ghcr.io-pull"]
    ctx = manifest_ctx(tmp_path)
    expected = [{"name": "registry-creds"}, {"name": "ghcr.io-pull"}]
    pod = kubemanifests.deployment(ctx, "default", [])["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == expected
    job = kubemanifests.job(ctx, "default", "web-migrate-x", "migrate", "true", [], 60)
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == expected
    settings.NORN_KUBE_IMAGE_PULL_SECRETS = []
    assert "imagePullSecrets" not in kubemanifests.deployment(ctx, "default", [])["spec"]["template"]["spec"]


@pytest.mark.django_db  # the runtime records what it applied on its deployment's row
def test_the_cluster_stores_the_pull_secrets(kube_cluster, tmp_path, settings):
    from deployments.runtimes import kubernetes as runtime

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    settings.NORN_KUBE_IMAGE_PULL_SECRETS = ["registry-creds"]
    settings.NORN_KUBECONFIG = settings.NORN_KUBE_CONTEXT = None
    ctx = manifest_ctx(tmp_path)
    ctx.image = kube_target.make_available(kube_cluster, "registry.local/web:v1")
    runtime.deploy(ctx)
    out = subprocess.run([kubectl, f"--kubeconfig={os.environ['KUBECONFIG']}", f"--cache-dir={tmp_path / 'cache'}",
                          "get", "deployment", "web", "-o", "json"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "registry-creds"}]


@pytest.mark.parametrize("value", ["Registry", "creds,-bad", "a_b", "x" * 254])
def test_bad_pull_secret_names_stop_norn(value):
    result = run_manage("check", NORN_KUBE_IMAGE_PULL_SECRETS=value)
    assert result.returncode == 2
    assert "Norn is misconfigured: NORN_KUBE_IMAGE_PULL_SECRETS: " in result.stderr
    assert "is not a Secret name" in result.stderr and "Traceback" not in result.stderr


def test_pull_secret_names_are_read():
    result = run_manage("shell", "-c", "from django.conf import settings; print(settings.NORN_KUBE_IMAGE_PULL_SECRETS)",
                        NORN_KUBE_IMAGE_PULL_SECRETS=" a , b.c ,")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['a', 'b.c']"
