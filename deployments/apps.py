from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self):
        # Registers the service checks (PostgreSQL, Redis, Docker, apps dir).
        from norn_project import checks  # noqa: F401
