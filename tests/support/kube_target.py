"""Where the Kubernetes tests run: Norn's in-process fake API server, or the cluster that
NORN_TEST_KUBECONFIG names (a throwaway kind, k3d or minikube cluster, say).

`kube_cluster()` yields a started FakeKubernetes, or a RealCluster with the part of the fake's
interface a real cluster has too: write_kubeconfig, get_object, create, load_image. Tests that
use the fake's test controls (recorded requests, injected failures, rollout modes, the fake's
kubelet) carry the `fake_kube_only` mark and are skipped on a real cluster; an unmarked test
that reaches for such a control fails, naming the mark it needs.
"""

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.kube_config import KubeConfigMerger

from deployments.runtimes import kubeimages, kubemanifests
from tests.support.docker_images import ensure_busybox_base_image, image_exists
from tests.support.fake_kubernetes import FakeKubernetes

VARIABLE = "NORN_TEST_KUBECONFIG"
CONTEXT_VARIABLE = "NORN_TEST_KUBE_CONTEXT"
REGISTRY_VARIABLE = "NORN_TEST_REGISTRY_URL"
MARK = "fake_kube_only"
CREATED_LABEL = "norn-test/created"
# Where each served kind lives in the API: (path prefix, namespaced).
RESOURCES = {
    "deployments": ("/apis/apps/v1", True), "replicasets": ("/apis/apps/v1", True),
    "services": ("/api/v1", True), "secrets": ("/api/v1", True), "pods": ("/api/v1", True),
    "events": ("/api/v1", True), "namespaces": ("/api/v1", False), "jobs": ("/apis/batch/v1", True),
    "ingresses": ("/apis/networking.k8s.io/v1", True),
}
# Cleared after each test: what Norn writes (labelled managed-by=norn) in the namespaces a test used.
NORN_KINDS = ("deployments", "ingresses", "services", "secrets", "jobs")
# The image a test names is built from this when the local engine lacks it: busybox's httpd
# answers every usual port (readiness probes get a 200 for /healthz and /ready), as a
# numeric non-root user, so the restricted securityContext Norn sets admits it.
_LOADED = set()  # (kubeconfig, context, image) loaded during this test session
TEST_IMAGE_DOCKERFILE = """FROM {base}
RUN mkdir -p /www && echo ok > /www/healthz && echo ok > /www/ready && echo ok > /www/index.html
USER 1000
CMD ["sh", "-c", "for p in 3000 5000 8000 8080 9000; do httpd -p $p -h /www; done; exec sleep 2147483647"]
"""


def real_kubeconfig():
    """NORN_TEST_KUBECONFIG, or None: the fake then stands in for a cluster."""
    return os.environ.get(VARIABLE) or None


def is_real(kube) -> bool:
    return isinstance(kube, RealCluster)


def make_available(kube, image):
    """Make ``image`` pullable by the cluster's pods: loaded into a real cluster (built locally first if
    need be), or marked loaded on the fake, whose kubelet otherwise fails to pull what nobody pushed."""
    return kube.load_image(image)


def stand_in_loader(fake, bin_dir, tool="minikube", log=None):
    """Put a `minikube` (or `kind`, `k3d`) on bin_dir that loads images into ``fake`` as the real tool
    loads them into its cluster: the image named in `minikube image load <image> ...`, `kind load
    docker-image <image> ...` or `k3d image import <image> ...` becomes pullable by the fake's pods.
    Each call's arguments are appended to ``log`` too, when given. Returns the script's path."""
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    loaded = bin_dir / f"{tool}-loaded-images"
    fake.controller.load_logs.append(os.fspath(loaded))
    record = f'echo "$*" >> "{log}"\n' if log else ""
    script = bin_dir / tool
    script.write_text(f'#!/bin/sh\n{record}case "$1 $2" in\n'
                      f'  "image load"|"load docker-image"|"image import") echo "$3" >> "{loaded}";;\n'
                      f'esac\necho loaded\n')
    script.chmod(0o700)
    return script


