"""Deploy: put the new image into service.

Cron apps: register the image with the scheduler (django-q2 schedules).
Others: the runtime the deployment was recorded for when it was queued,
ctx.runtime (Kubernetes or the local Docker engine).
"""

from deployments import runtimes, scheduler
from deployments.steps import Context


def run(ctx: Context) -> None:
    if ctx.spec.is_cron:
        scheduler.register(ctx)
        return
    # An app that used to be cron keeps its run history, but no schedule.
    if scheduler.unregister(ctx.app_name):
        ctx.log(f"{ctx.app_name} is no longer a cron app: removed its schedule")
    runtimes.named(ctx.runtime).deploy(ctx)
