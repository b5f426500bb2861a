#!/usr/bin/env python
"""Benchmark: the history pages and admin lists with a long deployment history.

Loads a year of history for 20 apps with PostgreSQL INSERT ... SELECT
generate_series, in chunks of --chunk deployments (1,000,000 deployments and
their ~6,800,000 steps in a few minutes), into two databases: a small one
with --first deployments (default 1,000) and the full one (--deployments,
default 1,000,000). In each it requests, through django.test.Client logged in
as a superuser, every page that lists deployments or steps: the apps
overview, the busiest app's page (its first, a middle and its last history
page, and the page its middle page's "Older" link opens), a deployment's
page (the newest and the oldest), the rollback page, the admin deployment
list (all apps, sorted by default and by each column a user can click, its
middle page by number and by its "Next" link, its last page; filtered to
the busiest app, with its last page and a middle page's "Next" link), a deployment's admin page (its steps inline), the admin
snapshot and app lists. Per page it prints the number of SQL queries (one
request under CaptureQueriesContext) and the server time (median and p95
over --requests requests, after --warmup). Targets: the same number of
queries at both sizes, and a median under 50 ms.

Then every query of those pages, at the full size, is run once more under
EXPLAIN ANALYZE: the table names any Seq Scan on deployments or steps (at
1,000 rows a Seq Scan is the right plan, so only the full size is checked),
and --explain prints the plans of the slow queries and of those scans.

    .venv/bin/python bench/history_scale.py [--deployments 1000000] [--first 1000]
        [--apps 20] [--requests 20] [--warmup 3] [--chunk 100000] [--explain]
        [--keep] [--reuse]

Needs PostgreSQL (scripts/services) and NORN_APP_DATABASES_URL (the app page
shows snapshot restore commands; nothing connects to it). Uses its own
databases norn_bench_history_small and norn_bench_history and drops them at
the end unless --keep; --reuse measures an existing norn_bench_history that
holds exactly --deployments deployments instead of loading it again (after
applying any new migration), for measuring one change after another.
Check the disk first: at 1,000,000 deployments the database takes about
2.5 GB (the steps' log output is compressed). Deployments have their real
steps (7 for a deploy, 1 for a rollback, 3 for a restore: about 6.8 rows
each) with log output of a few KB for build and test; events are not loaded
(none of these pages reads them). The machine's load average is printed:
wall times on a shared machine are noisy, the CPU column (Django's own time)
much less so.
"""

import argparse
import datetime
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB = "norn_bench_history"
TARGET_MS = 50
BIG_TABLES = ("deployments_deployment", "deployments_step")
# Queries this slow (by EXPLAIN ANALYZE) get their plan printed with --explain.
SLOW_QUERY_MS = 5.0

APP_NAMES = (
    "billing-api", "web-frontend", "search", "checkout", "accounts", "mailer", "nightly-report",
    "inventory", "media-resizer", "admin-portal", "notifications", "ledger", "geo-lookup",
    "audit-log", "recommendations", "invoices-export", "status-page", "webhooks", "catalog", "cleanup-cron",
)

# Step durations in seconds (min, max) per kind and position, as the real
# pipeline records them (deployments/states.py STEPS_BY_KIND).
CATALOG = [
    ("deploy", 0, "clone", 1, 8),
    ("deploy", 1, "build", 20, 240),
    ("deploy", 2, "test", 5, 120),
    ("deploy", 3, "snapshot", 1, 40),
    ("deploy", 4, "migrate", 0.5, 30),
    ("deploy", 5, "deploy", 8, 90),
    ("deploy", 6, "cleanup", 0.1, 1),
    ("rollback", 0, "deploy", 8, 90),
    ("restore", 0, "verify", 0.5, 5),
    ("restore", 1, "snapshot", 1, 40),
    ("restore", 2, "restore", 5, 120),
]


def sh(*argv, **kwargs):
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True, **kwargs)


