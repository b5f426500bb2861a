"""`manage.py cancel <deployment id>`: stop a queued or running deployment."""

import getpass
import uuid

from django.core.management.base import BaseCommand, CommandError
from django.db.models import CharField
from django.db.models.functions import Cast

from deployments import transitions
from deployments.models import TERMINAL_STATUSES, Deployment


class Command(BaseCommand):
    help = "Cancel a deployment: a queued one ends at once, a running one stops its step and cleans up."

    def add_arguments(self, parser):
        parser.add_argument("deployment", help="Deployment id (the UUID, or its first 8+ characters).")

    def handle(self, *args, deployment, **options):
        target = find_deployment(deployment)
        if target.status in TERMINAL_STATUSES:
            raise CommandError(f"deployment {target.public_id} already ended: {target.status}")
        who = f"{getpass.getuser()} (cli)"
        status = transitions.request_cancel(target, who)
        if status in TERMINAL_STATUSES:
            self.stdout.write(f"Cancelled {target.public_id} ({target.app.name}) before it started.")
        else:
            self.stdout.write(f"Cancelling {target.public_id} ({target.app.name}); its worker stops the running step and cleans up.")


def find_deployment(text):
    text = text.strip().lower()
    try:
        return Deployment.objects.select_related("app").get(public_id=uuid.UUID(text))
    except ValueError:
        pass
    except Deployment.DoesNotExist:
        raise CommandError(f"no deployment {text}") from None
    if len(text) < 8 or not all(c in "0123456789abcdef-" for c in text):
        raise CommandError(f"{text!r} is not a deployment id; use the UUID or at least its first 8 characters")
    matches = list(
        Deployment.objects.select_related("app")
        .annotate(id_text=Cast("public_id", CharField()))
        .filter(id_text__startswith=text)[:2]
    )
    if not matches:
        raise CommandError(f"no deployment {text}")
    if len(matches) > 1:
        raise CommandError(f"{text} matches several deployments; give more characters")
    return matches[0]
