"""DORA's four key metrics per app, over a window of days (docs/metrics.md
defines each): on the app page (?window=7d|30d|90d) and in /metrics.

The window holds the app's changes to production queued in its last N days
(models.DoraChange: the deployments that went live, and every rollback and
restore), counted by PostgreSQL in one query (FIGURES_SQL), so the cost grows
with the changes in the window, never with the history. A restore or
rollback as the next change after a deploy that went live says that deploy
needed remediation: the triggers that keep DoraChange (migration 0017) write
that on the deploy's row when the next change ends.
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


# The four figures of each app over the deploys that went live, queued since
# %(since)s: a window of DoraChange rows (kept by triggers, migration 0017),
# read through dora_app_queued for one app or dora_queued for all, and counted
# by PostgreSQL (a busy app's 90 days are thirty thousand rows).
FIGURES_SQL = """
SELECT app_id,
    count(*) AS deploys_live,
    count(*) FILTER (WHERE failed) AS failed_changes,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY lead_seconds) FILTER (WHERE lead_seconds IS NOT NULL) AS lead_time,
    -- A failed change is restored when a later deployment went live (a rollback, a restore or a fix).
    percentile_cont(0.5) WITHIN GROUP (ORDER BY restore_seconds)
        FILTER (WHERE restore_seconds IS NOT NULL) AS time_to_restore
FROM deployments_dorachange
WHERE queued_at >= %(since)s AND kind = 'deploy' AND went_live {app}
GROUP BY app_id
"""


def _figures_by_app(since, app_id=None):
    """{app id: (deploys that went live, failed changes, median lead time, median time to restore)}."""
    with connection.cursor() as cursor:
        if app_id is None:
            cursor.execute(FIGURES_SQL.format(app=""), {"since": since})
        else:
            cursor.execute(FIGURES_SQL.format(app="AND app_id = %(app)s"), {"since": since, "app": app_id})
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
