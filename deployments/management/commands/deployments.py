"""`manage.py deployments`: the most recent deployments, newest first."""

import argparse

from deployments.cli import Command as NornCommand
from deployments.models import Deployment


def positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


class Command(NornCommand):
    help = "List recent deployments."

    def add_arguments(self, parser):
        parser.add_argument("--app", help="Only this app.")
        parser.add_argument("--limit", type=positive, default=20, help="How many (default 20).")

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
