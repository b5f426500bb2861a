"""`manage.py deployments [--app APP] [--status S] [--kind K] [--limit N] [--json]`:
the most recent deployments, newest first, as a table or one JSON object per line."""

import shutil

from django.core.management.base import CommandError

from deployments.cli import BAD_REQUEST, find_app, iso, listed, one_of, positive
from deployments.cli import Command as NornCommand
from deployments.models import Deployment, DeploymentKind, DeploymentStatus


def as_record(d: Deployment) -> dict:
    """A deployment as `--json` prints it; the keys are stable (docs/cli.md)."""
    took = d.finished_at - d.started_at if d.started_at and d.finished_at else None
    return {
        "id": str(d.public_id),
        "app": d.app.name,
        "kind": d.kind,
        "status": d.status,
        "ref": d.ref,
        "commit": d.commit_sha or None,
        "commit_subject": d.commit_subject,
        "commit_author": d.commit_author,
        "commit_time": iso(d.commit_time),
        "requested_by": d.requested_by.get_username() if d.requested_by else (d.requested_by_name or "system"),
        "requested_via": d.requested_via,
        "queued_at": iso(d.queued_at),
        "started_at": iso(d.started_at),
        "finished_at": iso(d.finished_at),
        "duration": round(took.total_seconds(), 3) if took is not None else None,
        "error": d.error or None,
        "failure_reason": d.failure_reason or None,
    }


class Command(NornCommand):
    help = (
        "List recent deployments, newest first: a table, or with --json one JSON object per line. "
        "Exits 2 for a bad filter."
    )

    def add_arguments(self, parser):
        parser.add_argument("--app", help="Only this app's deployments.")
        parser.add_argument("--status", type=one_of("status", DeploymentStatus.values),
                            help=f"Only deployments in this status: {', '.join(DeploymentStatus.values)}.")
        parser.add_argument("--kind", type=one_of("kind", DeploymentKind.values),
                            help=f"Only this kind: {', '.join(DeploymentKind.values)}.")
        parser.add_argument("--limit", type=positive, default=20, help="How many at most (default 20).")
        parser.add_argument("--json", action="store_true",
                            help="One JSON object per line (id, app, kind, status, ref, commit, commit_subject, "
                                 "commit_author, commit_time, requested_by, requested_via, queued_at, started_at, "
                                 "finished_at, duration, error, failure_reason).")

    def handle(self, *args, app=None, status=None, kind=None, limit=20, json=False, **options):
        qs = Deployment.objects.select_related("app", "requested_by")
        if app is not None:
            try:
                qs = qs.filter(app=find_app(app))
            except CommandError as exc:
                raise CommandError(f"--app: {exc}", returncode=BAD_REQUEST) from None
        if status:
            qs = qs.filter(status=status)
        if kind:
            qs = qs.filter(kind=kind)
        rows = list(qs[:limit])
        empty = "No deployments match." if app or status or kind else "No deployments yet."
        if listed(self, rows, as_json=json, record=as_record, empty=empty):
            return
        self.write_table(rows)

    def write_table(self, rows):
        """One line per deployment, its SUBJECT trimmed to what the terminal
        (COLUMNS, else 120 wide when piped) leaves, and under a deployment
        that did not go live, why (Deployment.failure_reason)."""
        width = shutil.get_terminal_size((120, 24)).columns
        subject_width = max(width - SUBJECT_AT, MIN_SUBJECT)
        self.stdout.write(
            f"{'ID':<8} {'APP':<20} {'KIND':<8} {'STATUS':<11} {'REF':<12} {'COMMIT':<12} {'QUEUED':<16} "
            f"{'BY':<20} SUBJECT"
        )
        for d in rows:
            self.stdout.write(
                f"{d.short_id:<8} {d.app.name[:20]:<20} {d.kind:<8} {d.status:<11} {d.ref[:12]:<12} "
                f"{d.commit_sha[:12]:<12} {d.queued_at:%Y-%m-%d %H:%M} {trimmed(d.requested_by_label, 20):<20} "
                f"{trimmed(d.commit_subject, subject_width)}".rstrip()
            )
            if d.failure_reason:
                self.stdout.write(f"{'':<9}why: {trimmed(d.failure_reason, max(width - 14, MIN_SUBJECT))}")


# Where the SUBJECT column starts (the columns before it and their spaces);
# it is never narrower than MIN_SUBJECT, whatever the terminal.
SUBJECT_AT = 9 + 21 + 9 + 12 + 13 + 13 + 17 + 21
MIN_SUBJECT = 20


def trimmed(text: str, width: int) -> str:
    """`text` in at most `width` characters, "…" marking a cut."""
    return text if len(text) <= width else text[: width - 1] + "…"
