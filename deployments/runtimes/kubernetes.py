"""The Kubernetes runtime: each app is a Deployment `<app>` (plus a Service `<app>` when it
has a port) in its infraspec namespace, driven through the official `kubernetes` client.

`deploy(ctx)` creates them on the first deploy, afterwards changes only the image of the
app's own container, then waits for the rollout by the rules `kubectl rollout status` uses
(kuberollout.py). The objects are in kubemanifests.py, the client and its errors in
kubeclient.py.
"""

import time

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deployments import appdb
from deployments.appenv import StepContext, container_env
from deployments.outcomes import StepFailed
from deployments.runtimes import kubeclient, kubemanifests, kuberollout
from deployments.runtimes.kubeclient import REQUEST_TIMEOUT, KubernetesError, api_error, is_not_found
from deployments.runtimes.kubemanifests import DEPLOYMENT_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, secret_name
from deployments.runtimes.kuberollout import read_deployment, rollout_status

__all__ = ["Error", "KubernetesError", "deploy", "remove", "status", "write_env"]

# What status() and remove() raise when the API cannot be asked.
Error = KubernetesError

# A 409 means someone else wrote the Deployment between our read and our write
# (another client, or a controller racing a create); a few fresh reads settle it.
WRITE_ATTEMPTS = 5
# How long to wait for the rollout when the step has no timeout of its own.
DEFAULT_TIMEOUT = 600


# --- deploy ------------------------------------------------------------------------


def deploy(ctx: StepContext) -> None:
    """Put ctx.image into service as the Deployment <app> and wait for the rollout.

    First deploy: create the Secret <app>-norn-env (only when the database URL
    holds a password), the Deployment and, with a port, the Service. Later
    deploys: refresh that Secret and patch the image of container <app>.
    Raises StepFailed with the reason when the API refuses, the rollout exceeds
    its progress deadline or ctx.timeout passes; runner.Cancelled on cancel.
    """
    if not ctx.image:
        raise StepFailed("there is no image to run: the build step did not produce one")
    limit = ctx.timeout or DEFAULT_TIMEOUT
    deadline = time.monotonic() + limit
    namespace = ctx.spec.namespace
    try:
        api, host, source = kubeclient.api_client()
        with api:
            ctx.log(f"Kubernetes API {host} ({source}), namespace {namespace}")
            try:
                written = _apply(ctx, api, namespace)
                if ctx.spec.port:
                    _ensure_service(ctx, api, namespace)
                kuberollout.wait(ctx, api, written, deadline, limit)
            except urllib3.exceptions.HTTPError as exc:
                raise kubeclient.connection_error(exc, host, "deploy") from None
    except (KubernetesError, kuberollout.RolloutFailed) as exc:
        raise StepFailed(str(exc)) from None


