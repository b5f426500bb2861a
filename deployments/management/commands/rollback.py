"""`manage.py rollback <app> [<deployment>]`: put an earlier image back."""

import getpass

from deployments.cli import Command as NornCommand
from deployments.cli import find_deployment, queue_and_follow
from deployments.cliargs import add_follow_arguments
from deployments.requests import request_rollback


class Command(NornCommand):
    help = (
        "Roll an app back to its previous successfully deployed image, or to the image of "
        "the given deployment, and follow it. Exits 0 when rolled back, 1 when not, 2 for a bad request."
    )

    def add_arguments(self, parser):
        parser.add_argument("app")
        parser.add_argument("deployment", nargs="?", help="Deployment id (or 8+ character prefix) whose image to put back.")
        parser.add_argument("--no-wait", action="store_true", help="Queue it, print its id and return.")
        add_follow_arguments(parser)

    def handle(self, *args, app, deployment=None, no_wait=False, json=False, db=False, verbosity=1, **options):
        target = None
        if deployment:
            target = find_deployment(deployment)
        queue_and_follow(
            self,
            lambda: request_rollback(app, target, name=getpass.getuser(), via="cli"),
            lambda rollback: (
                f"Rolling {app} back to {rollback.rollback_to.image} "
                f"(deployment {rollback.rollback_to.short_id}); rollback {rollback.public_id}"
            ),
            no_wait=no_wait, json=json, db=db, verbosity=verbosity,
        )
