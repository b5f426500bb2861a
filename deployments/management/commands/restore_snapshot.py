"""`manage.py restore_snapshot <snapshot>`: restore an app's database from a snapshot."""

import getpass
import logging

from django.core.management.base import BaseCommand, CommandError

from deployments.management.commands.deploy import FollowPrinter, add_follow_arguments
from deployments.models import DeploymentStatus, Snapshot
from deployments.requests import DeployRequestError, request_restore


class Command(BaseCommand):
    help = (
        "Restore a snapshot into its app's database with pg_restore --clean --if-exists "
        "--single-transaction, after taking a snapshot of the current state (so it can be "
        "undone). Data written since the snapshot is lost. Exits 0 when restored."
    )

    def add_arguments(self, parser):
        parser.add_argument("snapshot", type=int, help="Snapshot id (see the admin or the app page).")
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")
        parser.add_argument("--no-wait", action="store_true", help="Queue it, print its id and return.")
        add_follow_arguments(parser)

    def handle(self, *args, snapshot, yes=False, no_wait=False, json=False, db=False, verbosity=1, **options):
        logging.getLogger("django-q").setLevel(logging.WARNING)
        try:
            row = Snapshot.objects.select_related("app", "deployment").get(pk=snapshot)
        except Snapshot.DoesNotExist:
            raise CommandError(f"no snapshot {snapshot}", returncode=2) from None
        question = (
            f"Restore database {row.database} of {row.app.name} to snapshot {row.pk}, taken "
            f"{row.created_at:%Y-%m-%d %H:%M:%S} UTC ({row.get_kind_display().lower()})? "
            "Data written since then is lost (a snapshot of the current state is taken first). [y/N] "
        )
        if not yes and input(question).strip().lower() not in ("y", "yes"):
            raise CommandError("not restored", returncode=1)
        try:
            restore = request_restore(row, name=getpass.getuser(), via="cli")
        except DeployRequestError as exc:
            raise CommandError(str(exc), returncode=2) from None
        if no_wait:
            self.stdout.write(str(restore.public_id))
            return
        if not json:
            self.stdout.write(f"Restoring {row.database} from {row.path} (restore {restore.public_id})")
        status = FollowPrinter(self, as_json=json, use_db=db, verbosity=verbosity).run(restore)
        if status != DeploymentStatus.DEPLOYED:
            raise SystemExit(1)
