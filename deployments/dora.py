"""DORA's four key metrics per app, over a window of days (docs/metrics.md
defines each): on the app page (?window=7d|30d|90d) and in /metrics.

The window holds the app's deployments queued in its last N days, read in
one query through the deploy_app_recent index (app, -queued_at, -id), so
the cost grows with the deployments in the window, never with the history.
"""

import statistics
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import BooleanField, Case, Exists, OuterRef, Q, Value, When
from django.utils import timezone

from deployments.models import Deployment, DeploymentKind, DeploymentStatus, Step, StepStatus

WINDOWS = {"7d": 7, "30d": 30, "90d": 90}
DEFAULT_WINDOW = "30d"
# A restore or rollback after a deploy that went live says it needed remediation.
REMEDIATIONS = (DeploymentKind.ROLLBACK, DeploymentKind.RESTORE)
# A row is a tuple (values_list: cheaper than dicts over a busy app's 90 days).
FIELDS = ("app_id", "kind", "finished_at", "commit_time", "went_live")
APP, KIND, FINISHED, COMMIT_TIME, WENT_LIVE = range(len(FIELDS))


@dataclass
class Dora:
    window: str
    days: int
    deploys_live: int = 0  # kind deploy, went live, queued in the window
    failed_changes: int = 0
    frequency: float = 0.0  # deploys that went live per day
    lead_time: float | None = None  # seconds, median; None: no data
    change_failure_rate: float | None = None  # 0..1; None: nothing went live
    time_to_restore: float | None = None  # seconds, median; None: nothing restored
    error: str = ""  # a bad ?window=, named (the default window is shown instead)

    @property
    def windows(self):
        return list(WINDOWS)

    @property
    def frequency_text(self):
        return f"{self.frequency:.2f}".rstrip("0").rstrip(".") if self.frequency else "0"

    @property
    def lead_time_text(self):
        return duration_text(self.lead_time)

    @property
    def time_to_restore_text(self):
        return duration_text(self.time_to_restore)

    @property
    def change_failure_percent(self):
        return None if self.change_failure_rate is None else round(100 * self.change_failure_rate)


def duration_text(seconds):
    """3 d 4 h, 2 h 5 min, 12 min, 40 s; "" for None (the page says "no data")."""
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def parse_window(text):
    """(window key, error): a missing window is the default; a bad one too, with an error naming it."""
    if text is None or text == "":
        return DEFAULT_WINDOW, ""
    if text in WINDOWS:
        return text, ""
    return DEFAULT_WINDOW, f"window={text[:20]!r} is not a window; use 7d, 30d or 90d (showing {DEFAULT_WINDOW})"


def _rows(queryset, since):
    """The finished, not cancelled deployments queued since `since`, oldest
    first, each with `went_live`: a deploy or rollback whose deploy step
    succeeded (deployed, or deployed and later replaced: rolled_back, the
    only case that needs the step_went_live probe), a restore that ended
    deployed (queryset.went_live's rule)."""
    deploy_step_succeeded = Step.objects.filter(deployment=OuterRef("pk"), name="deploy", status=StepStatus.SUCCEEDED)
    went_live = Case(
        When(status=DeploymentStatus.DEPLOYED, then=Value(True)),
        When(Q(status=DeploymentStatus.ROLLED_BACK) & ~Q(kind=DeploymentKind.RESTORE) & Q(Exists(deploy_step_succeeded)),
             then=Value(True)),
        default=Value(False),
        output_field=BooleanField(),
    )
    return (
        queryset.filter(queued_at__gte=since, finished_at__isnull=False)
        .exclude(status__in=[DeploymentStatus.CANCELLED, DeploymentStatus.QUEUED])
        .annotate(went_live=went_live)
        .order_by("app_id", "queued_at", "id")
        .values_list(*FIELDS)
    )


def figures(rows, window=DEFAULT_WINDOW, error=""):
    """The four figures from one app's rows (oldest first), as defined in docs/metrics.md."""
    days = WINDOWS[window]
    result = Dora(window=window, days=days, error=error)
    lead_times, restore_times = [], []
    # For each row, the next row that changed production (went live, or a
    # remediation attempt: a deploy that never went live changed nothing)
    # and the next that went live; one pass from the end.
    next_change, next_live = [None] * len(rows), [None] * len(rows)
    change = live = None
    for index in range(len(rows) - 1, -1, -1):
        next_change[index], next_live[index] = change, live
        row = rows[index]
        if row[WENT_LIVE]:
            live = row
        if row[WENT_LIVE] or row[KIND] in REMEDIATIONS:
            change = row
    for index, row in enumerate(rows):
        if row[KIND] != DeploymentKind.DEPLOY or not row[WENT_LIVE]:
            continue
        result.deploys_live += 1
        if row[COMMIT_TIME] is not None:
            lead_times.append(max((row[FINISHED] - row[COMMIT_TIME]).total_seconds(), 0))
        # A failed change: the next change to production was a rollback or a restore.
        if next_change[index] is None or next_change[index][KIND] not in REMEDIATIONS:
            continue
        result.failed_changes += 1
        # Restored when a later deployment went live (a rollback, a restore or a fix).
        if next_live[index] is not None:
            restore_times.append(max((next_live[index][FINISHED] - row[FINISHED]).total_seconds(), 0))
    result.frequency = result.deploys_live / days
    if lead_times:
        result.lead_time = statistics.median(lead_times)
    if result.deploys_live:
        result.change_failure_rate = result.failed_changes / result.deploys_live
    if restore_times:
        result.time_to_restore = statistics.median(restore_times)
    return result


def for_app(app, window_text=None, now=None):
    """The app page's figures for ?window= (one query)."""
    window, error = parse_window(window_text)
    since = (now or timezone.now()) - timedelta(days=WINDOWS[window])
    return figures(list(_rows(Deployment.objects.filter(app=app), since)), window, error)


def per_app(now=None, window=DEFAULT_WINDOW):
    """{app id: Dora} for every app with deployments in the window (one query): /metrics."""
    since = (now or timezone.now()) - timedelta(days=WINDOWS[window])
    by_app = {}
    for row in _rows(Deployment.objects.all(), since):
        by_app.setdefault(row[APP], []).append(row)
    return {app_id: figures(rows, window) for app_id, rows in by_app.items()}
