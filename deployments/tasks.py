"""django-q2 entry points. Arguments are primary keys only; every task re-reads
the database and is safe to run twice (delivery is at least once)."""

import logging

from deployments import pipeline, recovery, scheduler, workerstop

log = logging.getLogger(__name__)


def run_deployment(deployment_id):
    return pipeline.execute(deployment_id)


def run_cron_job(job_id):
    run = scheduler.run_job(job_id)
    return run.exit_code if run else None  # None: the job was deleted meanwhile


def recover_and_dispatch():
    """Periodic safety net: fail deployments whose worker died, and start
    queued deployments whose task was lost."""
    recovered = recovery.recover()
    dispatched = recovery.dispatch_waiting()
    return {"recovered": recovered, "dispatched": dispatched}


def on_worker_spawn(sender, proc_name=None, **kwargs):
    """django-q2 post_spawn: a worker (re)started, maybe after a crash.

    It starts nothing that would outlive it: the ingress that serves the
    apps (Caddy) is a service of its own (norn-ingress.service).
    """
    workerstop.on_worker_spawn()
    try:
        recovered = recovery.recover()
        if recovered:
            log.warning("%s recovered deployments %s", proc_name, recovered)
    except Exception:
        log.exception("crash recovery failed at worker start")


def poll_autodeploy():
    """The auto-deploy poll (schedule norn-autodeploy-poll, every minute):
    `git ls-remote` of each autoDeploy app that is due (docs/autodeploy.md);
    and webhook deliveries older than 30 days are forgotten."""
    from deployments import autodeploy

    forgotten = autodeploy.forget_old_deliveries()
    result = autodeploy.poll_due_apps()
    return {**result, "forgotten_deliveries": forgotten} if forgotten else result


def send_notification(delivery_id, attempt=1):
    """One attempt at telling a target of a deployment's end; a retryable
    failure queues the next (deployments/notifications.py). Safe to run twice:
    an attempt is claimed once."""
    from deployments import notifications

    return notifications.attempt(delivery_id, attempt)
