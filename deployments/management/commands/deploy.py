"""`manage.py deploy <app> [<sha>|<branch>|HEAD]`: deploy and watch it happen."""

import getpass

from deployments.cli import Command as NornCommand
from deployments.cli import add_follow_arguments, queue_and_follow


class Command(NornCommand):
    help = (
        "Deploy an app at a commit SHA, a branch or HEAD (the default), and follow its steps "
        "live from the Norn server at NORN_URL (with NORN_API_TOKEN), else from the database. "
        "Exits 0 when deployed, 1 when not, 2 for a bad request."
    )

    def add_arguments(self, parser):
        parser.add_argument("app")
        parser.add_argument("ref", nargs="?", default="HEAD", help="Commit SHA (full or abbreviated), branch, or HEAD.")
        parser.add_argument("--no-wait", action="store_true", help="Queue it, print its id and return.")
        add_follow_arguments(parser)

    def handle(self, *args, app, ref, no_wait=False, json=False, db=False, verbosity=1, **options):
        from deployments.requests import request_deployment  # not needed for --help

        queue_and_follow(
            self,
            lambda: request_deployment(app, ref, name=getpass.getuser(), via="cli"),
            lambda deployment: f"Deploying {app} at {ref} (deployment {deployment.public_id})",
            no_wait=no_wait, json=json, db=db, verbosity=verbosity,
        )
