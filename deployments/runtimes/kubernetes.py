"""The Kubernetes runtime: each app is a Deployment `<app>` (plus a Service `<app>` when it
has a port) in its infraspec namespace, driven through the official `kubernetes` client.

`deploy(ctx)` creates them on the first deploy, afterwards changes only the image of the
app's own container, then waits for the rollout by the rules `kubectl rollout status` uses.
"""

import base64
import contextlib
import json
import math
import os
import time

import urllib3
import yaml
from django.conf import settings
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from deployments import appdb, runner
from deployments.appenv import container_env
from deployments.outcomes import StepFailed

NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "norn"
DEPLOYMENT_ANNOTATION = "norn.dev/deployment"
DEFAULT_KUBECONFIG = "~/.kube/config"

# Transport-level retries, done by urllib3 for every request: refused or reset
# connections, read timeouts, and the statuses an apiserver (or the load
# balancer in front of it) uses for "try again": overload, restarts, rollouts
# of the control plane. Every method is retried: the only non-idempotent
# request here is a create, and a repeated create answers 409 AlreadyExists,
# which the read-modify-write loop below handles like any other conflict.
API_RETRIES = 4
RETRY_STATUSES = (429, 500, 502, 503, 504)
# Sleeps of 0, 0.4, 0.8, 1.6 s between the 5 attempts (urllib3 doubles it).
RETRY_BACKOFF = 0.2
RETRY_BACKOFF_MAX = 10.0
# (connect, read) seconds for one ordinary request; the whole deploy is bounded by ctx.timeout.
REQUEST_TIMEOUT = (10, 30)
# A 409 means someone else wrote the Deployment between our read and our write
# (another client, or a controller racing a create); a few fresh reads settle it.
WRITE_ATTEMPTS = 5
# The rollout is watched in slices this long, so a cancel or the step's
# deadline is noticed even while the Deployment does not change at all.
WATCH_SLICE_SECONDS = 2
# Consecutive failed watch slices (each already retried by urllib3) before giving up.
WATCH_ATTEMPTS = 4
# How long to wait for the rollout when the step has no timeout of its own.
DEFAULT_TIMEOUT = 600


class KubernetesError(Exception):
    """A Kubernetes API call failed; the message is meant for users (and holds no credentials)."""


class _RolloutFailed(Exception):
    """The rollout cannot finish: the progress deadline passed, or the Deployment is gone."""


def secret_name(app_name):
    return f"{app_name}-norn-env"


# --- configuration -----------------------------------------------------------------


def kubeconfig_path():
    """NORN_KUBECONFIG, else $KUBECONFIG as it is now, else ~/.kube/config."""
    explicit = getattr(settings, "NORN_KUBECONFIG", None)
    return os.fspath(explicit or os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG)


def current_context_name():
    """The kubeconfig context Norn deploys to, or None without a kubeconfig."""
    explicit = getattr(settings, "NORN_KUBE_CONTEXT", None)
    if explicit:
        return explicit
    try:
        _, current = config.list_kube_config_contexts(config_file=kubeconfig_path())
    except (config.ConfigException, OSError, ValueError, yaml.YAMLError):
        return None
    return (current or {}).get("name")


def _configuration():
    """A private client Configuration and a description of where it came from.

    Kubeconfig first: NORN_KUBECONFIG, else $KUBECONFIG (read now, not at import
    time as the client's own default is), else ~/.kube/config; then the pod's
    service account. The result is never installed as the client's global
    default, so concurrent deploys and tests cannot leak settings into each other.
    """
    explicit = getattr(settings, "NORN_KUBECONFIG", None)
    path = kubeconfig_path()
    context = getattr(settings, "NORN_KUBE_CONTEXT", None) or None
    configuration = client.Configuration()
    tried = []
    try:
        # persist_config=False: token refreshes must not rewrite the operator's kubeconfig.
        config.load_kube_config(
            config_file=path, context=context, client_configuration=configuration, persist_config=False
        )
        source = f"kubeconfig {path}" + (f", context {context}" if context else "")
    except (config.ConfigException, OSError, ValueError, yaml.YAMLError) as exc:
        tried.append(f"kubeconfig {path}" + (f" (context {context})" if context else "") + f": {exc}")
        if explicit:
            # An operator who named a kubeconfig wants that one; quietly
            # using the pod's own account instead could deploy elsewhere.
            raise KubernetesError(f"cannot use NORN_KUBECONFIG: {tried[0]}") from None
        try:
            config.load_incluster_config(client_configuration=configuration)
            source = "the pod's service account (in-cluster configuration)"
        except (config.ConfigException, OSError) as exc:
            tried.append(f"in-cluster service account: {exc}")
            raise KubernetesError(
                "no Kubernetes configuration found. Tried " + "; ".join(tried)
                + ". Set NORN_KUBECONFIG (or KUBECONFIG) to a kubeconfig file, "
                "or run Norn in a pod with a service account."
            ) from None
    configuration.retries = urllib3.Retry(
        total=API_RETRIES,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,
        backoff_factor=RETRY_BACKOFF,
        backoff_max=RETRY_BACKOFF_MAX,
        # Hand back the last error response instead of raising MaxRetryError,
        # so the apiserver's own Status message reaches the user.
        raise_on_status=False,
        # A redirect would carry the bearer token to wherever it points.
        redirect=False,
    )
    return configuration, source


