"""django-q2 entry points. Arguments are primary keys only; every task re-reads
the database and is safe to run twice (delivery is at least once)."""

from django.db import transaction
from django_q.tasks import async_task


def run_deployment(deployment_id):
    from deployments import pipeline

    return pipeline.execute(deployment_id)


def enqueue_deployment(deployment_id):
    """Queue the deployment's task once the current transaction commits
    (a worker must never look for a row that is not visible yet)."""
    transaction.on_commit(
        lambda: async_task(
            "deployments.tasks.run_deployment",
            deployment_id,
            task_name=f"deployment-{deployment_id}",
            group="deployments",
        )
    )


def run_cron_job(job_id):
    from deployments import scheduler

    run = scheduler.run_job(job_id)
    return run.exit_code if run else None  # None: the job was deleted meanwhile


def recover_and_dispatch():
    """Periodic safety net: fail deployments whose worker died, and start
    queued deployments whose task was lost."""
    from deployments import recovery

    recovered = recovery.recover()
    dispatched = recovery.dispatch_waiting()
    return {"recovered": recovered, "dispatched": dispatched}