def _apply(ctx: StepContext, api: client.ApiClient, namespace: str) -> client.V1Deployment:
    """Create or patch the Deployment; returns it as the apiserver accepted it."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    name = ctx.app_name
    env_entries = write_env(ctx, core, namespace)

    for attempt in range(1, WRITE_ATTEMPTS + 1):
        current = read_deployment(apps, name, namespace)
        try:
            if current is None:
                written = apps.create_namespaced_deployment(
                    namespace, kubemanifests.deployment(ctx, namespace, env_entries), _request_timeout=REQUEST_TIMEOUT
                )
                ctx.log(f'Created deployment "{name}" ({written.spec.replicas} replicas) running {ctx.image}')
                return written
            containers = current.spec.template.spec.containers or []
            if not any(c.name == ctx.app_name for c in containers):
                raise KubernetesError(
                    f'deployment "{name}" in namespace "{namespace}" has no container named '
                    f'"{ctx.app_name}" (it has: {", ".join(c.name for c in containers) or "none"}). '
                    "Norn deploys by setting the image of the container named after the app and "
                    "does not add containers to an existing Deployment; rename the app's container."
                )
            written = apps.patch_namespaced_deployment(
                name, namespace, kubemanifests.image_patch(ctx, current.metadata.resource_version),
                _request_timeout=REQUEST_TIMEOUT,
            )
            ctx.log(
                f'Set the image of container "{ctx.app_name}" in deployment "{name}" to {ctx.image} '
                f"(generation {current.metadata.generation} -> {written.metadata.generation})"
            )
            return written
        except ApiException as exc:
            if exc.status != 409 or attempt == WRITE_ATTEMPTS:
                action = f'{"create" if current is None else "update"} deployment "{name}"'
                if exc.status == 409:
                    action += f" ({WRITE_ATTEMPTS} attempts, each losing a race with another writer)"
                raise api_error(exc, action, namespace) from None
            message, reason, _ = kubeclient.status_of(exc)
            ctx.log(f'Deployment "{name}" changed while Norn was writing it ({reason or 409}: {message}); '
                    f"reading it again (attempt {attempt + 1} of {WRITE_ATTEMPTS})")
            kuberollout.check_cancel(ctx)
            time.sleep(kubeclient.RETRY_BACKOFF * attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


def write_env(ctx: StepContext, core: client.CoreV1Api, namespace: str) -> list[dict]:
    """The app container's env entries, after writing the values that hold passwords to the
    Secret <app>-norn-env they refer to.

    Called before creating anything that runs the image (the Deployment, a
    migration Job): its pods must find the values they refer to.
    """
    env_entries, secret_data = kubemanifests.split_env(
        container_env(ctx), secret_name(ctx.app_name), appdb.secrets(ctx.spec)
    )
    if secret_data:
        _write_secret(ctx, core, namespace, secret_data)
    return env_entries


def _write_secret(ctx: StepContext, core: client.CoreV1Api, namespace: str, data: dict[str, str]) -> None:
    """Create or replace the Secret holding the env values that contain passwords."""
    name = secret_name(ctx.app_name)
    body = kubemanifests.secret(ctx.app_name, namespace, data)
    try:
        core.create_namespaced_secret(namespace, body, _request_timeout=REQUEST_TIMEOUT)
        ctx.log(f'Created secret "{name}" for {", ".join(data)}')
        return
    except ApiException as exc:
        if exc.status != 409:
            raise api_error(exc, f'create secret "{name}"', namespace) from None
    # It exists: replace it whole, so a changed password reaches new pods.
    # Secrets may be updated without a resourceVersion; last writer wins,
    # and every writer writes the same current values.
    try:
        core.replace_namespaced_secret(name, namespace, body, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        raise api_error(exc, f'update secret "{name}"', namespace) from None
    ctx.log(f'Updated secret "{name}" for {", ".join(data)}')


def _ensure_service(ctx: StepContext, api: client.ApiClient, namespace: str) -> None:
    """Create the Service <app> for the declared port unless one exists already.

    An existing Service is left alone: someone may have shaped it (type,
    extra ports, annotations for a load balancer) on purpose.
    """
    core = client.CoreV1Api(api)
    name, port = ctx.app_name, ctx.spec.port
    try:
        core.read_namespaced_service(name, namespace, _request_timeout=REQUEST_TIMEOUT)
        return
    except ApiException as exc:
        if not is_not_found(exc):
            raise api_error(exc, f'read service "{name}"', namespace) from None
    body = kubemanifests.service(name, namespace, port)
    try:
        core.create_namespaced_service(namespace, body, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status == 409:  # created concurrently: that is what we wanted
            return
        raise api_error(exc, f'create service "{name}"', namespace) from None
    ctx.log(f'Created service "{name}" (ClusterIP, port {port} -> {port})')


# --- status and removal (manage.py app_status, manage.py undeploy) ---------------------------------------------------------


def _outside_step(action, fn):
    """Run fn(api) with a fresh client, turning every failure into KubernetesError."""
    api, host, _ = kubeclient.api_client()
    with api:
        try:
            return fn(api)
        except urllib3.exceptions.HTTPError as exc:
            raise kubeclient.connection_error(exc, host, action) from None


def status(app_name: str, namespace: str = "default") -> dict | None:
    """What the cluster says about the app's Deployment, or None when there is none.

    A dict: name, namespace, image (of container <app>; None if it has no such
    container), deployment (the public id of the Norn deployment that last set
    it), managed (created by Norn), replicas (desired), updated, ready,
    available, generation, observed_generation, state ("complete",
    "progressing" or "failed") and message (kubectl rollout status's line).
    Raises KubernetesError when the API cannot be asked.
    """

    def read(api):
        current = read_deployment(client.AppsV1Api(api), app_name, namespace)
        if current is None:
            return None
        meta, st = current.metadata, current.status or client.V1DeploymentStatus()
        container = next(
            (c for c in current.spec.template.spec.containers or [] if c.name == app_name), None
        )
        state, message = rollout_status(current)
        return {
            "name": app_name,
            "namespace": namespace,
            "image": container.image if container else None,
            "deployment": (meta.annotations or {}).get(DEPLOYMENT_ANNOTATION, ""),
            "managed": (meta.labels or {}).get(MANAGED_BY_LABEL) == MANAGED_BY,
            "replicas": current.spec.replicas,
            "updated": st.updated_replicas or 0,
            "ready": st.ready_replicas or 0,
            "available": st.available_replicas or 0,
            "generation": meta.generation,
            "observed_generation": st.observed_generation,
            "state": state,
            "message": message,
        }

    return _outside_step(f'read deployment "{app_name}"', read)


def remove(app_name: str, namespace: str = "default") -> list[str]:
    """Delete the app's Deployment, Service and Secret: those Norn created.

    Objects of those names without the app.kubernetes.io/managed-by=norn label
    were made by someone else and are left alone. Returns what was deleted,
    as "kind/name" strings; raises KubernetesError when the API fails.
    """

    def delete(api):
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        targets = (
            ("deployment", app_name, apps.read_namespaced_deployment,
             apps.delete_namespaced_deployment),
            ("service", app_name, core.read_namespaced_service, core.delete_namespaced_service),
            ("secret", secret_name(app_name), core.read_namespaced_secret, core.delete_namespaced_secret),
        )
        removed = []
        for kind, name, read, delete_one in targets:
            try:
                current = read(name, namespace, _request_timeout=REQUEST_TIMEOUT)
            except ApiException as exc:
                if is_not_found(exc):
                    continue
                raise api_error(exc, f'read {kind} "{name}"', namespace) from None
            if (current.metadata.labels or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
                continue
            try:
                # Background: the ReplicaSets and pods go too, without making us wait for them.
                delete_one(name, namespace, propagation_policy="Background", _request_timeout=REQUEST_TIMEOUT)
            except ApiException as exc:
                if is_not_found(exc):
                    continue
                raise api_error(exc, f'delete {kind} "{name}"', namespace) from None
            removed.append(f"{kind}/{name}")
        return removed

    return _outside_step(f'remove app "{app_name}"', delete)
