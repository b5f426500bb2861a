from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self):
        from django_q.signals import post_spawn

        # Registers the service checks (PostgreSQL, Redis, Docker, apps dir).
        from norn_project import checks  # noqa: F401
        from deployments import recovery

        # Every worker that starts, at boot or after one died, first recovers
        # deployments whose owner is gone.
        post_spawn.connect(recovery.on_worker_spawn, dispatch_uid="norn-recovery")
