"""The Kubernetes objects Norn writes for an app, as plain manifests: the Deployment
`<app>`, the Service for its port, the Ingress for its domains and the Secret for the
environment values that hold passwords. No API calls. Each is Norn's whole desired state for the fields it owns,
sent with server-side apply (runtimes/kubernetes.py): a field left out here is one
Norn leaves to others (or, when Norn applied it before, removes).

Every pod Norn makes (the Deployment's, a migration Job's) runs with the infraspec's
`resources` and a securityContext that the "restricted" Pod Security Standard admits,
unless infraspec `security` relaxes it.
"""

import base64
import copy

from django.conf import settings

from apps_registry.spec import Spec
from deployments.appenv import StepContext

NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "norn"
DEPLOYMENT_ANNOTATION = "norn.dev/deployment"
# The port a webserver with domains and no infraspec `port` listens on ($PORT) in its pods.
DOMAINS_PORT = 8080
# ingress-nginx's redirect of plain HTTP to HTTPS; other controllers have their own annotation.
SSL_REDIRECT_ANNOTATION = "nginx.ingress.kubernetes.io/ssl-redirect"
ISSUER_ANNOTATION = "cert-manager.io/cluster-issuer"


def secret_name(app_name: str) -> str:
    return f"{app_name}-norn-env"


def tls_secret_name(app_name: str) -> str:
    return f"{app_name}-tls"


def container_port(spec: Spec) -> int | None:
    """The port the app listens on in its pods ($PORT), with a Service for it: infraspec
    `port`, else DOMAINS_PORT for a webserver with domains, else none."""
    return spec.port or (DOMAINS_PORT if spec.domains else None)


def labels(app_name: str) -> dict[str, str]:
    return {NAME_LABEL: app_name, MANAGED_BY_LABEL: MANAGED_BY}


def split_env(env: dict[str, str], secret_ref: str, passwords: list[str]) -> tuple[list[dict], dict[str, str]]:
    """(env entries for the container, data for the Secret named `secret_ref`).

    Values holding the app-database password (DATABASE_URL, PGPASSWORD) go to
    the Secret and are referenced from it: anyone who may read Deployments, or
    reads `kubectl get deployment -o yaml` over someone's shoulder, must not
    see them (`passwords`: appdb.secrets() of the app). Everything else stays a
    plain value, visible where it is used.
    """
    entries, secret = [], {}
    for name, value in env.items():
        value = str(value)
        if any(password in value for password in passwords):
            secret[name] = value
            entries.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret_ref, "key": name}}})
        else:
            entries.append({"name": name, "value": value})
    return entries, secret


def pod_security(spec: Spec) -> dict:
    """The pod's securityContext: non-root (unless security.runAsNonRoot: false) and the
    runtime's default seccomp profile, as the restricted Pod Security Standard asks.

    runAsNonRoot makes the kubelet refuse to start an image whose USER is root or
    a name (it cannot tell a name's uid): such images need security.runAsUser.
    """
    context = {"runAsNonRoot": spec.security.run_as_non_root, "seccompProfile": {"type": "RuntimeDefault"}}
    if spec.security.run_as_user is not None:
        context["runAsUser"] = spec.security.run_as_user
    return context


def container_security() -> dict:
    """Each container's securityContext: no setuid escalation and no capabilities, as
    the Docker runtime's --security-opt no-new-privileges and --cap-drop ALL."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def container(ctx: StepContext, env_entries: list[dict]) -> dict:
    """The app's container of ctx.image: its env, resources and securityContext."""
    body = {"name": ctx.app_name, "image": ctx.image, "env": env_entries,
            "securityContext": container_security()}
    resources = {kind: amounts.to_dict() for kind, amounts in (
        ("requests", ctx.spec.resources.requests), ("limits", ctx.spec.resources.limits)) if amounts.to_dict()}
    if resources:
        body["resources"] = resources
    return body


def image_pull_secrets() -> dict:
    """The pod spec's imagePullSecrets from NORN_KUBE_IMAGE_PULL_SECRETS (none: no field at all)."""
    names = settings.NORN_KUBE_IMAGE_PULL_SECRETS
    return {"imagePullSecrets": [{"name": name} for name in names]} if names else {}


def deployment(ctx: StepContext, namespace: str, env_entries: list[dict]) -> dict:
    """The Deployment <app>. Without infraspec `replicas` the field is left out, so that
    whoever scales the app (an HorizontalPodAutoscaler, `kubectl scale`) owns it; a new
    Deployment then starts with the apiserver's default of 1."""
    container_body = container(ctx, env_entries)
    port = container_port(ctx.spec)
    if port:
        container_body["ports"] = [{"containerPort": port, "protocol": "TCP"}]
        if ctx.spec.healthcheck:
            container_body["readinessProbe"] = {"httpGet": {"path": ctx.spec.healthcheck, "port": port}}
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": ctx.app_name,
            "namespace": namespace,
            "labels": labels(ctx.app_name),
            "annotations": {DEPLOYMENT_ANNOTATION: ctx.public_id},
        },
        "spec": {
            # Only the name label: the selector is immutable, so it must not
            # depend on anything that might ever change.
            "selector": {"matchLabels": {NAME_LABEL: ctx.app_name}},
            "template": {
                "metadata": {"labels": labels(ctx.app_name)},
                "spec": {"securityContext": pod_security(ctx.spec), "containers": [container_body],
                         **image_pull_secrets()},
            },
        },
    }
    if ctx.spec.replicas_declared:
        body["spec"]["replicas"] = ctx.spec.replicas
    if "readinessProbe" not in container_body:
        # No probe says when a pod is ready, so it is ready when it starts; make it stay up a while
        # before it counts, or an app that crashes a second after starting would be "deployed".
        body["spec"]["minReadySeconds"] = settings.NORN_KUBE_MIN_READY_SECONDS
    return body


