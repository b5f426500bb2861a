"""Run app code once on the Kubernetes runtime: a Job from the new image, in the app's
namespace and with the app's Secret, never a process on Norn's host. The migrate step
calls `run(ctx, purpose="migrate", command=...)`.

The step follows the Job's pod (its log streamed line by line into the step), fails with
the Job's reason, and deletes the Job and its pods whatever happened.
"""

import contextlib
import math
import queue
import threading
import time

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deployments import runner
from deployments.appenv import StepContext
from deployments.outcomes import StepFailed
from deployments.runtimes import kubeclient, kubemanifests
from deployments.runtimes.kubeclient import REQUEST_TIMEOUT, KubernetesError, api_error, is_not_found
from deployments.runtimes.kubernetes import write_env

__all__ = ["run", "remove_jobs"]

# When the step has no timeout of its own.
DEFAULT_TIMEOUT = 600
# The cluster enforces the timeout (activeDeadlineSeconds); Norn waits this much longer
# before giving up on its own, so the cluster's DeadlineExceeded is what users normally see.
DEADLINE_GRACE = 15
# How often the Job and its pod are read while it runs; log lines arrive as they are printed.
POLL_SECONDS = 0.5
# How long to wait for the rest of the log once the Job has finished.
LOG_DRAIN_SECONDS = 10
# How long to wait for an earlier Job of the same name (a retried task) to go away.
REPLACE_SECONDS = 30
# A pod waiting for one of these will not start by itself: fail now, not at the timeout.
IMAGE_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
CONFIG_REASONS = ("CreateContainerConfigError", "CreateContainerError")


def run(ctx: StepContext, *, purpose: str, command: str) -> None:
    """Run `sh -c command` in ctx.image as the Job <app>-<purpose>-<id> and wait for it.

    Returns when the Job completed. Raises StepFailed naming the Job's reason
    (and the container's exit code) when it failed, could not pull its image or
    start, or outlived ctx.timeout; runner.Cancelled when the deployment was
    cancelled. The Job and its pods are deleted in every case.
    """
    if not ctx.image:
        raise StepFailed("there is no image to run: the build step did not produce one")
    limit = ctx.timeout or DEFAULT_TIMEOUT
    namespace = ctx.spec.namespace
    name = kubemanifests.job_name(ctx.app_name, purpose, ctx.public_id)
    try:
        api, host, source = kubeclient.api_client()
        with api:
            ctx.log(f"Kubernetes API {host} ({source}), namespace {namespace}")
            try:
                _run(ctx, api, namespace, name, purpose, command, limit)
            except urllib3.exceptions.HTTPError as exc:
                raise kubeclient.connection_error(exc, host, f'run job "{name}"') from None
    except KubernetesError as exc:
        raise StepFailed(str(exc)) from None


def _run(ctx, api, namespace, name, purpose, command, limit):
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    # Migrations run before the deploy step: the Secret must hold this deployment's values now.
    env_entries = write_env(ctx, core, namespace)
    body = kubemanifests.job(ctx, namespace, name, purpose, command, env_entries, math.ceil(limit))
    job = _create(ctx, batch, namespace, name, body)
    ctx.log(f'Created job "{name}" running {ctx.image}: sh -c {command!r}')
    try:
        _follow(ctx, core, batch, job, purpose, time.monotonic() + limit + DEADLINE_GRACE, limit)
    finally:
        # Background: the Job goes now, the garbage collector takes its pods (killing a
        # container that still runs). batch/v1's default would orphan them.
        try:
            batch.delete_namespaced_job(name, namespace, propagation_policy="Background",
                                        _request_timeout=REQUEST_TIMEOUT)
            ctx.log(f'Deleted job "{name}" and its pods')
        except ApiException as exc:
            if not is_not_found(exc):
                ctx.log(f"Could not delete job \"{name}\" ({api_error(exc, 'delete it', namespace)}); "
                        f"Kubernetes removes it {kubemanifests.JOB_TTL_SECONDS} s after it finished.")
        except urllib3.exceptions.HTTPError as exc:
            ctx.log(f'Could not delete job "{name}" ({exc}); Kubernetes removes it '
                    f"{kubemanifests.JOB_TTL_SECONDS} s after it finished.")


