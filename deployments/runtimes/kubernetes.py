"""The Kubernetes runtime: each app is a Deployment `<app>` (plus a Service `<app>` when it
has a port or domains, an Ingress `<app>` for its domains, and a Secret `<app>-norn-env`
for the env values that hold passwords) in its infraspec namespace, driven through the
official `kubernetes` client.

`deploy(ctx)` sends the whole desired state of those objects on every deploy with
server-side apply (field manager "norn", force), so infraspec changes reach the cluster and
fields Norn no longer sets are removed while fields other managers own are kept; then it
waits for the rollout by the rules `kubectl rollout status` uses (kuberollout.py). A
rollback applies the manifests its target deployment applied (Deployment.kube_applied). The
objects are in kubemanifests.py, the client and its errors in kubeclient.py.
"""

import time

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deployments import appdb, transitions
from deployments.appenv import StepContext, container_env
from deployments.models import Deployment
from deployments.outcomes import StepFailed
from deployments.runtimes import kubeclient, kubemanifests, kuberollout
from deployments.runtimes.kubeclient import REQUEST_TIMEOUT, KubernetesError, api_error, is_not_found
from deployments.runtimes.kubemanifests import DEPLOYMENT_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, secret_name
from deployments.runtimes.kuberollout import read_deployment, rollout_status

__all__ = ["Error", "KubernetesError", "deploy", "remove", "status", "write_env"]

# What status() and remove() raise when the API cannot be asked.
Error = KubernetesError

# Server-side apply as `kubectl apply --server-side --field-manager=norn --force-conflicts`:
# infraspec is the source of truth for every field Norn sends, so a conflict with another
# manager (someone's `kubectl edit` of the image) is resolved in infraspec's favour rather
# than failing the deploy; fields Norn does not send stay with their owners.
FIELD_MANAGER = "norn"
APPLY = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": "application/apply-patch+yaml",
         "_request_timeout": REQUEST_TIMEOUT}
# A 409 on an apply means the apiserver lost an optimistic-concurrency race with another
# writer while merging; the apply is simply sent again, a bounded number of times.
WRITE_ATTEMPTS = 5
# How long to wait for the rollout when the step has no timeout of its own.
DEFAULT_TIMEOUT = 600


# --- deploy ------------------------------------------------------------------------


def deploy(ctx: StepContext) -> None:
    """Put ctx.image into service as the Deployment <app> and wait for the rollout.

    Applies the Secret <app>-norn-env (when the database URL holds a password),
    the Deployment, with a port (or domains) the Service and with domains the
    Ingress; without them, a Service or Ingress Norn made is deleted. A
    rollback applies its target's recorded manifests instead of ones made from
    the current infraspec. After the rollout, what Norn left
    in other namespaces the app was deployed to is deleted. Raises StepFailed
    with the reason when the API refuses, the rollout exceeds its progress
    deadline or ctx.timeout passes; runner.Cancelled on cancel.
    """
    if not ctx.image:
        raise StepFailed("there is no image to run: the build step did not produce one")
    limit = ctx.timeout or DEFAULT_TIMEOUT
    deadline = time.monotonic() + limit
    row, earlier = _history(ctx)
    namespace = earlier["namespace"] if earlier else ctx.spec.namespace
    try:
        api, host, source = kubeclient.api_client()
        with api:
            ctx.log(f"Kubernetes API {host} ({source}), namespace {namespace}")
            try:
                apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
                env_entries = write_env(ctx, core, namespace)
                if earlier:
                    ctx.log(f"Rolling back to the Deployment, Service and Ingress applied by deployment "
                            f"{earlier['deployment']['metadata']['annotations'][DEPLOYMENT_ANNOTATION]}")
                    manifest = kubemanifests.restamped(earlier["deployment"], ctx)
                    # A record made before Norn wrote Ingresses had none.
                    service, ingress = earlier["service"], earlier.get("ingress")
                else:
                    manifest = kubemanifests.deployment(ctx, namespace, env_entries)
                    port = kubemanifests.container_port(ctx.spec)
                    service = kubemanifests.service(ctx.app_name, namespace, port) if port else None
                    ingress = kubemanifests.ingress(ctx.app_name, namespace, ctx.spec)
                written, manifest = _apply_deployment(ctx, apps, namespace, manifest)
                _apply_service(ctx, core, namespace, service)
                _apply_ingress(ctx, client.NetworkingV1Api(api), namespace, ingress)
                if row is not None:
                    transitions.set_fields(row["pk"], kube_applied={
                        "namespace": namespace, "deployment": manifest, "service": service, "ingress": ingress})
                kuberollout.wait(ctx, api, written, deadline, limit)
                if row is not None:
                    _leave_other_namespaces(ctx, api, row["app_id"], namespace)
                if not _refers_to_secret(manifest, secret_name(ctx.app_name)):
                    _drop_unused_secret(ctx, core, namespace)
            except urllib3.exceptions.HTTPError as exc:
                raise kubeclient.connection_error(exc, host, "deploy") from None
    except (KubernetesError, kuberollout.RolloutFailed) as exc:
        raise StepFailed(str(exc)) from None