def restamped(manifest: dict, ctx: StepContext) -> dict:
    """An earlier deployment's Deployment manifest (Deployment.kube_applied) as a
    rollback applies it: its template and image, marked as applied by ctx's deployment."""
    body = copy.deepcopy(manifest)
    body["metadata"].setdefault("annotations", {})[DEPLOYMENT_ANNOTATION] = ctx.public_id
    for container_body in body["spec"]["template"]["spec"]["containers"]:
        if container_body.get("name") == ctx.app_name:
            for entry in container_body.get("env") or []:
                if entry.get("name") == "NORN_DEPLOYMENT" and "value" in entry:
                    entry["value"] = ctx.public_id
    return body


def secret(app_name: str, namespace: str, data: dict[str, str]) -> dict:
    """The Secret <app>-norn-env holding `data` (see split_env)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name(app_name), "namespace": namespace, "labels": labels(app_name)},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def service(app_name: str, namespace: str, port: int) -> dict:
    """The Service <app> for the app's declared port. Its type is left out: the apiserver
    defaults it to ClusterIP, and whoever makes it a LoadBalancer keeps that."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app_name, "namespace": namespace, "labels": labels(app_name)},
        "spec": {
            "selector": {NAME_LABEL: app_name},
            "ports": [{"port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def ingress(app_name: str, namespace: str, spec: Spec) -> dict | None:
    """The Ingress <app> for infraspec `domains` (None without them): a rule per name, path
    / to the Service <app>, and unless `https: off` TLS from the Secret <app>-tls, which
    cert-manager issues when NORN_KUBE_TLS_ISSUER names a ClusterIssuer (else the operator
    provides it). The redirect of plain HTTP is said as ingress-nginx reads it."""
    if not spec.domains:
        return None
    backend = {"service": {"name": app_name, "port": {"number": container_port(spec)}}}
    annotations = {SSL_REDIRECT_ANNOTATION: "true" if spec.https == "redirect" else "false"}
    body = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": app_name, "namespace": namespace, "labels": labels(app_name),
                     "annotations": annotations},
        "spec": {"rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}
                           for host in spec.domains]},
    }
    if settings.NORN_KUBE_INGRESS_CLASS:
        body["spec"]["ingressClassName"] = settings.NORN_KUBE_INGRESS_CLASS
    if spec.https != "off":
        body["spec"]["tls"] = [{"hosts": list(spec.domains), "secretName": tls_secret_name(app_name)}]
        if settings.NORN_KUBE_TLS_ISSUER:
            annotations[ISSUER_ANNOTATION] = settings.NORN_KUBE_TLS_ISSUER
    return body


APP_LABEL = "norn.dev/app"
PURPOSE_LABEL = "norn.dev/purpose"
# How long a finished Job may stay when Norn could not delete it (a worker that died).
JOB_TTL_SECONDS = 3600


def job_name(app_name: str, purpose: str, public_id: str) -> str:
    """<app>-<purpose>-<8 hex of the deployment id>: a DNS-1123 label of at most 63 characters
    (a Job's name is also its pods' job-name label value)."""
    suffix = f"-{purpose}-{public_id.replace('-', '')[:8]}"
    return (app_name[: 63 - len(suffix)].rstrip("-") + suffix).lower()


def job(ctx: StepContext, namespace: str, name: str, purpose: str, command: str, env_entries: list[dict],
        deadline_seconds: int) -> dict:
    """A run-once Job of ctx.image running `sh -c command` with the app's environment.

    The pods carry no app.kubernetes.io/name label: the app's Service selects
    on it, and a migration must never receive the app's traffic. Nor do they
    get a service account token or the namespace's service links: app code
    gets the app's environment and nothing about the cluster.
    """
    job_labels = {**labels(ctx.app_name), DEPLOYMENT_ANNOTATION: ctx.public_id, PURPOSE_LABEL: purpose}
    pod_labels = {MANAGED_BY_LABEL: MANAGED_BY, APP_LABEL: ctx.app_name, DEPLOYMENT_ANNOTATION: ctx.public_id,
                  PURPOSE_LABEL: purpose}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": job_labels,
            "annotations": {DEPLOYMENT_ANNOTATION: ctx.public_id},
        },
        "spec": {
            # One attempt: a failed migration is for a person to look at, not to rerun blindly.
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline_seconds,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(ctx.spec),
                    "containers": [{**container(ctx, env_entries), "command": ["sh", "-c", command]}],
                    **image_pull_secrets(),
                },
            },
        },
    }
