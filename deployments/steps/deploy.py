"""Deploy: put the new image into service.

Cron apps: register the image with the scheduler (django-q2 schedules).
Others: the configured runtime, NORN_RUNTIME (Kubernetes or the local
Docker engine).
"""

from django.conf import settings

from deployments import scheduler


def run(ctx):
    if ctx.spec["role"] == "cron":
        scheduler.register(ctx)
        return
    # An app that used to be cron keeps its run history, but no schedule.
    if scheduler.unregister(ctx.app_name):
        ctx.log(f"{ctx.app_name} is no longer a cron app: removed its schedule")
    if settings.NORN_RUNTIME == "kubernetes":
        from deployments.runtimes import kubernetes as runtime
    else:
        from deployments.runtimes import docker as runtime
    runtime.deploy(ctx)