def drop_database(name):
    sh("psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def database_exists(name):
    out = sh("psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc",
             f"SELECT 1 FROM pg_database WHERE datname = '{name}'").stdout
    return out.strip() == "1"


def use_database(name):
    """Points Django's connection at another database (the next query connects)."""
    from django.db import connection

    connection.close()
    connection.settings_dict["NAME"] = name


def write_specs(apps_dir, count):
    """Valid infraspec files: two in three apps have a database and migrations."""
    names = [APP_NAMES[i] if i < len(APP_NAMES) else f"app-{i:03d}" for i in range(count)]
    for i, name in enumerate(names):
        (apps_dir / name).mkdir(parents=True)
        repo = f"repo:\n  url: https://git.example.com/acme/{name}.git\n  branch: main\n"
        if i % 3 == 2:
            spec = (f"app: {name}\nrole: cron\n{repo}build:\n  test: make test\n"
                    f'schedule: "30 2 * * *"\ncommand: ["sh", "/run.sh"]\n')
        else:
            spec = (f"app: {name}\nrole: webserver\n{repo}build:\n  test: make test\n"
                    f"services:\n  postgres:\n    database: {name.replace('-', '_')}\n"
                    f"migrations:\n  command: ./manage.py migrate --noinput\n"
                    f"port: 8000\nhealthcheck: /healthz\nreplicas: 2\n")
        (apps_dir / name / "infraspec.yaml").write_text(spec)


# --- loading -------------------------------------------------------------------

# Deterministic pseudo-random numbers in [0, 1) from (deployment number, salt),
# so the deployment rows and their step rows, inserted by separate
# statements, agree on every draw.
SETUP_SQL = """
CREATE FUNCTION pg_temp.u(k bigint, salt int) RETURNS float8
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT (hashint8extended(k, salt) & 2147483647)::float8 / 2147483648 $$;
CREATE TEMP TABLE bench_apps (idx int PRIMARY KEY, id bigint, name text, has_db bool, runtime text);
CREATE TEMP TABLE bench_users (idx int PRIMARY KEY, id int);
CREATE TEMP TABLE bench_catalog (kind text, pos int, name text, min_s float8, max_s float8);
"""

# One row per deployment to load: app (a few apps deploy much more often
# than others), kind, outcome and the position of the step that failed.
PLAN_SQL = """
CREATE TEMP TABLE bench_plan AS
WITH base AS (
    SELECT k,
        least(floor(%(apps)s * pg_temp.u(k, 1) ^ 1.5)::int, %(apps)s - 1) AS app_idx,
        pg_temp.u(k, 2) AS r_kind, pg_temp.u(k, 3) AS r_outcome, pg_temp.u(k, 4) AS r_fail,
        pg_temp.u(k, 6) AS r_wait, pg_temp.u(k, 7) AS r_who, pg_temp.u(k, 8) AS r_ref,
        %(t0)s::timestamptz + ((k - %(k0)s) + pg_temp.u(k, 5)) / %(n)s * interval '365 days' AS queued_at
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS k
), kinded AS (
    SELECT b.*, a.id AS app_id, a.name AS app_name, a.has_db, a.runtime,
        CASE WHEN r_kind < 0.03 THEN 'rollback' WHEN r_kind < 0.04 THEN 'restore' ELSE 'deploy' END AS kind
    FROM base b JOIN bench_apps a ON a.idx = b.app_idx
)
SELECT *,
    CASE
        -- 15%% of deploys fail: mostly tests and builds, some rollouts.
        WHEN kind = 'deploy' AND r_outcome >= 0.85 THEN
            CASE WHEN r_fail < 0.05 THEN 0 WHEN r_fail < 0.35 THEN 1 WHEN r_fail < 0.75 THEN 2
                 WHEN r_fail < 0.85 AND has_db THEN 4 WHEN r_fail < 0.85 THEN 2 ELSE 5 END
        WHEN kind = 'rollback' AND r_outcome >= 0.9 THEN 0
        WHEN kind = 'restore' AND r_outcome >= 0.9 THEN CASE WHEN r_fail < 0.6 THEN 0 ELSE 2 END
    END AS fail_pos
FROM kinded
"""

# One row per step: its outcome, duration and offset from the deployment's start.
STEPS_PLAN_SQL = """
CREATE TEMP TABLE bench_steps AS
WITH s AS (
    SELECT p.k, c.pos, c.name, p.fail_pos, p.kind, fc.name AS failed_name,
        CASE
            WHEN p.fail_pos IS NOT NULL AND c.pos > p.fail_pos AND c.name <> 'cleanup' THEN 'cut'
            WHEN p.fail_pos = c.pos THEN 'failed'
            WHEN p.kind = 'deploy' AND NOT p.has_db AND c.name IN ('snapshot', 'migrate') THEN 'skipped'
            ELSE 'succeeded'
        END AS outcome,
        (c.min_s + (c.max_s - c.min_s) * pg_temp.u(p.k, 100 + c.pos))
            * CASE WHEN c.pos = p.fail_pos THEN 0.5 ELSE 1 END AS secs
    FROM bench_plan p JOIN bench_catalog c ON c.kind = p.kind
    LEFT JOIN bench_catalog fc ON fc.kind = p.kind AND fc.pos = p.fail_pos
), d AS (
    SELECT *, CASE outcome WHEN 'cut' THEN NULL WHEN 'skipped' THEN 0.01 ELSE secs END AS dur FROM s
)
SELECT *,
    -- 50 ms of bookkeeping between steps.
    coalesce(sum(coalesce(dur + 0.05, 0)) OVER (
        PARTITION BY k ORDER BY pos ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS offset_s
FROM d
"""

STEP_ERRORS = """
CASE name
    WHEN 'clone' THEN 'git clone exited with status 128: fatal: could not read from remote repository'
    WHEN 'build' THEN 'docker build exited with status 1: npm ERR! code ELIFECYCLE'
    WHEN 'test' THEN 'tests exited with status 1 (3 failed, 214 passed)'
    WHEN 'migrate' THEN 'migrations exited with status 1: relation "orders_refund" already exists'
    WHEN 'deploy' THEN 'rollout not ready after 600 s: 1 of 2 replicas unavailable (CrashLoopBackOff)'
    WHEN 'verify' THEN 'snapshot file changed since it was taken (sha256 mismatch)'
    ELSE 'pg_restore exited with status 1'
END
"""

DEPLOYMENTS_SQL = f"""
INSERT INTO deployments_deployment (
    id, public_id, app_id, ref, commit_sha, image, status, error, kind, priority,
    rollback_to_id, replaces_id, snapshot_id, requested_by_id, requested_by_name, requested_via,
    runtime, queued_at, started_at, finished_at, owner, heartbeat_at, step_pgid, workdir,
    cancel_requested_at, cancel_requested_by, last_event_seq,
    commit_subject, commit_author, commit_time, failed_step)
SELECT p.k, gen_random_uuid(), p.app_id,
    CASE WHEN p.kind <> 'deploy' OR p.r_ref < 0.7 THEN 'HEAD' WHEN p.r_ref < 0.9 THEN 'main' ELSE left(x.sha, 12) END,
    CASE WHEN p.kind = 'restore' OR (p.kind = 'deploy' AND p.fail_pos = 0) THEN '' ELSE x.sha END,
    CASE WHEN p.kind = 'restore' OR (p.kind = 'deploy' AND p.fail_pos <= 1) THEN ''
         ELSE '127.0.0.1:5000/' || p.app_name || ':' || left(x.sha, 12) END,
    CASE WHEN p.fail_pos IS NOT NULL THEN 'failed'
         WHEN p.kind = 'deploy' AND p.r_outcome >= 0.80 THEN 'rolled_back' ELSE 'deployed' END,
    coalesce(f.name || ' failed: ' || f.error, ''),
    p.kind, CASE WHEN p.kind = 'deploy' THEN 1 ELSE 0 END,
    NULL, NULL, NULL,
    -- People on the dashboard or the CLI; autodeploys and CI have no user.
    CASE WHEN p.r_who < 0.5 OR p.r_who >= 0.9 THEN u.id END,
    CASE WHEN p.r_who >= 0.8 AND p.r_who < 0.9 THEN 'ci' ELSE '' END,
    CASE WHEN p.r_who < 0.5 THEN 'dashboard' WHEN p.r_who < 0.8 THEN 'autodeploy' ELSE 'cli' END,
    p.runtime, p.queued_at, x.started_at, x.started_at + t.total * interval '1 second',
    'worker-1:4242:' || left(md5(p.k::text), 8), x.started_at + t.total * interval '1 second',
    NULL, '', NULL, '', 2 + 3 * t.steps,
    -- The commit the clone step read: a subject, an author and a time, as git gives them.
    CASE WHEN p.kind = 'restore' OR (p.kind = 'deploy' AND p.fail_pos = 0) THEN '' ELSE
        (ARRAY['Fix the login redirect when the session expired', 'Bump dependencies',
               'Add the monthly billing export', 'Retry the payment webhook on 502',
               'Speed up the orders list (index on created_at)', 'Copy edits on the pricing page',
               'Drop the unused legacy_customers table', 'Log the request id with each error'])[1 + p.k % 8] END,
    CASE WHEN p.kind = 'restore' OR (p.kind = 'deploy' AND p.fail_pos = 0) THEN '' ELSE
        (ARRAY['Alice Martin', 'Bob Chen', 'Carol Diaz', 'Dave Okafor'])[1 + p.k % 4] END,
    CASE WHEN p.kind = 'restore' OR (p.kind = 'deploy' AND p.fail_pos = 0) THEN NULL ELSE
        p.queued_at - (10 + p.k % 240) * interval '1 minute' END,
    coalesce(f.name, '')
FROM bench_plan p
JOIN (SELECT k, sum(coalesce(dur + 0.05, 0)) AS total, count(*) AS steps FROM bench_steps GROUP BY k) t USING (k)
LEFT JOIN (SELECT k, name, {STEP_ERRORS} AS error FROM bench_steps WHERE outcome = 'failed') f USING (k)
LEFT JOIN bench_users u ON u.idx = floor(p.r_who * 10)::int % 4
CROSS JOIN LATERAL (
    SELECT md5(p.k::text) || left(md5((p.k + 7)::text), 8) AS sha,
           p.queued_at + (0.2 + 3 * p.r_wait) * interval '1 second' AS started_at
) x
ORDER BY p.k
"""

STEPS_SQL = f"""
INSERT INTO deployments_step (
    deployment_id, position, name, status, started_at, finished_at, duration, output, skip_reason, error)
SELECT s.k, s.pos, s.name,
    CASE s.outcome WHEN 'cut' THEN 'skipped' ELSE s.outcome END,
    d.started_at + s.offset_s * interval '1 second',
    d.started_at + (s.offset_s + s.dur) * interval '1 second',
    s.dur * interval '1 second',
    CASE
        WHEN s.outcome IN ('cut', 'skipped') THEN ''
        -- Build and test logs of a few KB; the others a line or two.
        WHEN s.name = 'build' THEN repeat(
            E'Step 4/12 : RUN pip install --no-cache-dir -r requirements.txt\\n ---> Running in 3f2a9c1e4b7d\\n',
            20 + (pg_temp.u(s.k, 200) * 100)::int)
        WHEN s.name = 'test' THEN repeat(
            E'tests/test_views.py::test_overview_lists_every_app PASSED                 [ 42%]\\n',
            10 + (pg_temp.u(s.k, 201) * 70)::int)
        WHEN s.name = 'clone' THEN E'Cloning into ''/var/lib/norn/work/src''...\\nHEAD is now at ' || left(d.commit_sha, 12) || E'\\n'
        ELSE s.name || E': done\\n'
    END,
    CASE s.outcome
        WHEN 'cut' THEN s.failed_name || ' failed'
        WHEN 'skipped' THEN CASE s.name WHEN 'snapshot' THEN 'no services.postgres in infraspec.yaml'
                                        ELSE 'no migrations.command in infraspec.yaml' END
        ELSE ''
    END,
    CASE WHEN s.outcome = 'failed' THEN {STEP_ERRORS.replace("CASE name", "CASE s.name")} ELSE '' END
FROM bench_steps s JOIN deployments_deployment d ON d.id = s.k
ORDER BY s.k, s.pos
"""

# Retention keeps the newest 5 snapshots per app (deployments/retention.py).
SNAPSHOTS_SQL = """
DELETE FROM deployments_snapshot;
INSERT INTO deployments_snapshot (deployment_id, app_id, database, path, size, sha256, kind, created_at)
SELECT id, app_id, replace(app_name, '-', '_'),
    '/var/lib/norn/snapshots/' || app_name || '/' || to_char(taken, 'YYYYMMDD-HH24MISS') || '.dump',
    (50000000 + pg_temp.u(id, 300) * 2000000000)::bigint, md5(id::text) || md5((id + 1)::text),
    'pre-migration', taken
FROM (
    SELECT d.id, d.app_id, a.name AS app_name, s.finished_at AS taken,
        row_number() OVER (PARTITION BY d.app_id ORDER BY d.queued_at DESC, d.id DESC) AS rn
    FROM deployments_deployment d
    JOIN deployments_step s ON s.deployment_id = d.id AND s.name = 'snapshot' AND s.status = 'succeeded'
    JOIN bench_apps a ON a.id = d.app_id
    WHERE d.kind = 'deploy'
) newest
WHERE rn <= 5
"""


DAYS_SQL = """
DELETE FROM deployments_deploymentday;
INSERT INTO deployments_deploymentday (app_id, day, count)
SELECT app_id, (queued_at AT TIME ZONE 'UTC')::date, count(*) FROM deployments_deployment GROUP BY 1, 2
"""


def prepare_load(cursor, apps, user_ids):
    cursor.execute(SETUP_SQL)
    for idx, app in enumerate(apps):
        has_db = bool((app.spec or {}).get("services"))
        runtime = "kubernetes" if idx % 4 == 0 else "docker"
        cursor.execute("INSERT INTO bench_apps VALUES (%s, %s, %s, %s, %s)", [idx, app.pk, app.name, has_db, runtime])
    for idx, user_id in enumerate(user_ids):
        cursor.execute("INSERT INTO bench_users VALUES (%s, %s)", [idx, user_id])
    for row in CATALOG:
        cursor.execute("INSERT INTO bench_catalog VALUES (%s, %s, %s, %s, %s)", list(row))


def load(lo, hi, apps_count, t0, n, chunk):
    """Deployments lo..hi (their ids) of n in all, queued over the year from
    t0, with steps; one transaction per chunk, so the temporary tables and the
    WAL of one statement stay small."""
    from django.db import connection, transaction

    started = time.monotonic()
    for first in range(lo, hi + 1, chunk):
        last = min(first + chunk - 1, hi)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = '900s'")
            cursor.execute("SET LOCAL synchronous_commit = off")
            cursor.execute("SET LOCAL work_mem = '256MB'")
            # No foreign key checks (the rows are consistent by construction):
            # Django's are deferred, and millions of them at COMMIT take minutes.
            # (Nor triggers: the per-day counts are made at the end.)
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute("DROP TABLE IF EXISTS bench_plan, bench_steps")
            # n, not the chunk's size: the queue times spread over the whole year.
            cursor.execute(PLAN_SQL, {"apps": apps_count, "lo": first, "hi": last, "n": n, "t0": t0,
                                      "k0": 1})
            cursor.execute(STEPS_PLAN_SQL)
            cursor.execute(DEPLOYMENTS_SQL)
            cursor.execute(STEPS_SQL)
        if hi - lo >= chunk:
            print(f"  ... {last:,} deployments ({time.monotonic() - started:.0f} s)", flush=True)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(SNAPSHOTS_SQL)
        # The loading bypassed the triggers that count deployments per day
        # (migration 0012): count them as those would have.
        cursor.execute(DAYS_SQL)
        # Nor the triggers that keep DORA's changes (migration 0017).
        rebuilt = time.monotonic()
        cursor.execute("SELECT deployments_dora_rebuild()")
        print(f"  DORA's changes rebuilt in {time.monotonic() - rebuilt:.1f} s", flush=True)
        # The ids were given explicitly; later inserts must not collide with them.
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('deployments_deployment', 'id'), "
            "(SELECT max(id) FROM deployments_deployment))"
        )
    with connection.cursor() as cursor:
        # As autovacuum would have long done on a year-old table: statistics
        # for the planner, and the visibility map for index-only scans.
        for table in ("deployments_deployment", "deployments_step", "deployments_snapshot",
                      "deployments_deploymentday", "deployments_dorachange"):
            cursor.execute(f"VACUUM (ANALYZE) {table}")
    return time.monotonic() - started


