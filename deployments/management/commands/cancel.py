"""`manage.py cancel <deployment id>`: stop a queued or running deployment."""

import getpass

from django.core.management.base import CommandError

from deployments import transitions
from deployments.cli import FAILED, Command as NornCommand, find_deployment


class Command(NornCommand):
    help = "Cancel a deployment: a queued one ends at once, a running one stops its step and cleans up."

    def add_arguments(self, parser):
        parser.add_argument("deployment", help="Deployment id (the UUID, or its first 8+ characters).")

    def handle(self, *args, deployment, **options):
        target = find_deployment(deployment)
        if target.is_terminal:
            raise CommandError(f"deployment {target.public_id} already ended: {target.status}", returncode=FAILED)
        who = f"{getpass.getuser()} (cli)"
        target.status = transitions.request_cancel(target, who)
        if target.is_terminal:
            self.stdout.write(f"Cancelled {target.public_id} ({target.app.name}) before it started.")
        else:
            self.stdout.write(f"Cancelling {target.public_id} ({target.app.name}); its worker stops the running step and cleans up.")
