"""`manage.py snapshots [APP] [--json]`: the database snapshots Norn took, newest first."""

from deployments.cli import find_app, iso, listed, positive
from deployments.cli import Command as NornCommand
from deployments.models import Snapshot


def human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def as_record(s: Snapshot) -> dict:
    """A snapshot as `--json` prints it; the keys are stable (docs/cli.md)."""
    return {
        "id": s.pk,
        "app": s.app.name,
        "database": s.database,
        "kind": s.kind,
        "size": s.size,
        "sha256": s.sha256,
        "created_at": iso(s.created_at),
        "deployment": str(s.deployment.public_id),
        "pruned_at": iso(s.pruned_at),
        "path": s.path,
    }


class Command(NornCommand):
    help = (
        "List the database snapshots Norn took (before migrations, before a restore), newest first, "
        "for one app or all; restore one with manage.py restore_snapshot ID. Exits 2 for an unknown app."
    )

    def add_arguments(self, parser):
        parser.add_argument("app", nargs="?", help="Only this app's snapshots.")
        parser.add_argument("--limit", type=positive, default=50, help="How many at most (default 50).")
        parser.add_argument("--json", action="store_true",
                            help="One JSON object per line (id, app, database, kind, size, sha256, created_at, "
                                 "deployment, pruned_at, path).")

    def handle(self, *args, app=None, limit=50, json=False, **options):
        snapshots = Snapshot.objects.select_related("app", "deployment").order_by("-created_at", "-pk")
        if app is not None:
            snapshots = snapshots.filter(app=find_app(app))
        rows = list(snapshots[:limit])
        empty = f"No snapshots of {app}." if app else "No snapshots."
        if listed(self, rows, as_json=json, record=as_record, empty=empty):
            return
        self.stdout.write(
            f"{'ID':>5}  {'APP':<20} {'DATABASE':<24} {'KIND':<13} {'SIZE':>10}  {'SHA256':<12}  "
            f"{'CREATED':<16}  {'DEPLOYMENT':<10} PATH"
        )
        for s in rows:
            where = f"pruned {s.pruned_at:%Y-%m-%d %H:%M}" if s.pruned_at else s.path
            self.stdout.write(
                f"{s.pk:>5}  {s.app.name:<20} {s.database:<24} {s.kind:<13} {human_size(s.size):>10}  "
                f"{s.sha256[:12]:<12}  {s.created_at:%Y-%m-%d %H:%M}  {s.deployment.short_id:<10} {where}"
            )
        kept = [s for s in rows if s.pruned_at is None]
        if kept:
            self.stdout.write(
                f"Restore one with: manage.py restore_snapshot ID (e.g. {kept[0].pk}); "
                "the current state is snapshotted first."
            )