def _create(ctx, batch, namespace, name, body):
    """Create the Job; one left by an earlier attempt of this deployment is replaced."""
    deadline = time.monotonic() + REPLACE_SECONDS
    replaced = False
    while True:
        try:
            return batch.create_namespaced_job(namespace, body, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status != 409:
                raise api_error(exc, f'create job "{name}"', namespace) from None
        # A task delivered twice, or a worker that died mid-step: that run's Job is ours to replace.
        if not replaced:
            ctx.log(f'Job "{name}" exists from an earlier attempt of this deployment; deleting it')
            try:
                batch.delete_namespaced_job(name, namespace, propagation_policy="Background",
                                            _request_timeout=REQUEST_TIMEOUT)
            except ApiException as exc:
                if not is_not_found(exc):
                    raise api_error(exc, f'delete job "{name}"', namespace) from None
            replaced = True
        if time.monotonic() > deadline:
            raise KubernetesError(f'job "{name}" from an earlier attempt did not go away within '
                                  f"{REPLACE_SECONDS} s; delete it (kubectl delete job {name} -n {namespace})")
        _check_cancel(ctx)
        time.sleep(POLL_SECONDS)


def _check_cancel(ctx):
    reason = ctx.cancel_reason() if ctx.cancel_reason else None
    if reason:
        ctx.log("Cancelled: deleting the job and its pods.")
        raise runner.Cancelled(reason)


class _LogFollower(threading.Thread):
    """Streams one pod's log (follow=true) into a queue, line by line, until the container ends."""

    def __init__(self, core, namespace, pod, container, lines, read_timeout):
        super().__init__(name=f"norn-log-{pod}", daemon=True)
        self.core, self.namespace, self.pod, self.container, self.lines = core, namespace, pod, container, lines
        self.read_timeout = read_timeout
        self.response = None
        self.error = None

    def run(self):
        partial = b""
        try:
            # The read timeout is the Job's whole time: a quiet migration is not a broken
            # stream. Cancel and the end of the step close it sooner (stop()).
            self.response = self.core.read_namespaced_pod_log(
                self.pod, self.namespace, container=self.container, follow=True, _preload_content=False,
                _request_timeout=(REQUEST_TIMEOUT[0], self.read_timeout))
            for chunk in self.response.stream(4096, decode_content=True):
                partial += chunk
                *complete, partial = partial.split(b"\n")
                for line in complete:
                    self.lines.put(line.decode(errors="replace"))
        except ApiException as exc:
            message, _, _ = kubeclient.status_of(exc)
            self.error = message or str(exc.status)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            self.error = str(exc)
        finally:
            if partial:
                self.lines.put(partial.decode(errors="replace"))

    def stop(self):
        if self.response is not None:
            with contextlib.suppress(Exception):
                self.response.shutdown()
            with contextlib.suppress(Exception):
                self.response.release_conn()


def _follow(ctx, core, batch, job, purpose, deadline, limit):
    name, namespace = job.metadata.name, job.metadata.namespace
    selector = ",".join(f"{k}={v}" for k, v in sorted((job.spec.selector.match_labels or {}).items()))
    lines = queue.Queue()
    followers = {}

    def drain(wait=0.0):
        with contextlib.suppress(queue.Empty):
            ctx.log(lines.get(timeout=wait) if wait else lines.get_nowait())
            while True:
                ctx.log(lines.get_nowait())

    def finish_logs():
        end = time.monotonic() + LOG_DRAIN_SECONDS
        for follower in followers.values():
            follower.join(timeout=max(0.0, end - time.monotonic()))
        drain()
        for follower in followers.values():
            follower.stop()
            if follower.error:
                ctx.log(f"(could not read the log of pod {follower.pod}: {follower.error})")

    try:
        while True:
            _check_cancel(ctx)
            if time.monotonic() > deadline:
                raise StepFailed(
                    f'{purpose} job "{name}" did not finish within {limit:g} s (the step\'s timeout); '
                    "Norn deleted it.")
            try:
                current = batch.read_namespaced_job(name, namespace, _request_timeout=REQUEST_TIMEOUT)
            except ApiException as exc:
                if is_not_found(exc):
                    raise StepFailed(f'{purpose} job "{name}" was deleted while Norn waited for it') from None
                raise api_error(exc, f'read job "{name}"', namespace) from None
            try:
                pods = core.list_namespaced_pod(namespace, label_selector=selector,
                                                _request_timeout=REQUEST_TIMEOUT).items
            except ApiException as exc:
                raise api_error(exc, f'list the pods of job "{name}"', namespace) from None
            pods.sort(key=lambda p: p.metadata.creation_timestamp or 0)
            for pod in pods:
                for status in (pod.status and pod.status.container_statuses) or []:
                    state = status.state
                    waiting = state.waiting if state else None
                    if waiting and waiting.reason in IMAGE_REASONS:
                        raise StepFailed(
                            f'{purpose} job "{name}" cannot start: pod {pod.metadata.name} cannot pull image '
                            f"{status.image} ({waiting.reason}: {waiting.message or 'no message'}). Push the image "
                            "to a registry the cluster pulls from (NORN_REGISTRY_URL), or load it into the nodes.")
                    if waiting and waiting.reason in CONFIG_REASONS:
                        raise StepFailed(
                            f'{purpose} job "{name}" cannot start: pod {pod.metadata.name} is in '
                            f"{waiting.reason}: {waiting.message or 'no message'}{_config_hint(waiting.message)}")
                    if state and (state.running or state.terminated) and pod.metadata.name not in followers:
                        follower = _LogFollower(core, namespace, pod.metadata.name, status.name, lines,
                                                max(1.0, deadline - time.monotonic()))
                        followers[pod.metadata.name] = follower
                        follower.start()
            conditions = {c.type: c for c in (current.status and current.status.conditions) or []
                          if c.status == "True"}
            if "Complete" in conditions:
                finish_logs()
                ctx.log(f'{purpose} job "{name}" completed')
                return
            if "Failed" in conditions:
                finish_logs()
                raise StepFailed(_failure(name, purpose, conditions["Failed"], pods, current))
            drain(POLL_SECONDS)
    finally:
        for follower in followers.values():
            follower.stop()
        drain()


def _config_hint(message):
    """What to change when the kubelet refused the restricted securityContext (kubemanifests.pod_security)."""
    if "runAsNonRoot" in (message or ""):
        return (". Norn runs pods with runAsNonRoot: true; give the image a numeric non-root USER (USER 1000 "
                "in the Dockerfile), or set security.runAsUser in infraspec.yaml (security.runAsNonRoot: false "
                "allows root)")
    return ""


def _failure(name, purpose, condition, pods, job):
    """The step's error for a failed Job: its reason, then what its last container said."""
    text = f'{purpose} job "{name}" failed: {condition.reason}'
    if condition.message:
        text += f" ({condition.message})"
    if condition.reason == "DeadlineExceeded":
        text += f"; it ran longer than its activeDeadlineSeconds ({job.spec.active_deadline_seconds} s, the step's " \
                "timeout)"
    for pod in reversed(pods):
        for status in (pod.status and pod.status.container_statuses) or []:
            ended = status.state and status.state.terminated
            if not ended:
                continue
            text += f"; container {status.name} in pod {pod.metadata.name} exited with code {ended.exit_code}"
            text += f" ({ended.reason})" if ended.reason else ""
            if ended.message:
                text += f": {ended.message.strip()}"
            if ended.reason in ("StartError", "ContainerCannotRun") and "executable file not found" in (
                    ended.message or ""):
                text += (". Norn runs the command as `sh -c <command>`, so the image needs a shell named sh on "
                         "its PATH (e.g. /bin/sh, as busybox, alpine and debian images have)")
            return text
    return text


def remove_jobs(public_id: str, namespace: str = "default") -> list[str]:
    """Delete every Job (and its pods) that deployment `public_id` started: for crash recovery,
    when the worker that was waiting for them is gone. Returns the deleted Jobs' names;
    raises KubernetesError when the API fails."""
    api, host, _ = kubeclient.api_client()
    with api:
        batch = client.BatchV1Api(api)
        try:
            jobs = batch.list_namespaced_job(
                namespace, label_selector=f"{kubemanifests.DEPLOYMENT_ANNOTATION}={public_id},"
                f"{kubemanifests.MANAGED_BY_LABEL}={kubemanifests.MANAGED_BY}",
                _request_timeout=REQUEST_TIMEOUT).items
            removed = []
            for job in jobs:
                try:
                    batch.delete_namespaced_job(job.metadata.name, namespace, propagation_policy="Background",
                                                _request_timeout=REQUEST_TIMEOUT)
                except ApiException as exc:
                    if not is_not_found(exc):
                        raise
                removed.append(job.metadata.name)
            return removed
        except ApiException as exc:
            raise api_error(exc, f"remove the jobs of deployment {public_id}", namespace) from None
        except urllib3.exceptions.HTTPError as exc:
            raise kubeclient.connection_error(exc, host, f"remove the jobs of deployment {public_id}") from None