def _api_client():
    configuration, source = _configuration()
    return client.ApiClient(configuration), configuration.host, source


# --- errors ------------------------------------------------------------------------


def _status_of(exc):
    """(message, reason, details) from the apiserver's Status body, as far as there is one."""
    try:
        body = json.loads(exc.body) if exc.body else None
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return body.get("message") or "", body.get("reason") or "", body.get("details") or {}
    # Watch ERROR events and transport failures arrive without a Status body;
    # their `reason` then holds "Reason: message" or the client's own text.
    return str(exc.reason or "").strip(), "", {}


def _api_error(exc, action, namespace=None):
    """Turn an ApiException into a KubernetesError saying what to do about it.

    Only the Status message, reason and code are used: ApiException's own
    text carries response headers, which have no place in a step's error.
    """
    message, reason, details = _status_of(exc)
    code = exc.status
    summary = f"{message} ({code} {reason})" if reason else f"{message} ({code})"
    if code == 401:
        return KubernetesError(
            f"the Kubernetes API rejected Norn's credentials while trying to {action}: {summary}. "
            "Check the token or client certificate of the kubeconfig user (NORN_KUBECONFIG, "
            "NORN_KUBE_CONTEXT); it may have expired or been rotated."
        )
    if code == 403:
        return KubernetesError(
            f"Norn's Kubernetes user is not allowed to {action}: {summary}. "
            "Grant it the missing permission (an RBAC Role/RoleBinding in that namespace)."
        )
    if code == 404 and details.get("kind") == "namespaces":
        return KubernetesError(
            f'namespace "{namespace or details.get("name")}" does not exist, so Norn cannot {action}. '
            f'Create it (kubectl create namespace {namespace or details.get("name")}) '
            "or change `namespace` in infraspec.yaml."
        )
    if code == 0:
        # The client reports TLS failures with status 0 and the SSL error as reason.
        return KubernetesError(f"cannot talk to the Kubernetes API to {action}: {' '.join(message.split())}")
    if code and code >= 500:
        return KubernetesError(
            f"the Kubernetes API failed to {action}: {summary}, "
            f"still after {API_RETRIES} retries over a few seconds"
        )
    return KubernetesError(f"could not {action}: {summary}")


def _connection_error(exc, host, action):
    reason = getattr(exc, "reason", None) or exc
    return KubernetesError(
        f"cannot reach the Kubernetes API at {host} to {action}: {reason} "
        f"(still after {API_RETRIES} retries)"
    )


def _is_not_found(exc):
    """A 404 for the object itself (not for its namespace or the whole resource type)."""
    _, _, details = _status_of(exc)
    return exc.status == 404 and details.get("kind") not in ("namespaces", None)


# --- objects -----------------------------------------------------------------------


def _labels(app_name):
    return {NAME_LABEL: app_name, MANAGED_BY_LABEL: MANAGED_BY}


def _split_env(env, secret_ref):
    """(env entries for the container, data for the Secret named `secret_ref`).

    Values holding the app-database password (DATABASE_URL, PGPASSWORD) go to
    the Secret and are referenced from it: anyone who may read Deployments, or
    reads `kubectl get deployment -o yaml` over someone's shoulder, must not
    see them. Everything else stays a plain value, visible where it is used.
    """
    passwords = appdb.secrets()
    entries, secret = [], {}
    for name, value in env.items():
        value = str(value)
        if any(password in value for password in passwords):
            secret[name] = value
            entries.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret_ref, "key": name}}})
        else:
            entries.append({"name": name, "value": value})
    return entries, secret


