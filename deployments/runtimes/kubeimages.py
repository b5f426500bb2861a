"""Getting a built image to where a Kubernetes cluster without a registry can pull it.

Local clusters (minikube, kind, k3d) each have their own way to load an image from the
local Docker engine; which one applies is read from the cluster that the kubeconfig's
current context (or NORN_KUBE_CONTEXT) points at, never from the context's name alone.
"""

import re
from dataclasses import dataclass

import yaml
from kubernetes.config import ConfigException
from kubernetes.config.kube_config import KubeConfigMerger

from deployments.runtimes.kubeclient import current_context_name, kubeconfig_path

# What may go into a loader's argv as a cluster or profile name: the names kind, k3d and
# minikube themselves accept. Never starting with "-", so it cannot pass for an option.
CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
MINIKUBE_PROVIDER = "minikube.sigs.k8s.io"


class NoImageLoader(Exception):
    """The cluster is none Norn knows how to load images into; the message says what to do."""


@dataclass(frozen=True)
class Target:
    """The cluster an image has to reach, as the kubeconfig describes it."""

    context: str | None
    cluster: str | None  # the name of the kubeconfig's cluster entry
    server: str | None
    details: dict  # that cluster entry's body (server, certificate-authority, extensions, …)

    def describe(self) -> str:
        if self.context is None:
            return "no kubeconfig context (the in-cluster service account)"
        return f"context {self.context}, cluster {self.cluster or '(none)'}, server {self.server or '(none)'}"


@dataclass(frozen=True)
class Loader:
    tool: str  # minikube, kind or k3d: the command that has to be installed
    argv: list[str]


def current_target() -> Target:
    """The context Norn deploys to and the cluster entry it names."""
    return read_target(kubeconfig_path(), current_context_name())


def read_target(path: str, context: str | None) -> Target:
    """The cluster entry that `context` names in the kubeconfig(s) at `path` (":"-separated)."""
    if context is None:
        return Target(None, None, None, {})
    try:
        merged = KubeConfigMerger(path).config
        document = merged.value if merged is not None else {}
    except (ConfigException, OSError, ValueError, yaml.YAMLError):
        return Target(context, None, None, {})
    contexts = {entry.get("name"): entry.get("context") or {} for entry in _entries(document, "contexts")}
    cluster = contexts.get(context, {}).get("cluster")
    clusters = {entry.get("name"): entry.get("cluster") or {} for entry in _entries(document, "clusters")}
    details = clusters.get(cluster, {}) if isinstance(clusters.get(cluster), dict) else {}
    return Target(context, cluster, details.get("server"), details)


def _entries(document, key):
    # The merger wraps each entry in a ConfigNode; .value is the entry as written.
    entries = [getattr(entry, "value", entry) for entry in (document.get(key) or [])]
    return [entry for entry in entries if isinstance(entry, dict)]


def _is_minikube(target: Target) -> bool:
    """minikube names the cluster after its profile and marks it with an extension."""
    for entry in target.details.get("extensions") or []:
        extension = entry.get("extension") if isinstance(entry, dict) else None
        if isinstance(extension, dict) and extension.get("provider") == MINIKUBE_PROVIDER:
            return True
    authority = str(target.details.get("certificate-authority") or "")
    return target.cluster == "minikube" or "/.minikube/" in authority.replace("\\", "/")


def loader_for(image: str, target: Target) -> Loader:
    """The command that loads the local image into the target cluster (an argv, never a shell).

    Raises NoImageLoader for any other cluster, since its nodes cannot pull
    an image that only the local Docker engine has.
    """
    cluster = target.cluster or ""
    if cluster and CLUSTER_NAME.fullmatch(cluster):
        if cluster.startswith("kind-") and CLUSTER_NAME.fullmatch(cluster[5:]):
            return Loader("kind", ["kind", "load", "docker-image", image, "--name", cluster[5:]])
        if cluster.startswith("k3d-") and CLUSTER_NAME.fullmatch(cluster[4:]):
            return Loader("k3d", ["k3d", "image", "import", image, "-c", cluster[4:]])
        if _is_minikube(target):
            return Loader("minikube", ["minikube", "image", "load", image, "--profile", cluster])
    raise NoImageLoader(
        f"NORN_REGISTRY_URL is not set, and the Kubernetes cluster Norn deploys to ({target.describe()}) "
        "is not a local minikube, kind (cluster kind-<name>) or k3d (cluster k3d-<name>) cluster that "
        "Norn can load images into, so its nodes could not pull the image. Set NORN_REGISTRY_URL to a "
        "registry the cluster pulls from (and NORN_KUBE_IMAGE_PULL_SECRETS if it needs credentials)."
    )
