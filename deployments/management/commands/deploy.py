"""`manage.py deploy <app> [<sha>|<branch>|HEAD]`: deploy and watch it happen."""

import getpass

from deployments import cliargs
from deployments.cli import Command as NornCommand
from deployments.cli import queue_and_follow


class Command(NornCommand):
    help = cliargs.HELP["deploy"]

    def add_arguments(self, parser):
        cliargs.add_arguments("deploy", parser)

    def handle(self, *args, app, ref, no_wait=False, json=False, db=False, verbosity=1, **options):
        from deployments.requests import request_deployment  # not needed for --help

        queue_and_follow(
            self,
            lambda: request_deployment(app, ref, name=getpass.getuser(), via="cli"),
            lambda deployment: f"Deploying {app} at {ref} (deployment {deployment.public_id})",
            no_wait=no_wait, json=json, db=db, verbosity=verbosity,
        )
