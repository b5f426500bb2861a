"""`manage.py undeploy <app> [--yes]`: take an app out of service.

Stops and removes what the runtime NORN_RUNTIME names runs of it (Docker: its
containers and its route in the ingress; Kubernetes: the Deployment, Service
and Secret Norn created) and its cron schedule. Its deployments, snapshots and
cron runs stay: history is data, and a new deploy brings it back.
"""

from django.conf import settings
from django.core.management.base import CommandError

from deployments import runtimes, scheduler
from deployments.cli import FAILED, find_app
from deployments.cli import Command as NornCommand
from deployments.models import Deployment
from norn_project.cli import UNAVAILABLE


class Command(NornCommand):
    help = (
        "Stop and remove an app's containers (or Kubernetes objects) and its cron schedule, "
        "after asking for confirmation. Refused while a deployment of the app is running."
    )

    def add_arguments(self, parser):
        parser.add_argument("app")
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

    def handle(self, *args, app, yes=False, **options):
        app = find_app(app)
        running = Deployment.objects.filter(app=app).in_flight().first()
        if running is not None:
            # Removing what a deploy is replacing would leave neither the old
            # nor the new version, and the deploy would then report success.
            raise CommandError(
                f"deployment {running.short_id} of {app.name} is running ({running.status}); "
                f"wait for it to finish or cancel it (manage.py cancel {running.short_id}) first",
                returncode=FAILED,
            )
        runtime_name = settings.NORN_RUNTIME
        spec = app.infraspec
        where = (
            f'namespace "{spec.namespace}" on Kubernetes' if runtime_name == "kubernetes"
            else "the local Docker engine"
        )
        if not yes and not self.confirm(
            f"This stops {app.name} and removes it from {where}, and removes its cron schedule. "
            "Its deployment history stays. Continue? [y/N] "
        ):
            raise CommandError("Nothing was changed.", returncode=FAILED)

        runtime = runtimes.named(runtime_name)
        try:
            if runtime_name == "kubernetes":
                removed = runtime.remove(app.name, spec.namespace)
            else:
                removed = runtime.remove(app.name)
        except runtime.Error as exc:
            raise CommandError(f"could not remove {app.name}: {exc}", returncode=UNAVAILABLE) from None
        if scheduler.unregister(app.name):
            removed.append(f"cron schedule {scheduler.schedule_name(app.name)}")
        if removed:
            self.stdout.write(f"Removed {', '.join(removed)}.")
        else:
            self.stdout.write(f"Nothing of {app.name} was running on {where}.")

    def confirm(self, question):
        try:
            answer = input(question)
        except EOFError:  # no terminal to ask on: the answer is no
            return False
        return answer.strip().lower() in ("y", "yes")
