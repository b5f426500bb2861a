"""Deploy: put the new image into service.

Cron apps: register the image with the scheduler (django-q2 schedules).
Others: the runtime the deployment was recorded for when it was queued,
ctx.runtime (Kubernetes or the local Docker engine).
"""

from deployments import runtimes, scheduler
from deployments.steps import Context
from deployments.steps.snapshot import prepare_database


def run(ctx: Context) -> None:
    if ctx.kind == "rollback" and ctx.spec.postgres:
        # A rollback has no snapshot step, which is where the app's database
        # role is made; an app last deployed before roles existed needs it
        # now, since its containers log in as that role.
        prepare_database(ctx, ctx.spec.postgres.database)
    if ctx.spec.is_cron:
        scheduler.register(ctx)
        return
    # An app that used to be cron keeps its run history, but no schedule.
    if scheduler.unregister(ctx.app_name):
        ctx.log(f"{ctx.app_name} is no longer a cron app: removed its schedule")
    runtimes.named(ctx.runtime).deploy(ctx)

