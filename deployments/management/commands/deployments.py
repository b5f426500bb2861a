"""`manage.py deployments`: the most recent deployments, newest first."""

from django.core.management.base import BaseCommand

from deployments.models import Deployment


class Command(BaseCommand):
    help = "List recent deployments."

    def add_arguments(self, parser):
        parser.add_argument("--app", help="Only this app.")
        parser.add_argument("--limit", type=int, default=20)

    def handle(self, *args, app=None, limit=20, **options):
        qs = Deployment.objects.select_related("app", "requested_by")
        if app:
            qs = qs.filter(app__name=app)
        rows = list(qs[:limit])
        if not rows:
            self.stdout.write("No deployments yet.")
            return
        self.stdout.write(f"{'ID':<36}  {'APP':<20} {'REF':<12} {'COMMIT':<12} {'STATUS':<12} {'QUEUED':<20} BY")
        for d in rows:
            self.stdout.write(
                f"{d.public_id!s:<36}  {d.app.name:<20} {d.ref[:12]:<12} {d.commit_sha[:12]:<12} "
                f"{d.status:<12} {d.queued_at:%Y-%m-%d %H:%M:%S}  {d.requested_by_label}"
            )
            if d.error:
                self.stdout.write(f"{'':<38}{d.error.splitlines()[0]}")
