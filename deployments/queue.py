"""The deployment queue: hand a deployment to the django-q2 workers.

The queue itself is rows (status "queued", ordered by priority then id) and
the claim in transitions.claim; this module only wakes a worker. The task is
named by its dotted path, so nothing here imports the worker's entry points.
"""

from django_q.tasks import async_task

from deployments import transitions

RUN_DEPLOYMENT = "deployments.tasks.run_deployment"


def enqueue(deployment_id: int) -> None:
    """Queue the deployment's task: in the caller's transaction when there is
    one, so the task and the deployment's row are committed together (a
    worker never looks for a row that is not visible yet, and a request is
    one commit, not three)."""
    async_task(
        RUN_DEPLOYMENT,
        deployment_id,
        task_name=f"deployment-{deployment_id}",
        group="deployments",
    )


def dispatch_next(app_id: int) -> int | None:
    """Start the app's next queued deployment, if any; returns its id."""
    next_id = transitions.next_queued(app_id)
    if next_id is not None:
        enqueue(next_id)
    return next_id