def _deployment_manifest(ctx, namespace, env_entries):
    container = {"name": ctx.app_name, "image": ctx.image, "env": env_entries}
    port = ctx.spec.port
    if port:
        container["ports"] = [{"containerPort": port, "protocol": "TCP"}]
        if ctx.spec.healthcheck:
            container["readinessProbe"] = {"httpGet": {"path": ctx.spec.healthcheck, "port": port}}
    replicas = ctx.spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": ctx.app_name,
            "namespace": namespace,
            "labels": _labels(ctx.app_name),
            "annotations": {DEPLOYMENT_ANNOTATION: ctx.public_id},
        },
        "spec": {
            "replicas": 1 if replicas is None else replicas,
            # Only the name label: the selector is immutable, so it must not
            # depend on anything that might ever change.
            "selector": {"matchLabels": {NAME_LABEL: ctx.app_name}},
            "template": {
                "metadata": {"labels": _labels(ctx.app_name)},
                "spec": {"containers": [container]},
            },
        },
    }


def _image_patch(ctx, resource_version):
    """A strategic merge patch that changes only the app's own container.

    Containers merge by name, so sidecars are left as they are. The
    resourceVersion makes it a compare-and-swap against the read that
    confirmed the container exists: if the Deployment changed since, the
    apiserver answers 409 instead of the patch re-adding a removed container.
    NORN_COMMIT and NORN_DEPLOYMENT merge by name into the container's env so
    they keep describing what runs; nothing else of the env is touched.
    """
    return {
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": {DEPLOYMENT_ANNOTATION: ctx.public_id},
        },
        "spec": {"template": {"spec": {"containers": [{
            "name": ctx.app_name,
            "image": ctx.image,
            "env": [
                {"name": "NORN_COMMIT", "value": ctx.commit_sha},
                {"name": "NORN_DEPLOYMENT", "value": ctx.public_id},
            ],
        }]}}},
    }


# --- deploy ------------------------------------------------------------------------


def deploy(ctx):
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
        api, host, source = _api_client()
        with api:
            ctx.log(f"Kubernetes API {host} ({source}), namespace {namespace}")
            try:
                written = _apply(ctx, api, namespace)
                if ctx.spec.port:
                    _ensure_service(ctx, api, namespace)
                _wait_for_rollout(ctx, api, written, deadline, limit)
            except urllib3.exceptions.HTTPError as exc:
                raise _connection_error(exc, host, "deploy") from None
    except (KubernetesError, _RolloutFailed) as exc:
        raise StepFailed(str(exc)) from None


