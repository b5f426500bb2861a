"""Crash recovery: fail deployments whose worker is gone, as the seed says.

A deployment in flight has an owner (host:pid:nonce) that refreshes its
heartbeat. Recovery fails those whose owner is dead (same host: the process
is gone; any host: the heartbeat went silent), marks their running step
failed, kills the step's leftover process tree and throwaway containers,
removes the work directory and unlocks the app. Deployments of live workers
are never touched, so one worker restarting does not fail another's deploys.
"""

import logging
import shutil
import signal
import socket
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from deployments import containers, notifications, queue, runner, transitions
from deployments.models import Deployment

log = logging.getLogger(__name__)

ERROR = "norn restarted during deployment"
# How long the Docker engine may take to finish a request whose client was killed.
ENGINE_SETTLE = 1.0


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
    for deployment in Deployment.objects.in_flight().select_related("app"):
        if owner_is_dead(deployment, now) and fail(deployment):
            recovered.append(deployment.pk)
    return recovered


def fail(deployment):
    """Fail one deployment on behalf of its dead owner, kill what its step
    left running, remove its work directory and start the app's next one."""
    # step_pgid and workdir as the dead owner left them: fail_abandoned clears the pgid.
    if not transitions.fail_abandoned(deployment, ERROR):
        return False
    notifications.deployment_ended(deployment.pk)
    log.warning("recovered deployment %s of %s: %s", deployment.pk, deployment.app.name, ERROR)
    killed = _kill_leftovers(deployment)
    # Killing the docker client (above) leaves its container running: a
    # test or migration of the dead worker's would go on and on.
    removed = containers.remove_for_deployment(str(deployment.public_id))
    if killed:
        # A client killed while its create request was under way leaves the
        # engine to finish it: a container that appears just after that sweep.
        time.sleep(ENGINE_SETTLE)
        removed += containers.remove_for_deployment(str(deployment.public_id))
    if removed:
        log.warning("removed the containers %s of deployment %s", ", ".join(removed), deployment.pk)
    if deployment.runtime == "kubernetes":
        _remove_jobs(deployment)
    if deployment.workdir:
        shutil.rmtree(deployment.workdir, ignore_errors=True)
    queue.dispatch_next(deployment.app_id)
    return True


def _remove_jobs(deployment):
    """A migration Job the dead worker was waiting for would run on unwatched;
    its TTL (kubejobs) is only the backstop."""
    # Imported here: a single-host Norn never loads the Kubernetes client.
    from deployments.runtimes import kubeclient, kubejobs

    try:
        removed = kubejobs.remove_jobs(str(deployment.public_id), deployment.app.infraspec.namespace)
    except kubeclient.KubernetesError as exc:
        log.warning("could not remove the Jobs of deployment %s: %s", deployment.pk, exc)
        return
    if removed:
        log.warning("removed the Jobs %s of deployment %s", ", ".join(removed), deployment.pk)


def _kill_leftovers(deployment):
    """The step's subprocess ran in its own session and outlives a SIGKILLed
    worker; kill its group if it ran on this host. True if it did."""
    if not deployment.step_pgid:
        return False
    try:
        host, _, _ = transitions.parse_owner(deployment.owner)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    runner.kill_tree(deployment.step_pgid, signal.SIGKILL)
    return True


def dispatch_waiting():
    """Enqueue the head of each app's queue where nothing is in flight."""
    busy = set(Deployment.objects.in_flight().values_list("app_id", flat=True))
    waiting = set(Deployment.objects.queued().values_list("app_id", flat=True))
    for app_id in waiting - busy:
        queue.dispatch_next(app_id)
    return len(waiting - busy)
