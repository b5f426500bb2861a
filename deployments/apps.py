from django.apps import AppConfig


def _on_worker_spawn(sender, **kwargs):
    # Imported here, not at start-up: every manage.py process runs ready(),
    # and only workers need the pipeline and its runtimes.
    from deployments import tasks

    tasks.on_worker_spawn(sender, **kwargs)


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self):
        from django_q.signals import post_spawn

        # Registers the service checks (PostgreSQL, Redis, Docker, apps dir).
        from norn_project import checks  # noqa: F401

        # Every worker that starts, at boot or after one died, first recovers
        # deployments whose owner is gone.
        post_spawn.connect(_on_worker_spawn, dispatch_uid="norn-recovery")
