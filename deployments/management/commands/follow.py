"""`manage.py follow <deployment id>`: watch a deployment, running or finished."""

from deployments import cliargs
from deployments.cli import FAILED, FollowPrinter, find_deployment, following
from deployments.cli import Command as NornCommand
from deployments.models import DeploymentStatus
from deployments.stream import commit_line


class Command(NornCommand):
    help = cliargs.HELP["follow"]

    def add_arguments(self, parser):
        cliargs.add_arguments("follow", parser)

    def handle(self, *args, deployment, json=False, db=False, verbosity=1, **options):
        target = find_deployment(deployment)
        following(self, target)
        if not json:
            self.stdout.write(
                f"Following {target.app.name} at {target.ref} (deployment {target.public_id}, {target.status})"
            )
            commit = commit_line(target.commit_sha, target.commit_subject, target.commit_author)
            if commit:
                self.stdout.write(commit)
        status = FollowPrinter(self, as_json=json, use_db=db, verbosity=verbosity).run(target)
        if status != DeploymentStatus.DEPLOYED:
            raise SystemExit(FAILED)