def _apply(ctx, api, namespace):
    """Create or patch the Deployment; returns it as the apiserver accepted it."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    name = ctx.app_name
    env_entries, secret_data = _split_env(container_env(ctx), secret_name(ctx.app_name))
    if secret_data:
        # Before the Deployment: its new pods must find the values they refer to.
        _write_secret(ctx, core, namespace, secret_data)

    for attempt in range(1, WRITE_ATTEMPTS + 1):
        current = _read_deployment(apps, name, namespace)
        try:
            if current is None:
                written = apps.create_namespaced_deployment(
                    namespace, _deployment_manifest(ctx, namespace, env_entries), _request_timeout=REQUEST_TIMEOUT
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
                name, namespace, _image_patch(ctx, current.metadata.resource_version),
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
                raise _api_error(exc, action, namespace) from None
            message, reason, _ = _status_of(exc)
            ctx.log(f'Deployment "{name}" changed while Norn was writing it ({reason or 409}: {message}); '
                    f"reading it again (attempt {attempt + 1} of {WRITE_ATTEMPTS})")
            _check_cancel(ctx)
            time.sleep(RETRY_BACKOFF * attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


def _read_deployment(apps, name, namespace):
    try:
        return apps.read_namespaced_deployment(name, namespace, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if _is_not_found(exc):
            return None
        raise _api_error(exc, f'read deployment "{name}"', namespace) from None


def _write_secret(ctx, core, namespace, data):
    """Create or replace the Secret holding the env values that contain passwords."""
    name = secret_name(ctx.app_name)
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(ctx.app_name)},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    try:
        core.create_namespaced_secret(namespace, body, _request_timeout=REQUEST_TIMEOUT)
        ctx.log(f'Created secret "{name}" for {", ".join(data)}')
        return
    except ApiException as exc:
        if exc.status != 409:
            raise _api_error(exc, f'create secret "{name}"', namespace) from None
    # It exists: replace it whole, so a changed password reaches new pods.
    # Secrets may be updated without a resourceVersion; last writer wins,
    # and every writer writes the same current values.
    try:
        core.replace_namespaced_secret(name, namespace, body, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        raise _api_error(exc, f'update secret "{name}"', namespace) from None
    ctx.log(f'Updated secret "{name}" for {", ".join(data)}')


def _ensure_service(ctx, api, namespace):
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
        if not _is_not_found(exc):
            raise _api_error(exc, f'read service "{name}"', namespace) from None
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(ctx.app_name)},
        "spec": {
            "type": "ClusterIP",
            "selector": {NAME_LABEL: ctx.app_name},
            "ports": [{"port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }
    try:
        core.create_namespaced_service(namespace, body, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status == 409:  # created concurrently: that is what we wanted
            return
        raise _api_error(exc, f'create service "{name}"', namespace) from None
    ctx.log(f'Created service "{name}" (ClusterIP, port {port} -> {port})')


# --- rollout -----------------------------------------------------------------------


def rollout_status(deployment):
    """(state, message) for a V1Deployment, by `kubectl rollout status`'s rules.

    state is "complete", "progressing" or "failed"; the message is kubectl's
    wording, so what Norn shows matches what an operator sees in a terminal.
    """
    name = deployment.metadata.name
    status = deployment.status or client.V1DeploymentStatus()
    # Until the controller has seen the latest spec, the counts describe the previous one.
    if (deployment.metadata.generation or 0) > (status.observed_generation or 0):
        return "progressing", "Waiting for deployment spec update to be observed..."
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return "failed", f'deployment "{name}" exceeded its progress deadline'
    wanted = deployment.spec.replicas
    updated, total = status.updated_replicas or 0, status.replicas or 0
    available = status.available_replicas or 0
    if wanted is not None and updated < wanted:
        return "progressing", (f'Waiting for deployment "{name}" rollout to finish: '
                               f"{updated} out of {wanted} new replicas have been updated...")
    if total > updated:
        return "progressing", (f'Waiting for deployment "{name}" rollout to finish: '
                               f"{total - updated} old replicas are pending termination...")
    if available < updated:
        return "progressing", (f'Waiting for deployment "{name}" rollout to finish: '
                               f"{available} of {updated} updated replicas are available...")
    return "complete", f'deployment "{name}" successfully rolled out'


def _check_cancel(ctx):
    reason = ctx.cancel_reason() if ctx.cancel_reason else None
    if reason:
        ctx.log("Cancelled. Whatever the API already accepted stays: Kubernetes goes on rolling out "
                "the Deployment as it now stands.")
        raise runner.Cancelled(reason)


def _wait_for_rollout(ctx, api, deployment, deadline, limit):
    """Follow the Deployment until its rollout completes; log each new status line.

    Watches from the resourceVersion of our own write, so nothing between the
    write and the first watch is missed, in short slices so cancel and the
    deadline are checked at least every WATCH_SLICE_SECONDS. A slice that fails
    (after urllib3's retries) or expires (410) is followed by a fresh read.
    """
    apps = client.AppsV1Api(api)
    name, namespace = deployment.metadata.name, deployment.metadata.namespace
    watcher = watch.Watch()
    last_message = None
    failures = 0

    def observe(obj):
        """Log what changed; True when the rollout is complete."""
        nonlocal last_message
        state, message = rollout_status(obj)
        if message != last_message:
            ctx.log(message)
            last_message = message
        if state != "complete" and obj.spec.paused:
            # kubectl would wait for ever here: a paused Deployment never
            # progresses, and never reaches its progress deadline either.
            raise _RolloutFailed(
                f'deployment "{name}" is paused, so the new image will not roll out; '
                f"resume it with: kubectl rollout resume deployment/{name} -n {namespace}"
            )
        if state == "failed":
            condition = next((c for c in obj.status.conditions if c.type == "Progressing"), None)
            detail = f" ({condition.message})" if condition and condition.message else ""
            raise _RolloutFailed(
                f"{message}{detail}. The pods of the previous version keep serving; look at the new "
                f"pods (kubectl describe deployment/{name} -n {namespace}) for the cause."
            )
        return state == "complete"

    if observe(deployment):
        return
    resource_version = deployment.metadata.resource_version
    while True:
        _check_cancel(ctx)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _RolloutFailed(
                f'deployment "{name}" did not finish rolling out within {limit:g} s (the deploy step\'s '
                f"timeout). Last status: {last_message} Kubernetes goes on trying; "
                f"kubectl rollout status deployment/{name} -n {namespace} follows it."
            )
        events = watcher.stream(
            apps.list_namespaced_deployment,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=resource_version,
            timeout_seconds=max(1, min(WATCH_SLICE_SECONDS, math.ceil(remaining))),
            _request_timeout=(REQUEST_TIMEOUT[0], WATCH_SLICE_SECONDS + REQUEST_TIMEOUT[1]),
        )
        try:
            # closing(): leaving early (done, failed, cancelled) releases the
            # streaming connection now, not whenever the generator is collected.
            with contextlib.closing(events):
                for event in events:
                    if event["type"] == "DELETED":
                        raise _RolloutFailed(
                            f'deployment "{name}" was deleted while Norn waited for its rollout'
                        )
                    if event["type"] in ("ADDED", "MODIFIED"):
                        obj = event["object"]
                        resource_version = obj.metadata.resource_version
                        if observe(obj):
                            return
                    elif watcher.resource_version:  # BOOKMARK: only the position moves on
                        resource_version = watcher.resource_version
                    _check_cancel(ctx)
            failures = 0
            continue
        except ApiException as exc:
            if exc.status == 410:
                # Our position fell out of the apiserver's event history: the
                # normal way a long watch ends. A fresh read picks it up.
                problem = None
            else:
                problem = _api_error(exc, f'watch deployment "{name}"', namespace)
        except urllib3.exceptions.HTTPError as exc:
            problem = KubernetesError(f"the watch connection broke: {getattr(exc, 'reason', None) or exc}")
        if problem is not None:
            failures += 1
            if failures >= WATCH_ATTEMPTS:
                raise KubernetesError(
                    f'lost track of the rollout of deployment "{name}": the watch failed {failures} times '
                    f"in a row. Last error: {problem}"
                )
            ctx.log(f"Watching the rollout failed ({problem}); reading the deployment again "
                    f"(attempt {failures + 1} of {WATCH_ATTEMPTS})")
            _sleep(ctx, min(RETRY_BACKOFF_MAX, RETRY_BACKOFF * 2 ** failures), deadline)
        current = _read_deployment(apps, name, namespace)
        if current is None:
            raise _RolloutFailed(f'deployment "{name}" was deleted while Norn waited for its rollout')
        resource_version = current.metadata.resource_version
        if observe(current):
            return


def _sleep(ctx, seconds, deadline):
    """Sleep, but wake for a cancel and never past the deadline."""
    end = min(time.monotonic() + seconds, deadline)
    while (left := end - time.monotonic()) > 0:
        _check_cancel(ctx)
        time.sleep(min(0.2, left))


# --- dashboard and removal ---------------------------------------------------------


def _outside_step(action, fn):
    """Run fn(api) with a fresh client, turning every failure into KubernetesError."""
    api, host, _ = _api_client()
    with api:
        try:
            return fn(api)
        except urllib3.exceptions.HTTPError as exc:
            raise _connection_error(exc, host, action) from None


def status(app_name, namespace="default"):
    """What the cluster says about the app's Deployment, or None when there is none.

    A dict: name, namespace, image (of container <app>; None if it has no such
    container), deployment (the public id of the Norn deployment that last set
    it), managed (created by Norn), replicas (desired), updated, ready,
    available, generation, observed_generation, state ("complete",
    "progressing" or "failed") and message (kubectl rollout status's line).
    Raises KubernetesError when the API cannot be asked.
    """

    def read(api):
        current = _read_deployment(client.AppsV1Api(api), app_name, namespace)
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


def remove(app_name, namespace="default"):
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
                if _is_not_found(exc):
                    continue
                raise _api_error(exc, f'read {kind} "{name}"', namespace) from None
            if (current.metadata.labels or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
                continue
            try:
                # Background: the ReplicaSets and pods go too, without making us wait for them.
                delete_one(name, namespace, propagation_policy="Background", _request_timeout=REQUEST_TIMEOUT)
            except ApiException as exc:
                if _is_not_found(exc):
                    continue
                raise _api_error(exc, f'delete {kind} "{name}"', namespace) from None
            removed.append(f"{kind}/{name}")
        return removed

    return _outside_step(f'remove app "{app_name}"', delete)
