"""The Kubernetes rollout gate: follow a Deployment until its rollout is complete,
judged by the rules `kubectl rollout status` uses, within the deploy step's time,
and stop early for a cancel, a paused Deployment or a passed progress deadline.
"""

import contextlib
import math
import time

import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from deployments import runner
from deployments.appenv import StepContext
from deployments.runtimes import kubeclient
from deployments.runtimes.kubeclient import KubernetesError

# The rollout is watched in slices this long, so a cancel or the step's
# deadline is noticed even while the Deployment does not change at all.
WATCH_SLICE_SECONDS = 2
# Consecutive failed watch slices (each already retried by urllib3) before giving up.
WATCH_ATTEMPTS = 4


class RolloutFailed(Exception):
    """The rollout cannot finish: the progress deadline passed, or the Deployment is gone."""


def rollout_status(deployment: client.V1Deployment) -> tuple[str, str]:
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


def check_cancel(ctx: StepContext) -> None:
    reason = ctx.cancel_reason() if ctx.cancel_reason else None
    if reason:
        ctx.log("Cancelled. Whatever the API already accepted stays: Kubernetes goes on rolling out "
                "the Deployment as it now stands.")
        raise runner.Cancelled(reason)


def wait(ctx: StepContext, api: client.ApiClient, deployment: client.V1Deployment, deadline: float,
         limit: float) -> None:
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
            raise RolloutFailed(
                f'deployment "{name}" is paused, so the new image will not roll out; '
                f"resume it with: kubectl rollout resume deployment/{name} -n {namespace}"
            )
        if state == "failed":
            condition = next((c for c in obj.status.conditions if c.type == "Progressing"), None)
            detail = f" ({condition.message})" if condition and condition.message else ""
            raise RolloutFailed(
                f"{message}{detail}. The pods of the previous version keep serving; look at the new "
                f"pods (kubectl describe deployment/{name} -n {namespace}) for the cause."
            )
        return state == "complete"

    if observe(deployment):
        return
    resource_version = deployment.metadata.resource_version
    while True:
        check_cancel(ctx)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RolloutFailed(
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
            _request_timeout=(kubeclient.REQUEST_TIMEOUT[0], WATCH_SLICE_SECONDS + kubeclient.REQUEST_TIMEOUT[1]),
        )
        try:
            # closing(): leaving early (done, failed, cancelled) releases the
            # streaming connection now, not whenever the generator is collected.
            with contextlib.closing(events):
                for event in events:
                    if event["type"] == "DELETED":
                        raise RolloutFailed(
                            f'deployment "{name}" was deleted while Norn waited for its rollout'
                        )
                    if event["type"] in ("ADDED", "MODIFIED"):
                        obj = event["object"]
                        resource_version = obj.metadata.resource_version
                        if observe(obj):
                            return
                    elif watcher.resource_version:  # BOOKMARK: only the position moves on
                        resource_version = watcher.resource_version
                    check_cancel(ctx)
            failures = 0
            continue
        except ApiException as exc:
            if exc.status == 410:
                # Our position fell out of the apiserver's event history: the
                # normal way a long watch ends. A fresh read picks it up.
                problem = None
            else:
                problem = kubeclient.api_error(exc, f'watch deployment "{name}"', namespace)
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
            _sleep(ctx, min(kubeclient.RETRY_BACKOFF_MAX, kubeclient.RETRY_BACKOFF * 2 ** failures), deadline)
        current = read_deployment(apps, name, namespace)
        if current is None:
            raise RolloutFailed(f'deployment "{name}" was deleted while Norn waited for its rollout')
        resource_version = current.metadata.resource_version
        if observe(current):
            return


def _sleep(ctx: StepContext, seconds: float, deadline: float) -> None:
    """Sleep, but wake for a cancel and never past the deadline."""
    end = min(time.monotonic() + seconds, deadline)
    while (left := end - time.monotonic()) > 0:
        check_cancel(ctx)
        time.sleep(min(0.2, left))


def read_deployment(apps: client.AppsV1Api, name: str, namespace: str) -> client.V1Deployment | None:
    """The Deployment, or None when there is none."""
    try:
        return apps.read_namespaced_deployment(name, namespace, _request_timeout=kubeclient.REQUEST_TIMEOUT)
    except ApiException as exc:
        if kubeclient.is_not_found(exc):
            return None
        raise kubeclient.api_error(exc, f'read deployment "{name}"', namespace) from None
