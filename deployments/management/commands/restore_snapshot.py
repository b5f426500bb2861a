"""`manage.py restore_snapshot <snapshot>`: restore an app's database from a snapshot."""

import getpass

from django.core.management.base import CommandError

from deployments.cli import Command as NornCommand
from deployments.cli import queue_and_follow
from deployments.cliargs import add_follow_arguments
from deployments.models import Snapshot
from deployments.requests import request_restore


class Command(NornCommand):
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
        try:
            row = Snapshot.objects.select_related("app", "deployment").get(pk=snapshot)
        except Snapshot.DoesNotExist:
            raise CommandError(f"no snapshot {snapshot}", returncode=2) from None
        if row.pruned_at is not None:
            # Before asking: there is nothing to confirm.
            raise CommandError(row.pruned_message, returncode=2)
        question = (
            f"Restore database {row.database} of {row.app.name} to snapshot {row.pk}, taken "
            f"{row.created_at:%Y-%m-%d %H:%M:%S} UTC ({row.get_kind_display().lower()})? "
            "Data written since then is lost (a snapshot of the current state is taken first). [y/N] "
        )
        if not yes and input(question).strip().lower() not in ("y", "yes"):
            raise CommandError("not restored", returncode=1)
        queue_and_follow(
            self,
            lambda: request_restore(row, name=getpass.getuser(), via="cli"),
            lambda restore: f"Restoring {row.database} from {row.path} (restore {restore.public_id})",
            no_wait=no_wait, json=json, db=db, verbosity=verbosity,
        )