@contextlib.contextmanager
def kube_cluster(tmp_path, monkeypatch, **fake_options):
    """The cluster a Kubernetes test talks to, found by the runtime through $KUBECONFIG.

    `fake_options` go to FakeKubernetes; a real cluster has its own timing and ignores them.
    """
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = real_kubeconfig()
    if path:
        cluster = RealCluster(path, os.environ.get(CONTEXT_VARIABLE) or None)
        monkeypatch.setenv("KUBECONFIG", cluster.write_kubeconfig(tmp_path / "kubeconfig"))
        try:
            yield cluster
        finally:
            cluster.cleanup()
        return
    with FakeKubernetes(**fake_options) as fake:
        monkeypatch.setenv("KUBECONFIG", fake.write_kubeconfig(tmp_path / "kubeconfig"))
        yield fake
        assert not fake.internal_errors, fake.internal_errors


class RealCluster:
    """A real cluster behind the calls tests make of FakeKubernetes that any cluster can answer."""

    def __init__(self, kubeconfig, context=None):
        if not Path(kubeconfig).is_file():
            raise pytest.UsageError(f"{VARIABLE}={kubeconfig!r} is not a file; set it to a kubeconfig path")
        self.source = os.fspath(kubeconfig)
        merged = KubeConfigMerger(self.source).config.value
        self.context = context or merged.get("current-context")
        entries = {key: {e.value["name"]: e.value for e in merged.get(key) or []}
                   for key in ("contexts", "clusters", "users")}
        if self.context not in entries["contexts"]:
            raise pytest.UsageError(f"{VARIABLE}: context {self.context!r} is not in {self.source}")
        context_body = entries["contexts"][self.context]["context"]
        base = Path(self.source).resolve().parent
        self.cluster = _absolute(entries["clusters"][context_body["cluster"]], base)
        self.user = _absolute(entries["users"][context_body["user"]], base)
        self.registry = os.environ.get(REGISTRY_VARIABLE, "")
        self.api = config.new_client_from_config(config_file=self.source, context=self.context,
                                                 persist_config=False)
        self._created = []  # (plural, namespace, name) the test created through create()
        self._namespaces = {"default"}
        self._scratch = Path(tempfile.mkdtemp(prefix="norn-real-cluster-"))

    def __getattr__(self, name):
        # Only called for what RealCluster lacks: the fake's own controls and internals.
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"kube.{name} exists only on Norn's fake API server, and this run uses the real cluster in "
            f"{VARIABLE}; mark the test @pytest.mark.{MARK}(\"<why>\") so it is skipped there"
        )

    # --- what FakeKubernetes offers too ---------------------------------------------------
    def write_kubeconfig(self, path, namespace="default", context="norn-fake"):
        """A kubeconfig for this cluster whose current context is `context`. The cluster entry keeps
        its own name, since that name tells Norn how to load images (kind-<name>, k3d-<name>)."""
        document = {
            "apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": context,
            "clusters": [self.cluster], "users": [{**self.user, "name": context}],
            "contexts": [{"name": context, "context": {"cluster": self.cluster["name"], "user": context,
                                                       "namespace": namespace}}],
        }
        Path(path).write_text(json.dumps(document, indent=2))
        os.chmod(path, 0o600)  # it may hold the user's token
        return os.fspath(path)

    def get_object(self, plural, name, namespace="default"):
        try:
            return self._call("GET", self._path(plural, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, obj, plural=None, namespace="default"):
        plural = plural or {"Deployment": "deployments", "Service": "services", "Secret": "secrets",
                            "Namespace": "namespaces", "Job": "jobs", "Ingress": "ingresses"}[obj["kind"]]
        _, namespaced = RESOURCES[plural]
        body = json.loads(json.dumps(obj))
        body.setdefault("metadata", {}).setdefault("labels", {})[CREATED_LABEL] = "true"
        if plural == "namespaces":
            self._wait_until_gone("namespaces", body["metadata"]["name"], "")
            self._namespaces.add(body["metadata"]["name"])
        elif namespaced:
            body["metadata"].pop("namespace", None)
            self._namespaces.add(namespace)
        created = self._call("POST", self._path(plural, namespace if namespaced else ""), body)
        self._created.append((plural, namespace if namespaced else "", body["metadata"]["name"]))
        return created

    def load_image(self, name):
        """Make `name` runnable on the cluster: built locally from the test image if the engine lacks
        it, then loaded the way this cluster takes images (kind, k3d, minikube)."""
        key = (self.source, self.context, name)
        if key in _LOADED:  # a real cluster keeps what was loaded for the tests that follow
            return name
        if not image_exists(name):
            build_test_image(name)
        target = kubeimages.read_target(self.write_kubeconfig(self._scratch / "kubeconfig"), "norn-fake")
        try:
            loader = kubeimages.loader_for(name, target)
        except kubeimages.NoImageLoader as exc:
            raise pytest.UsageError(
                f"{VARIABLE}: the tests name images the cluster must run, but Norn cannot load images into "
                f"this cluster: {exc}"
            ) from None
        result = subprocess.run(loader.argv, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{' '.join(loader.argv)} failed: {result.stderr[-2000:]}"
        _LOADED.add(key)
        return name

    # --- afterwards -----------------------------------------------------------------------
    def cleanup(self):
        """Delete what the test created and what Norn wrote, and wait until it is gone, so the next
        test can use the same names."""
        shutil.rmtree(self._scratch, ignore_errors=True)
        gone = []
        for plural, namespace, name in reversed(self._created):
            if plural != "namespaces":
                gone.append(self._delete(plural, namespace, name))
        for namespace in self._namespaces:
            for plural in NORN_KINDS:
                selector = f"{kubemanifests.MANAGED_BY_LABEL}={kubemanifests.MANAGED_BY}"
                try:
                    listed = self._call("GET", self._path(plural, namespace), query=[("labelSelector", selector)])
                except ApiException:
                    continue
                for item in listed.get("items", []):
                    gone.append(self._delete(plural, namespace, item["metadata"]["name"]))
        for plural, _, name in self._created:
            if plural == "namespaces":
                gone.append(self._delete("namespaces", "", name))
        for plural, namespace, name in filter(None, gone):
            self._wait_until_gone(plural, name, namespace)

    # --- plumbing -------------------------------------------------------------------------
    def _path(self, plural, namespace, name=None):
        prefix, namespaced = RESOURCES[plural]
        path = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"
        return f"{path}/{name}" if name else path

    def _call(self, method, path, body=None, query=()):
        request = self.api.param_serialize(
            method, path, query_params=list(query), body=body, auth_settings=["BearerToken"],
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
        )
        response = self.api.call_api(*request, _request_timeout=30)
        data = response.read()
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=response.reason, body=data.decode(errors="replace"))
        return json.loads(data or b"{}")

    def _delete(self, plural, namespace, name):
        try:
            self._call("DELETE", self._path(plural, namespace, name), query=[("propagationPolicy", "Background")])
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return plural, namespace, name

    def _wait_until_gone(self, plural, name, namespace, timeout=180):
        deadline = time.monotonic() + timeout
        while self.get_object(plural, name, namespace) is not None:
            assert time.monotonic() < deadline, f"{plural}/{name} still exists {timeout} s after its deletion"
            time.sleep(0.5)


def build_test_image(name):
    """Tag the test image (see TEST_IMAGE_DOCKERFILE) as `name` on the local engine."""
    base = ensure_busybox_base_image()
    with tempfile.TemporaryDirectory(prefix="norn-test-image-") as directory:
        Path(directory, "Dockerfile").write_text(TEST_IMAGE_DOCKERFILE.format(base=base))
        result = subprocess.run(["docker", "build", "-q", "-t", name, directory], capture_output=True, text=True,
                                timeout=600, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert result.returncode == 0, f"building the test image {name} failed: {result.stderr[-2000:]}"


def _absolute(entry, base):
    """A kubeconfig entry whose file paths no longer depend on the kubeconfig's directory."""
    entry = json.loads(json.dumps(entry))
    body = entry.get("cluster") or entry.get("user") or {}
    for key in ("certificate-authority", "client-certificate", "client-key", "tokenFile"):
        if body.get(key):
            body[key] = os.fspath((base / os.path.expanduser(body[key])).resolve())
    return entry
