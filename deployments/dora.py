"""DORA's four key metrics per app, over a window of days (docs/metrics.md
defines each): on the app page (?window=7d|30d|90d) and in /metrics.

The window holds the app's deployments queued in its last N days, read in
one query through the deploy_app_recent index (app, -queued_at, -id) and
counted by PostgreSQL (FIGURES_SQL), so the cost grows with the deployments
in the window, never with the history. A restore or rollback as the next
change after a deploy that went live says that deploy needed remediation.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.db import connection
from django.utils import timezone

WINDOWS = {"7d": 7, "30d": 30, "90d": 90}
DEFAULT_WINDOW = "30d"


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


# The four figures of each app, over its finished, not cancelled deployments
# queued since %(since)s (oldest first by queue time), in PostgreSQL: a busy
# app's 30 days are ten thousand rows, which Python would read one by one.
# went_live is queryset.went_live's rule: deployed (a restore too), or a
# deploy or rollback whose deploy step succeeded and that a rollback later
# replaced (rolled_back: the one case needing the step_went_live probe). A
# change to production went live or tried to remedy one (a rollback or a
# restore, whatever its end); a deploy that never went live changed nothing.
FIGURES_SQL = """
WITH r AS MATERIALIZED (
    -- Newest first (age 1 is the newest), the order of the deploy_app_recent index.
    SELECT d.app_id, d.kind, d.finished_at, d.commit_time,
        (d.status = 'deployed' OR (d.status = 'rolled_back' AND d.kind <> 'restore' AND EXISTS (
            SELECT 1 FROM deployments_step s
            WHERE s.deployment_id = d.id AND s.name = 'deploy' AND s.status = 'succeeded'))) AS went_live,
        row_number() OVER (PARTITION BY d.app_id ORDER BY d.queued_at DESC, d.id DESC) AS age
    FROM deployments_deployment d
    WHERE d.queued_at >= %(since)s AND d.finished_at IS NOT NULL
        AND d.status NOT IN ('cancelled', 'queued') AND (%(app)s::bigint IS NULL OR d.app_id = %(app)s)
), n AS (
    -- Each row's next change and next deployment that went live: the nearest
    -- of the rows queued after it (the frame only grows: one pass).
    SELECT r.*,
        max(age) FILTER (WHERE went_live OR kind IN ('rollback', 'restore')) OVER later AS next_change,
        max(age) FILTER (WHERE went_live) OVER later AS next_live
    FROM r
    WINDOW later AS (PARTITION BY app_id ORDER BY age ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
)
SELECT n.app_id,
    count(*) AS deploys_live,
    count(*) FILTER (WHERE c.kind IN ('rollback', 'restore')) AS failed_changes,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY greatest(extract(epoch FROM n.finished_at - n.commit_time), 0))
        FILTER (WHERE n.commit_time IS NOT NULL) AS lead_time,
    -- A failed change is restored when a later deployment went live (a rollback, a restore or a fix).
    percentile_cont(0.5) WITHIN GROUP (ORDER BY greatest(extract(epoch FROM l.finished_at - n.finished_at), 0))
        FILTER (WHERE c.kind IN ('rollback', 'restore') AND l.age IS NOT NULL) AS time_to_restore
FROM n
LEFT JOIN r c ON c.app_id = n.app_id AND c.age = n.next_change
LEFT JOIN r l ON l.app_id = n.app_id AND l.age = n.next_live
WHERE n.kind = 'deploy' AND n.went_live
GROUP BY n.app_id
"""


def _figures_by_app(since, app_id=None):
    """{app id: (deploys that went live, failed changes, median lead time, median time to restore)}."""
    with connection.cursor() as cursor:
        cursor.execute(FIGURES_SQL, {"since": since, "app": app_id})
        return {row[0]: row[1:] for row in cursor.fetchall()}


def figures(counted=None, window=DEFAULT_WINDOW, error=""):
    """The Dora of one app from its row of FIGURES_SQL (None: nothing went live)."""
    days = WINDOWS[window]
    result = Dora(window=window, days=days, error=error)
    if counted is None:
        return result
    deploys_live, failed_changes, lead_time, time_to_restore = counted
    result.deploys_live, result.failed_changes = deploys_live, failed_changes
    result.frequency = deploys_live / days
    result.lead_time = None if lead_time is None else float(lead_time)
    result.change_failure_rate = failed_changes / deploys_live
    result.time_to_restore = None if time_to_restore is None else float(time_to_restore)
    return result


def for_app(app, window_text=None, now=None):
    """The app page's figures for ?window= (one query)."""
    window, error = parse_window(window_text)
    since = (now or timezone.now()) - timedelta(days=WINDOWS[window])
    return figures(_figures_by_app(since, app.pk).get(app.pk), window, error)


def per_app(now=None, window=DEFAULT_WINDOW):
    """{app id: Dora} for every app a deploy of which went live in the window (one query): /metrics."""
    since = (now or timezone.now()) - timedelta(days=WINDOWS[window])
    return {app_id: figures(counted, window) for app_id, counted in _figures_by_app(since).items()}