def _history(ctx: StepContext) -> tuple[dict | None, dict | None]:
    """(this deployment's row as {pk, app_id}, or None when there is none, e.g. a runtime
    used on its own; for a rollback, what its target applied, else None)."""
    row = Deployment.objects.filter(pk=ctx.deployment_id).values("pk", "app_id", "rollback_to__kube_applied").first()
    if row is None:
        return None, None
    earlier = row.pop("rollback_to__kube_applied") if ctx.kind == "rollback" else None
    if ctx.kind == "rollback" and not earlier:
        ctx.log("The deployment rolled back to has no recorded Kubernetes manifests (it predates them, or ran "
                "on another runtime): applying the current infraspec with its image")
    return row, earlier or None


def _apply(ctx: StepContext, kind: str, name: str, namespace: str, send):
    """send() the apply, again after a 409 (bounded); returns its result."""
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            return send()
        except ApiException as exc:
            if exc.status != 409 or attempt == WRITE_ATTEMPTS:
                action = f'apply {kind} "{name}"'
                if exc.status == 409:
                    action += f" ({WRITE_ATTEMPTS} attempts, each losing a race with another writer)"
                raise api_error(exc, action, namespace) from None
            message, reason, _ = kubeclient.status_of(exc)
            ctx.log(f'The {kind} "{name}" changed while Norn was writing it ({reason or 409}: {message}); '
                    f"applying again (attempt {attempt + 1} of {WRITE_ATTEMPTS})")
            kuberollout.check_cancel(ctx)
            time.sleep(kubeclient.RETRY_BACKOFF * attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


def _apply_deployment(ctx: StepContext, apps: client.AppsV1Api, namespace: str, manifest: dict):
    """Apply the Deployment manifest; returns (the Deployment as the apiserver stored it,
    the manifest as sent)."""
    name = ctx.app_name
    current = read_deployment(apps, name, namespace)
    if current is not None and (current.metadata.labels or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
        # Someone else's Deployment: Norn runs its image in it, but does not label it as
        # Norn's, so that `manage.py undeploy` keeps leaving it alone, and keeps its
        # selector, which is immutable (Norn's template labels are added to theirs).
        manifest = {**manifest, "metadata": {**manifest["metadata"], "labels": {
            k: v for k, v in manifest["metadata"]["labels"].items() if k != MANAGED_BY_LABEL}},
            "spec": {k: v for k, v in manifest["spec"].items() if k != "selector"}}
        containers = current.spec.template.spec.containers or []
        if not any(c.name == ctx.app_name for c in containers):
            # Applying would add Norn's container next to someone else's app.
            raise KubernetesError(
                f'deployment "{name}" in namespace "{namespace}" has no container named '
                f'"{ctx.app_name}" (it has: {", ".join(c.name for c in containers) or "none"}). '
                "Norn deploys the container named after the app and does not add containers "
                "to a Deployment it did not create; rename the app's container."
            )
    written = _apply(ctx, "deployment", name, namespace, lambda: apps.patch_namespaced_deployment(
        name, namespace, manifest, **APPLY))
    replicas = "default" if written.spec.replicas is None else written.spec.replicas
    if current is None:
        ctx.log(f'Created deployment "{name}" ({replicas} replicas) running {ctx.image}')
    else:
        ctx.log(f'Applied deployment "{name}" ({replicas} replicas) running {ctx.image} '
                f"(generation {current.metadata.generation} -> {written.metadata.generation})")
    return written, manifest


def write_env(ctx: StepContext, core: client.CoreV1Api, namespace: str) -> list[dict]:
    """The app container's env entries, after writing the values that hold passwords to the
    Secret <app>-norn-env they refer to.

    Called before creating anything that runs the image (the Deployment, a
    migration Job): its pods must find the values they refer to.
    """
    env = container_env(ctx)
    port = kubemanifests.container_port(ctx.spec)
    if port:  # the port of infraspec, or the one a domains-only webserver listens on
        env["PORT"] = str(port)
    env_entries, secret_data = kubemanifests.split_env(env, secret_name(ctx.app_name), appdb.secrets(ctx.spec))
    if secret_data:
        name = secret_name(ctx.app_name)
        body = kubemanifests.secret(ctx.app_name, namespace, secret_data)
        # Applied whole: a changed password reaches new pods, a key Norn no longer writes goes.
        _apply(ctx, "secret", name, namespace, lambda: core.patch_namespaced_secret(name, namespace, body, **APPLY))
        ctx.log(f'Applied secret "{name}" for {", ".join(secret_data)}')
    return env_entries


def _refers_to_secret(manifest: dict, name: str) -> bool:
    """Whether any container of the Deployment manifest takes a value from Secret `name`."""
    for container_body in manifest["spec"]["template"]["spec"]["containers"]:
        for entry in container_body.get("env") or []:
            if ((entry.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") == name:
                return True
    return False


def _drop_unused_secret(ctx: StepContext, core: client.CoreV1Api, namespace: str) -> None:
    """After a rollout whose pods refer to no Secret: delete the Secret <app>-norn-env Norn
    made (e.g. infraspec no longer has services.postgres). Only now, so that the pods of the
    previous rollout kept finding their values until they were replaced. The new pods
    already serve, so a failure here is logged, not a failed deploy."""
    name = secret_name(ctx.app_name)
    try:
        current = core.read_namespaced_secret(name, namespace, _request_timeout=REQUEST_TIMEOUT)
        if (current.metadata.labels or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
            return
        core.delete_namespaced_secret(name, namespace, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if not is_not_found(exc):
            ctx.log(f'Could not delete the secret "{name}" no pod uses any more: {api_error(exc, "delete", namespace)}')
        return
    except urllib3.exceptions.HTTPError as exc:
        ctx.log(f'Could not delete the secret "{name}" no pod uses any more: {exc}')
        return
    ctx.log(f'Deleted secret "{name}": no value of the environment needs it any more')


def _apply_service(ctx: StepContext, core: client.CoreV1Api, namespace: str, service: dict | None) -> None:
    """Apply the Service <app> for the port; without one, delete the Service Norn made.

    Fields Norn does not send (its type, extra ports, annotations for a load
    balancer) stay as whoever set them left them.
    """
    if service is not None:
        port = service["spec"]["ports"][0]["port"]
        _apply(ctx, "service", ctx.app_name, namespace, lambda: core.patch_namespaced_service(
            ctx.app_name, namespace, service, **APPLY))
        ctx.log(f'Applied service "{ctx.app_name}" (port {port} -> {port})')
        return
    _delete_own(ctx, "service", namespace, core.read_namespaced_service, core.delete_namespaced_service,
                "infraspec declares neither port nor domains any more")


def _apply_ingress(ctx: StepContext, networking: client.NetworkingV1Api, namespace: str,
                   ingress: dict | None) -> None:
    """Apply the Ingress <app> for the domains; without them, delete the Ingress Norn made.
    Annotations and fields others set (a controller's own settings) are kept."""
    if ingress is not None:
        hosts = ", ".join(rule["host"] for rule in ingress["spec"]["rules"])
        _apply(ctx, "ingress", ctx.app_name, namespace, lambda: networking.patch_namespaced_ingress(
            ctx.app_name, namespace, ingress, **APPLY))
        tls = ingress["spec"].get("tls")
        ctx.log(f'Applied ingress "{ctx.app_name}" for {hosts} '
                + (f'(TLS from secret "{tls[0]["secretName"]}")' if tls else "(plain HTTP only)"))
        return
    _delete_own(ctx, "ingress", namespace, networking.read_namespaced_ingress,
                networking.delete_namespaced_ingress, "infraspec declares no domains any more")


def _delete_own(ctx: StepContext, kind: str, namespace: str, read, delete_one, why: str) -> None:
    """Delete the <kind> <app> if Norn made it (labelled managed-by=norn); someone else's stays."""
    name = ctx.app_name
    try:
        current = read(name, namespace, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if is_not_found(exc):
            return
        raise api_error(exc, f'read {kind} "{name}"', namespace) from None
    if (current.metadata.labels or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
        return
    try:
        delete_one(name, namespace, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if not is_not_found(exc):
            raise api_error(exc, f'delete {kind} "{name}"', namespace) from None
    ctx.log(f'Deleted {kind} "{name}": {why}')


def _leave_other_namespaces(ctx: StepContext, api: client.ApiClient, app_id: int, namespace: str) -> None:
    """After a successful rollout in `namespace`, delete what Norn made for the app in the
    other namespaces it was ever applied to (a namespace change moves the app).

    The new objects already serve, so a failure here is logged, not a failed deploy.
    """
    others = (Deployment.objects.filter(app_id=app_id).exclude(kube_applied=None)
              .exclude(kube_applied__namespace=namespace)
              .values_list("kube_applied__namespace", flat=True).distinct())
    for other in sorted(set(others)):
        try:
            removed = _delete_managed(api, ctx.app_name, other, gone_namespace_ok=True)
        except (KubernetesError, urllib3.exceptions.HTTPError) as exc:
            ctx.log(f'Could not delete what Norn left in namespace "{other}": {exc}; '
                    f"run manage.py undeploy for it there")
            continue
        if removed:
            ctx.log(f'Moved from namespace "{other}": deleted {", ".join(removed)} there')


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
    """Delete the app's Deployment, Service, Ingress and Secret: those Norn created.

    Objects of those names without the app.kubernetes.io/managed-by=norn label
    were made by someone else and are left alone. Returns what was deleted,
    as "kind/name" strings; raises KubernetesError when the API fails.
    """
    return _outside_step(f'remove app "{app_name}"', lambda api: _delete_managed(api, app_name, namespace))


def _delete_managed(api: client.ApiClient, app_name: str, namespace: str,
                    gone_namespace_ok: bool = False) -> list[str]:
    apps, core, networking = client.AppsV1Api(api), client.CoreV1Api(api), client.NetworkingV1Api(api)
    targets = (
        ("deployment", app_name, apps.read_namespaced_deployment, apps.delete_namespaced_deployment),
        ("ingress", app_name, networking.read_namespaced_ingress, networking.delete_namespaced_ingress),
        ("service", app_name, core.read_namespaced_service, core.delete_namespaced_service),
        ("secret", secret_name(app_name), core.read_namespaced_secret, core.delete_namespaced_secret),
    )
    removed = []
    for kind, name, read, delete_one in targets:
        try:
            current = read(name, namespace, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if is_not_found(exc) or (gone_namespace_ok and exc.status == 404):
                continue
            raise api_error(exc, f'read {kind} "{name}"', namespace) from None
        if (current.metadata.labels or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
            continue
        try:
            # Background: the ReplicaSets and pods go too, without making us wait for them.
            delete_one(name, namespace, propagation_policy="Background", _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if is_not_found(exc) or (gone_namespace_ok and exc.status == 404):
                continue
            raise api_error(exc, f'delete {kind} "{name}"', namespace) from None
        removed.append(f"{kind}/{name}")
    return removed
