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
    if settings.NORN_RUNTIME == "kubernetes":
        from deployments.runtimes import kubernetes as runtime
    else:
        from deployments.runtimes import docker as runtime
    runtime.deploy(ctx)