def table_counts():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM deployments_deployment), (SELECT count(*) FROM deployments_step), "
            "pg_size_pretty(pg_total_relation_size('deployments_deployment')), "
            "pg_size_pretty(pg_total_relation_size('deployments_step'))"
        )
        return cursor.fetchone()


# --- measuring -----------------------------------------------------------------


def sortable_columns():
    """The admin deployment list's columns a user can click to sort by:
    (name, position in list_display, counted from 1 as the admin's ?o= does)."""
    from django.contrib import admin
    from django.core.exceptions import FieldDoesNotExist

    from deployments.models import Deployment

    model_admin = admin.site._registry[Deployment]
    columns = []
    for position, name in enumerate(model_admin.list_display, start=1):
        if model_admin.sortable_by is not None and name not in model_admin.sortable_by:
            continue
        try:
            Deployment._meta.get_field(name)
        except FieldDoesNotExist:
            attr = getattr(model_admin, name, None) or getattr(Deployment, name, None)
            if isinstance(attr, property):
                attr = attr.fget
            if not getattr(attr, "admin_order_field", None):
                continue
        columns.append((name, position))
    return columns


def pages():
    """(label, url) of the measured pages, for the app with the longest history."""
    from django.contrib import admin as django_admin
    from django.db.models import Count

    from apps_registry.models import App
    from deployments.models import Deployment, Snapshot
    from deployments.views import HISTORY_PAGE_SIZE

    busiest = Deployment.objects.values("app").annotate(n=Count("id")).order_by("-n").first()
    app = App.objects.get(pk=busiest["app"])
    history = Deployment.objects.filter(app=app).order_by("-queued_at", "-id")
    newest, oldest = history.first(), history.last()
    try:  # the last page as the page's own paginator numbers it (it may estimate)
        from deployments.paging import LongListPaginator as HistoryPaginator
    except ImportError:
        from django.core.paginator import Paginator as HistoryPaginator
    last_page = HistoryPaginator(history, HISTORY_PAGE_SIZE).num_pages
    # The admin imports its modules when its URLs are first needed
    # (norn_project/adminsite.py); the sortable columns are read before that.
    django_admin.autodiscover()
    model_admin = django_admin.site._registry[Deployment]
    admin_last = model_admin.paginator(Deployment.objects.all(), model_admin.list_per_page).num_pages
    app_admin_last = model_admin.paginator(Deployment.objects.filter(app=app), model_admin.list_per_page).num_pages
    admin = "/admin/deployments/deployment/"
    one_app = f"app__id__exact={app.pk}"

    def next_link(rows, per_page, number):
        """The query of the "Older"/"Next" link of page `number` (a page that
        starts after the last row of the one before: deployments/paging.py)."""
        last_row = HistoryPaginator(rows, per_page).page(number).object_list[-1]
        return f"page={number + 1}&after={last_row.public_id}"

    middle = max(1, last_page // 2)
    admin_rows = Deployment.objects.order_by("-queued_at", "-id")
    listed = [
        ("apps overview", "/"),
        ("app page, page 1", f"/apps/{app.name}/"),
        ("app page, middle page", f"/apps/{app.name}/?page={middle}"),
        ("app page, middle, Older link", f"/apps/{app.name}/?{next_link(history, HISTORY_PAGE_SIZE, middle)}"),
        ("app page, last page", f"/apps/{app.name}/?page={last_page}"),
        ("app history partial (htmx)", f"/apps/{app.name}/?page={last_page}"),
        # Fetched by the app page once shown: DORA over the app's last 30 and 90 days.
        ("app DORA, 30 days (htmx)", f"/apps/{app.name}/?part=dora"),
        ("app DORA, 90 days (htmx)", f"/apps/{app.name}/?part=dora&window=90d"),
        ("deployment page, newest", f"/deployments/{newest.public_id}/"),
        ("deployment page, oldest", f"/deployments/{oldest.public_id}/"),
        ("rollback page", f"/apps/{app.name}/rollback"),
        ("admin list", admin),
    ]
    for name, position in sortable_columns():
        listed.append((f"admin list by {name}", f"{admin}?o={position}"))
        listed.append((f"admin list by {name}, desc", f"{admin}?o=-{position}"))
    listed += [
        ("admin list, middle page", f"{admin}?p={max(1, admin_last // 2)}"),
        ("admin list, middle, Next",
         f"{admin}?{next_link(admin_rows, model_admin.list_per_page, max(1, admin_last // 2)).replace('page=', 'p=')}"),
        ("admin list, last page", f"{admin}?p={admin_last}"),
        ("admin list, one app", f"{admin}?{one_app}"),
        ("admin list, one app, last p.", f"{admin}?{one_app}&p={app_admin_last}"),
        ("admin list, 1 app, mid. Next",
         f"{admin}?{one_app}&"
         f"{next_link(admin_rows.filter(app=app), model_admin.list_per_page, max(1, app_admin_last // 2)).replace('page=', 'p=')}"),
        ("admin list, failed, one app", f"{admin}?{one_app}&status__exact=failed"),
        ("admin list, search", f"{admin}?q={newest.commit_sha[:12] or newest.ref}"),
        ("admin deployment (steps)", f"{admin}{oldest.pk}/change/"),
        ("admin snapshot list", "/admin/deployments/snapshot/"),
        ("admin app list", "/admin/apps_registry/app/"),
    ]
    if Snapshot.objects.exists():
        listed.append(("admin snapshot", f"/admin/deployments/snapshot/{Snapshot.objects.first().pk}/change/"))
    return app, busiest["n"], listed


def get(client, url, htmx=False):
    response = client.get(url, headers={"HX-Request": "true"} if htmx else {})
    if response.status_code != 200:
        raise SystemExit(f"GET {url} answered {response.status_code}")
    return response


def measure(client, url, warmup, runs, htmx=False):
    """(queries of one request, server times in ms, this process's CPU ms).

    The CPU time is Django's own work (PostgreSQL runs in another process):
    unlike the wall time, it hardly grows when other processes compete for
    the machine.
    """
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(warmup):
        get(client, url, htmx)
    with CaptureQueriesContext(connection) as captured:
        get(client, url, htmx)
    # Read now: the next request's request_started signal empties the log.
    queries = [q["sql"] for q in captured.captured_queries]
    times, cpu = [], []
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        get(client, url, htmx)
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
    return queries, times, cpu


def p95(values):
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def walk(plan):
    yield plan
    for child in plan.get("Plans", ()):
        yield from walk(child)


def explain(sql):
    """EXPLAIN ANALYZE of one captured query: (ms, Seq Scans on big tables, text plan)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
        raw = cursor.fetchone()[0]
        doc = (json.loads(raw) if isinstance(raw, str) else raw)[0]
        scans = sorted({
            node["Relation Name"] for node in walk(doc["Plan"])
            if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in BIG_TABLES
        })
        ms = doc["Execution Time"]
        text = ""
        if ms >= SLOW_QUERY_MS or scans:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            text = "\n".join(row[0] for row in cursor.fetchall())
    return ms, scans, text


def run_pages(client, page_list, warmup, runs):
    results = {}
    for label, url in page_list:
        queries, times, cpu = measure(client, url, warmup, runs, htmx="htmx" in label)
        results[label] = {
            "url": url, "queries": queries, "median": statistics.median(times), "p95": p95(times),
            "cpu": statistics.median(cpu),
        }
    return results


def analyse(results):
    """Adds the EXPLAIN ANALYZE findings to each page's results."""
    for page in results.values():
        page["plans"] = []
        for sql in page["queries"]:
            if not sql.lstrip().upper().startswith("SELECT"):
                continue
            ms, scans, text = explain(sql)
            page["plans"].append({"sql": sql, "ms": ms, "scans": scans, "text": text})


def print_table(small, large, n_small, n_large):
    print(f"{'':<28} {'queries':^15} {'median ms':^17} {'p95 ms':^17} {'at ' + format(n_large, ','):^26}")
    print(f"{'page':<28} {n_small:>6,} {n_large:>8,} {n_small:>7,} {n_large:>9,} {n_small:>7,} {n_large:>9,} "
          f"{'CPU ms':>7} {'DB ms':>7} {'slowest':>8}  verdict")
    print("-" * 130)
    for label, big in large.items():
        few = small.get(label, {"queries": [], "median": 0, "p95": 0})
        db_ms = sum(p["ms"] for p in big["plans"])
        slowest = max((p["ms"] for p in big["plans"]), default=0)
        scans = sorted({s for p in big["plans"] for s in p["scans"]})
        problems = []
        if len(few["queries"]) != len(big["queries"]):
            problems.append("query count grows")
        for stat in ("median", "p95"):
            if big[stat] >= TARGET_MS:
                problems.append(f"{stat} over {TARGET_MS} ms")
        if scans:
            problems.append("Seq Scan on " + ", ".join(scans))
        print(f"{label:<28} {len(few['queries']):>6} {len(big['queries']):>8} "
              f"{few['median']:>7.1f} {big['median']:>9.1f} {few['p95']:>7.1f} {big['p95']:>9.1f} "
              f"{big['cpu']:>7.1f} {db_ms:>7.1f} {slowest:>8.1f}  {'; '.join(problems) or 'ok'}")
    print(f"""
Targets: the same number of queries at both sizes, under {TARGET_MS} ms. Server time: the test client's
request, wall clock. CPU ms: this process's CPU time per request (median), i.e. Django's share. DB ms:
the page's SELECTs run again under EXPLAIN ANALYZE, summed; slowest: the longest of them.""")


def print_plans(results):
    for label, page in results.items():
        flagged = [p for p in page["plans"] if p["text"]]
        print(f"\n=== {label}: GET {page['url']} ({len(page['queries'])} queries) ===")
        if not flagged:
            print(f"no query over {SLOW_QUERY_MS:g} ms and no Seq Scan on {' or '.join(BIG_TABLES)}")
        for plan in flagged:
            why = f"{plan['ms']:.1f} ms" + (f", Seq Scan on {', '.join(plan['scans'])}" if plan["scans"] else "")
            print(f"\n--- {why}\n{plan['sql']}\n\n{plan['text']}")


def prepare(database, fresh, apps_count):
    """Migrates `database` (creating it first when `fresh`), syncs the apps and
    returns (apps, superuser, the four requesting users)."""
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from apps_registry import discovery
    from apps_registry.models import App

    if fresh:
        drop_database(database)
        sh("createdb", "-h", "127.0.0.1", "-U", "postgres", database)
    use_database(database)
    call_command("migrate", verbosity=0)
    report = discovery.sync()
    if report.invalid:
        raise SystemExit(f"invalid bench specs: {report.invalid}")
    apps = list(App.objects.order_by("name"))[:apps_count]
    admin = User.objects.filter(username="bench-admin").first() or User.objects.create_superuser(
        "bench-admin", "bench@example.com", None)
    people = [User.objects.get_or_create(username=name)[0] for name in ("alice", "bob", "carol", "dave")]
    return apps, admin, people


def fill(apps, people, n, chunk, apps_count, t0):
    from django.db import connection

    with connection.cursor() as cursor:
        prepare_load(cursor, apps, [u.pk for u in people])
    return load(1, n, apps_count, t0, n, chunk)


def measure_database(args, database, n, t0, reuse):
    """Loads (unless reused) and measures one database: (pages' results, table counts)."""
    from django.test import Client

    from deployments.models import Deployment

    reused = reuse and database_exists(database)
    apps, admin, people = prepare(database, not reused, args.apps)
    if reused and Deployment.objects.count() != n:
        raise SystemExit(f"--reuse: {database} does not hold {n:,} deployments; run once without --reuse")
    if not reused:
        print(f"loading {n:,} deployments into {database} ...", flush=True)
        took = fill(apps, people, n, args.chunk, args.apps, t0)
    deployments, steps, dsize, ssize = table_counts()
    app, count, page_list = pages()
    how = "reused" if reused else f"loaded in {took:.1f} s with VACUUM ANALYZE"
    print(f"  {deployments:,} deployments ({dsize}), {steps:,} steps ({ssize}), {how}; "
          f"busiest app {app.name}: {count:,}", flush=True)
    client = Client()
    client.force_login(admin)
    return run_pages(client, page_list, args.warmup, args.requests), deployments


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=1_000_000, help="deployments in the end (default 1000000)")
    parser.add_argument("--first", type=int, default=1_000, help="deployments at the first measurement (default 1000)")
    parser.add_argument("--apps", type=int, default=20, help="apps the history is spread over (default 20)")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per page (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per page first (default 3)")
    parser.add_argument("--chunk", type=int, default=100_000, help="deployments per loading transaction")
    parser.add_argument("--explain", action="store_true", help="print the plans of slow queries and of Seq Scans")
    parser.add_argument("--keep", action="store_true", help=f"keep the database {DB} afterwards")
    parser.add_argument("--reuse", action="store_true", help=f"measure the {DB} kept by an earlier --keep")
    parser.add_argument("--database", default=DB, help=f"the full database's name (default {DB}; "
                        f"the small one's is this with _small)")
    args = parser.parse_args()
    big_db, small_db = args.database, args.database + "_small"
    if (not 1 <= args.first < args.deployments or args.apps < 1 or args.requests < 1 or args.warmup < 0
            or args.chunk < 1):
        parser.error("need 1 <= --first < --deployments, --apps >= 1, --requests >= 1, --warmup >= 0, --chunk >= 1")
    if not os.environ.get("NORN_APP_DATABASES_URL"):
        parser.error("set NORN_APP_DATABASES_URL (e.g. from /var/lib/norn-services/apps-database-url)")

    tmp = Path(tempfile.mkdtemp(prefix="norn-bench-history-"))
    os.environ.update({
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{small_db}",
        "NORN_APPS_DIR": str(tmp / "apps"),
        "NORN_WORK_DIR": str(tmp / "work"),
        "NORN_SNAPSHOT_DIR": str(tmp / "snapshots"),
        "NORN_LOG_LEVEL": "WARNING",
        # As in production: with DEBUG on Django also keeps every query.
        "DEBUG": "0",
        "SECRET_KEY": "norn-bench-" + os.urandom(16).hex(),
        # The test client's host.
        "ALLOWED_HOSTS": "testserver",
        "DJANGO_SETTINGS_MODULE": "norn_project.settings",
    })
    # WhiteNoise's note that STATIC_ROOT (collectstatic's target) is absent.
    warnings.filterwarnings("ignore", message="No directory at")
    started = False
    try:
        write_specs(tmp / "apps", args.apps)
        import django

        django.setup()
        from django.utils import timezone

        started = True
        t0 = timezone.now() - datetime.timedelta(days=365)
        load_before = os.getloadavg()[0]
        small, _ = measure_database(args, small_db, args.first, t0, reuse=False)
        large, deployments = measure_database(args, big_db, args.deployments, t0, reuse=args.reuse)
        analyse(large)
        print(f"\n{args.requests} timed requests per page after {args.warmup} warm-up, Django test client "
              f"in this process (DEBUG off), PostgreSQL on 127.0.0.1; {os.cpu_count()} CPUs, load average "
              f"{load_before:.1f} at the start and {os.getloadavg()[0]:.1f} now\n")
        print_table(small, large, args.first, deployments)
        if args.explain:
            print_plans(large)
    finally:
        if started:
            from django.db import connections

            connections.close_all()
            drop_database(small_db)
            if not args.keep:
                drop_database(big_db)
            elif database_exists(big_db):
                print(f"\nkept the database {big_db} (DATABASE_URL=postgres://postgres@127.0.0.1:5432/{big_db})")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
