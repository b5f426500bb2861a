from django.apps import AppConfig


def _on_worker_spawn(sender, **kwargs):
    # Imported here, not at start-up: every manage.py process runs ready(),
    # and only workers need the pipeline and its runtimes.
    from deployments import tasks

    tasks.on_worker_spawn(sender, **kwargs)


def _before_task(sender, **kwargs):
    from deployments import workerstop

    workerstop.before_task(**kwargs)


def _after_task(sender, **kwargs):
    from deployments import workerstop

    workerstop.after_task(**kwargs)


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self):
        from django_q.signals import post_execute_in_worker, post_spawn, pre_execute

        # Registers the service checks (PostgreSQL, Redis, Docker, apps dir).
        from norn_project import checks  # noqa: F401

        # Every worker that starts, at boot or after one died, first recovers
        # deployments whose owner is gone, and takes SIGTERM the Norn way
        # (deployments/workerstop.py).
        post_spawn.connect(_on_worker_spawn, dispatch_uid="norn-recovery")
        # Only sent in workers: a worker that is stopping starts no new task.
        pre_execute.connect(_before_task, dispatch_uid="norn-stop-before-task")
        post_execute_in_worker.connect(_after_task, dispatch_uid="norn-stop-after-task")
