"""The Kubernetes rollout gate: follow a Deployment until its rollout is complete,
judged by the rules `kubectl rollout status` uses, within the deploy step's time,
and stop early for a cancel, a paused Deployment, a passed progress deadline, or a
new pod that cannot become ready (read from the new ReplicaSet, its pods and their
events: image pulls, crash loops, failing readiness, refused pod creation).
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
# The new pods are looked at no more often than this: their troubles often leave the
# Deployment itself unchanged (ErrImagePull -> ImagePullBackOff), so every slice checks.
POD_CHECK_SECONDS = 1.0
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
# Container waiting reasons that a rollout does not recover from without a new image or
# spec: the kubelet keeps retrying, but the step's timeout would only delay the verdict.
FATAL_WAITING = frozenset({
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CrashLoopBackOff",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})
# Readiness failures tolerated when the probe names no failureThreshold (the API's default).
DEFAULT_FAILURE_THRESHOLD = 3


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
    pods = PodGate(ctx, api)
    latest = deployment

    def observe(obj):
        """Log what changed; True when the rollout is complete."""
        nonlocal last_message, latest
        latest = obj
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
        if state != "complete":
            pods.check(obj)
        return state == "complete"

    if observe(deployment):
        return
    resource_version = deployment.metadata.resource_version
    while True:
        check_cancel(ctx)
        pods.check(latest)
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


class PodGate:
    """Names the first new pod that cannot become ready, from what the cluster says about it.

    Reads the Deployment's current ReplicaSet (the one carrying its revision), that
    ReplicaSet's ReplicaFailure condition, its pods' container states and their
    events, and raises RolloutFailed naming the pod, the container and the reason.
    Where the API refuses to show ReplicaSets, pods or events (RBAC), the gate says
    so once and the rollout is judged by the Deployment alone, as before.
    """

    def __init__(self, ctx: StepContext, api: client.ApiClient):
        self.ctx = ctx
        self.apps, self.core = client.AppsV1Api(api), client.CoreV1Api(api)
        self.next_check = 0.0
        self.enabled = True

    def check(self, deployment: client.V1Deployment) -> None:
        if not self.enabled or time.monotonic() < self.next_check:
            return
        status = deployment.status or client.V1DeploymentStatus()
        if (deployment.metadata.generation or 0) > (status.observed_generation or 0):
            return  # the controller has not made the new ReplicaSet yet
        self.next_check = time.monotonic() + POD_CHECK_SECONDS
        try:
            cause = self.diagnose(deployment)
        except urllib3.exceptions.HTTPError:
            return  # the watch notices a broken connection and retries; the next check may do better
        except ApiException as exc:
            if exc.status not in (401, 403, 404):
                return  # transient (a 500, a 429): try again at the next check
            self.enabled = False
            message, reason, _ = kubeclient.status_of(exc)
            self.ctx.log(f"Cannot read the new pods ({reason or exc.status}: {message}); the rollout is judged "
                         "by the Deployment's status alone, so a pod that cannot start is noticed only at the "
                         "progress deadline.")
            return
        if cause:
            name, namespace = deployment.metadata.name, deployment.metadata.namespace
            raise RolloutFailed(
                f'deployment "{name}" cannot finish rolling out: {cause}. The pods of the previous version keep '
                f"serving; kubectl describe deployment/{name} -n {namespace} shows more."
            )

    def diagnose(self, deployment: client.V1Deployment) -> str | None:
        """What keeps the new pods from becoming ready, or None when nothing (yet) does."""
        meta = deployment.metadata
        revision = (meta.annotations or {}).get(REVISION_ANNOTATION)
        selector = _selector(deployment.spec.selector)
        if not revision or not selector:
            return None
        sets = self.apps.list_namespaced_replica_set(meta.namespace, label_selector=selector,
                                                     _request_timeout=kubeclient.REQUEST_TIMEOUT).items
        new = next((rs for rs in sets if (rs.metadata.annotations or {}).get(REVISION_ANNOTATION) == revision
                    and any(ref.uid == meta.uid and ref.controller for ref in rs.metadata.owner_references or [])),
                   None)
        if new is None:
            return None
        for condition in (new.status.conditions if new.status else None) or []:
            if condition.type == "ReplicaFailure" and condition.status == "True":
                return (f'replica set "{new.metadata.name}" cannot create pods ({condition.reason}): '
                        f"{condition.message}")
        pods = self.core.list_namespaced_pod(meta.namespace, label_selector=_selector(new.spec.selector),
                                             _request_timeout=kubeclient.REQUEST_TIMEOUT).items
        probes = {c.name: c.readiness_probe for c in new.spec.template.spec.containers or []}
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            if not any(ref.uid == new.metadata.uid for ref in pod.metadata.owner_references or []):
                continue
            statuses = (pod.status.init_container_statuses or []) + (pod.status.container_statuses or [])
            for container in statuses:
                cause = self._container_cause(pod, container, probes.get(container.name))
                if cause:
                    return f'pod "{pod.metadata.name}", container "{container.name}": {cause}'
        return None

    def _container_cause(self, pod, container, probe) -> str | None:
        state = container.state or client.V1ContainerState()
        waiting = state.waiting
        if waiting and waiting.reason in FATAL_WAITING:
            detail = waiting.message or ""
            if waiting.reason in ("ErrImagePull", "ImagePullBackOff"):
                # The status says only "Back-off pulling image"; the kubelet's event says why.
                failed = [e for e in self._events(pod) if e.reason == "Failed"
                          and (e.message or "").startswith("Failed to pull image")]
                detail = failed[-1].message if failed else detail
            elif waiting.reason == "CrashLoopBackOff":
                last = (container.last_state.terminated if container.last_state else None)
                exit_text = f", last exit code {last.exit_code} ({last.reason})" if last else ""
                detail = f"restarted {container.restart_count} times{exit_text}; kubectl logs --previous " \
                         f"pod/{pod.metadata.name} -c {container.name} -n {pod.metadata.namespace} shows why"
            return f"{waiting.reason}: {detail}" if detail else waiting.reason
        if state.running and not container.ready and probe is not None:
            threshold = probe.failure_threshold or DEFAULT_FAILURE_THRESHOLD
            unhealthy = [e for e in self._events(pod) if e.reason == "Unhealthy"
                         and (e.message or "").startswith("Readiness probe failed")]
            # Newer kubelets report repeats in series.count, older ones in count.
            failures = sum(max(e.count or 1, (e.series.count or 0) if e.series else 0) for e in unhealthy)
            if failures >= threshold:
                return (f"readiness probe failing ({_describe_probe(probe)}): failed {failures} times, "
                        f"failureThreshold {threshold}: {unhealthy[-1].message}")
        return None

    def _events(self, pod) -> list:
        events = self.core.list_namespaced_event(
            pod.metadata.namespace, field_selector=f"involvedObject.name={pod.metadata.name}",
            _request_timeout=kubeclient.REQUEST_TIMEOUT).items
        return [e for e in events if not e.involved_object.uid or e.involved_object.uid == pod.metadata.uid]


def _selector(selector: client.V1LabelSelector | None) -> str:
    """A LabelSelector's matchLabels as a labelSelector query ("" when it has none)."""
    labels = (selector.match_labels if selector else None) or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _describe_probe(probe: client.V1Probe) -> str:
    if probe.http_get:
        return f"GET {probe.http_get.path or '/'} on port {probe.http_get.port}"
    if probe.tcp_socket:
        return f"TCP port {probe.tcp_socket.port}"
    if probe.exec and probe.exec.command:
        return "exec " + " ".join(probe.exec.command)
    return "probe"
