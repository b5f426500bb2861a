"""django-q2 entry points. Arguments are primary keys only; every task re-reads
the database and is safe to run twice (delivery is at least once)."""

import logging

from deployments import pipeline, proxy, recovery, scheduler

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
    """django-q2 post_spawn: a worker (re)started, maybe after a crash."""
    try:
        recovered = recovery.recover()
        if recovered:
            log.warning("%s recovered deployments %s", proc_name, recovered)
    except Exception:
        log.exception("crash recovery failed at worker start")
    restart_proxy()


def restart_proxy():
    """After a reboot the apps' containers restart by themselves; their proxy
    is started by the first worker, so their public ports answer again."""
    try:
        _, routes = proxy.read_routes()
        if routes and not proxy.alive():
            proxy.ensure_running()
            log.warning("started the proxy for the apps' public ports")
    except Exception:
        log.exception("could not start the proxy for the apps' public ports")
