"""`manage.py follow <deployment id>`: watch a deployment, running or finished."""

from deployments.cli import FAILED, FollowPrinter, add_follow_arguments, find_deployment, following
from deployments.cli import Command as NornCommand
from deployments.models import DeploymentStatus


class Command(NornCommand):
    help = (
        "Print a deployment's steps from the start and follow it until it ends, live from the "
        "Norn server at NORN_URL (with NORN_API_TOKEN), else from the database. "
        "Exits 0 when it deployed, 1 when it did not, 2 for an unknown id."
    )

    def add_arguments(self, parser):
        parser.add_argument("deployment", help="Deployment id (the UUID, or its first 8+ characters).")
        add_follow_arguments(parser)

    def handle(self, *args, deployment, json=False, db=False, verbosity=1, **options):
        target = find_deployment(deployment)
        following(self, target)
        if not json:
            self.stdout.write(
                f"Following {target.app.name} at {target.ref} (deployment {target.public_id}, {target.status})"
            )
        status = FollowPrinter(self, as_json=json, use_db=db, verbosity=verbosity).run(target)
        if status != DeploymentStatus.DEPLOYED:
            raise SystemExit(FAILED)
