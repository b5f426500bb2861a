"""Crash recovery: fail deployments whose worker is gone, as the seed says.

A deployment in flight has an owner (host:pid:nonce) that refreshes its
heartbeat. Recovery fails those whose owner is dead (same host: the process
is gone; any host: the heartbeat went silent), marks their running step
failed, kills the step's leftover process tree, removes the work directory
and unlocks the app. Deployments of live workers are never touched, so one
worker restarting does not fail another's deploys.
"""

import logging
import shutil
import signal
import socket
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deployments import events, runner, transitions
from deployments.models import NOT_IN_FLIGHT, Deployment, DeploymentStatus, Step, StepStatus

log = logging.getLogger(__name__)

ERROR = "norn restarted during deployment"


def owner_is_dead(deployment, now):
    stale = deployment.heartbeat_at is None or (
        now - deployment.heartbeat_at > timedelta(seconds=settings.NORN_HEARTBEAT_TIMEOUT)
    )
    if stale:
        return True
    try:
        host, pid, _ = transitions.parse_owner(deployment.owner)
    except ValueError:
        return True
    return host == socket.gethostname() and not runner.pid_alive(pid)


def recover(now=None):
    """Recover every in-flight deployment whose owner is dead; returns their ids."""
    now = now or timezone.now()
    recovered = []
    for deployment in Deployment.objects.exclude(status__in=NOT_IN_FLIGHT).select_related("app"):
        if owner_is_dead(deployment, now) and fail(deployment):
            recovered.append(deployment.pk)
    return recovered


def fail(deployment):
    """Fail one deployment on behalf of its dead owner."""
    with transaction.atomic():
        # Conditional on the state we saw: if the owner was alive after all
        # and moved on, or another recovery got here first, do nothing.
        taken = Deployment.objects.filter(
            pk=deployment.pk, status=deployment.status, owner=deployment.owner
        ).update(status=DeploymentStatus.FAILED, error=ERROR, finished_at=timezone.now())
        if not taken:
            return False
        now = timezone.now()
        for step in Step.objects.select_for_update().filter(deployment=deployment, status=StepStatus.RUNNING):
            step.status = StepStatus.FAILED
            step.error = ERROR
            step.finished_at = now
            step.duration = now - step.started_at if step.started_at else None
            step.save(update_fields=["status", "error", "finished_at", "duration"])
            events.record(deployment.pk, events.STEP, {"step": step.name, "status": StepStatus.FAILED, "error": ERROR})
        Step.objects.filter(deployment=deployment, status=StepStatus.PENDING).update(
            status=StepStatus.SKIPPED, skip_reason=ERROR
        )
        fresh = Deployment.objects.select_related("app", "requested_by").get(pk=deployment.pk)
        events.record(deployment.pk, events.FAILED, events.deployment_payload(fresh))
    log.warning("recovered deployment %s of %s: %s", deployment.pk, deployment.app.name, ERROR)
    _kill_leftovers(deployment)
    if deployment.workdir:
        shutil.rmtree(deployment.workdir, ignore_errors=True)
    Deployment.objects.filter(pk=deployment.pk).update(step_pgid=None)
    from deployments.pipeline import dispatch_next

    dispatch_next(deployment.app_id)
    return True


def _kill_leftovers(deployment):
    """The step's subprocess ran in its own session and outlives a SIGKILLed
    worker; kill its group if it ran on this host."""
    if not deployment.step_pgid:
        return
    try:
        host, _, _ = transitions.parse_owner(deployment.owner)
    except ValueError:
        return
    if host == socket.gethostname():
        runner.kill_tree(deployment.step_pgid, signal.SIGKILL)


def dispatch_waiting():
    """Enqueue the head of each app's queue where nothing is in flight."""
    from deployments.pipeline import dispatch_next

    busy = set(Deployment.objects.exclude(status__in=NOT_IN_FLIGHT).values_list("app_id", flat=True))
    waiting = set(Deployment.objects.filter(status=DeploymentStatus.QUEUED).values_list("app_id", flat=True))
    for app_id in waiting - busy:
        dispatch_next(app_id)
    return len(waiting - busy)


def on_worker_spawn(sender, proc_name=None, **kwargs):
    """django-q2 post_spawn: a worker (re)started, maybe after a crash."""
    try:
        recovered = recover()
        if recovered:
            log.warning("%s recovered deployments %s", proc_name, recovered)
    except Exception:
        log.exception("crash recovery failed at worker start")
    restart_proxy()


def restart_proxy():
    """After a reboot the apps' containers restart by themselves; their proxy
    is started by the first worker, so their public ports answer again."""
    from deployments import proxy

    try:
        _, routes = proxy.read_routes()
        if routes and not proxy.alive():
            proxy.ensure_running()
            log.warning("started the proxy for the apps' public ports")
    except Exception:
        log.exception("could not start the proxy for the apps' public ports")
