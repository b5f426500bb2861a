"""DORA's changes (models.DoraChange), kept by triggers (migration 0017),
against the query they replaced: on random histories, written in any order,
ended out of queue order, replaced by rollbacks, moved and deleted, the
figures of every app and window are those the deployments themselves give,
and the rows are those a rebuild from scratch writes."""

import random
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from deployments import dora, transitions
from deployments.models import Deployment, DeploymentStatus, DoraChange, Step, StepStatus
from tests.support.dashboard import web  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(microsecond=0)
DAY = timedelta(days=1)
S = DeploymentStatus

# The figures straight from the deployments: the query dora.py ran before
# DoraChange (each window ordered and self-joined at each view), the reference.
REFERENCE_SQL = """
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


ENDS = [S.DEPLOYED] * 5 + [S.FAILED, S.ROLLED_BACK, S.ROLLED_BACK, S.CANCELLED, S.QUEUED, S.QUEUED]


def reference(app, window, now):
    since = now - timedelta(days=dora.WINDOWS[window])
    with connection.cursor() as cursor:
        cursor.execute(REFERENCE_SQL, {"since": since, "app": app.pk})
        row = cursor.fetchone()
    return dora.figures(row[1:] if row else None, window)


def rows():
    return sorted(DoraChange.objects.values_list(
        "deployment_id", "app_id", "kind", "queued_at", "finished_at", "went_live",
        "lead_seconds", "failed", "restore_seconds"))


def assert_as_the_deployments_say(apps):
    for app in apps:
        for window in dora.WINDOWS:
            assert dora.for_app(app, window, NOW) == reference(app, window, NOW), (app.name, window)
    kept = rows()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT deployments_dora_rebuild()")
        assert rows() == kept
        transaction.set_rollback(True)


def random_deployment(rnd, app):
    kind = rnd.choice(["deploy"] * 6 + ["rollback", "restore"])
    deployment = transitions.create(app, "HEAD", via="cli", runtime="docker", kind=kind)
    queued = NOW - rnd.uniform(0, 100) * DAY
    status = rnd.choice(ENDS)
    finished = None if status == S.QUEUED else queued + rnd.uniform(0, 3) * DAY
    commit = None if rnd.random() < 0.2 or finished is None else finished - rnd.uniform(0, 2) * DAY
    # One deployment in four is queued at the same instant as another: ties go by id.
    Deployment.objects.filter(pk=deployment.pk).update(
        status=status, queued_at=queued.replace(second=0, microsecond=0) if rnd.random() < 0.25 else queued,
        finished_at=finished, commit_time=commit)
    if kind != "restore":
        Step.objects.filter(deployment=deployment, name="deploy").update(
            status=rnd.choice([StepStatus.SUCCEEDED] * 3 + [StepStatus.FAILED]))
    return deployment


def mutate(rnd, deployments):
    """What happens to deployments after they end: a rollback replaces one, an
    operator deletes one, a recovery fails one, a deploy step is corrected."""
    deployment = rnd.choice(deployments)
    what = rnd.randrange(5)
    if what == 0:
        Deployment.objects.filter(pk=deployment.pk, status=S.DEPLOYED).update(status=S.ROLLED_BACK)
    elif what == 1:
        Deployment.objects.filter(pk=deployment.pk).delete()
        deployments.remove(deployment)
    elif what == 2:
        Deployment.objects.filter(pk=deployment.pk, finished_at__isnull=True).update(
            status=S.FAILED, finished_at=NOW - rnd.uniform(0, 10) * DAY)
    elif what == 3:
        Step.objects.filter(deployment=deployment, name="deploy").update(
            status=rnd.choice([StepStatus.SUCCEEDED, StepStatus.FAILED]))
    else:
        Deployment.objects.filter(pk=deployment.pk).update(queued_at=NOW - rnd.uniform(0, 100) * DAY)


@pytest.mark.parametrize("seed", range(6))
def test_random_histories_give_the_figures_of_the_deployments(web, make_app, seed):  # noqa: F811
    from apps_registry.models import App

    make_app("api", "image: api\n")
    apps = [web, App.objects.get(name="api")]
    rnd = random.Random(seed)
    deployments = [random_deployment(rnd, rnd.choice(apps)) for _ in range(120)]
    assert DoraChange.objects.filter(kind="deploy", failed=True).exists()  # the history has failed changes
    assert_as_the_deployments_say(apps)
    for _ in range(4):
        for _ in range(15):
            mutate(rnd, deployments)
        assert_as_the_deployments_say(apps)


def test_a_change_ended_out_of_queue_order_becomes_the_next_change(web):  # noqa: F811
    """A rollback queued after a deploy that is still running ends first (it
    has priority); when the deploy ends, it is the live deploy's next change,
    not the rollback: the figures follow queue order, as they always did."""
    live = random_deployment(random.Random(0), web)
    Deployment.objects.filter(pk=live.pk).update(
        kind="deploy", status=S.DEPLOYED, queued_at=NOW - 3 * DAY, finished_at=NOW - 3 * DAY, commit_time=None)
    Step.objects.filter(deployment=live, name="deploy").update(status=StepStatus.SUCCEEDED)
    running = transitions.create(web, "HEAD", via="cli", runtime="docker")
    Deployment.objects.filter(pk=running.pk).update(queued_at=NOW - 2 * DAY, status=S.DEPLOYING)
    rollback = transitions.create(web, "HEAD", via="cli", runtime="docker", kind="rollback")
    Deployment.objects.filter(pk=rollback.pk).update(
        queued_at=NOW - DAY, status=S.DEPLOYED, finished_at=NOW - DAY)
    Step.objects.filter(deployment=rollback, name="deploy").update(status=StepStatus.SUCCEEDED)
    assert DoraChange.objects.get(deployment_id=live.pk).failed
    Deployment.objects.filter(pk=running.pk).update(status=S.DEPLOYED, finished_at=NOW)
    Step.objects.filter(deployment=running, name="deploy").update(status=StepStatus.SUCCEEDED)
    assert not DoraChange.objects.get(deployment_id=live.pk).failed
    assert dora.for_app(web, "7d", NOW) == reference(web, "7d", NOW)


@pytest.mark.django_db(transaction=True)
def test_changes_of_one_app_ending_at_once_take_turns(web):  # noqa: F811
    """A deploy's end and the end of the rollback queued after it, in two
    transactions at once: the rollback's trigger waits for the deploy's
    transaction (an advisory lock per app), then sees the deploy and marks
    it a failed change. Without the wait, neither would see the other."""
    import threading

    from django.db import connections

    deploy = transitions.create(web, "HEAD", via="cli", runtime="docker")
    rollback = transitions.create(web, "HEAD", via="cli", runtime="docker", kind="rollback")
    for deployment, queued in ((deploy, NOW - 2 * DAY), (rollback, NOW - DAY)):
        Deployment.objects.filter(pk=deployment.pk).update(queued_at=queued)
        Step.objects.filter(deployment=deployment, name="deploy").update(status=StepStatus.SUCCEEDED)
    deploy_ended, may_commit, errors = threading.Event(), threading.Event(), []

    def end_deploy():
        try:
            with transaction.atomic():
                Deployment.objects.filter(pk=deploy.pk).update(status=S.DEPLOYED, finished_at=NOW - 2 * DAY)
                deploy_ended.set()
                may_commit.wait(10)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    def end_rollback():
        try:
            Deployment.objects.filter(pk=rollback.pk).update(status=S.DEPLOYED, finished_at=NOW - DAY)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    first = threading.Thread(target=end_deploy)
    first.start()
    assert deploy_ended.wait(10)
    second = threading.Thread(target=end_rollback)
    second.start()
    waiting = 0
    for _ in range(200):  # until the rollback's trigger waits for the lock
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            waiting = cursor.fetchone()[0]
        if waiting:
            break
        second.join(0.02)
    may_commit.set()
    first.join(10)
    second.join(10)
    assert not errors and waiting == 1
    assert DoraChange.objects.get(deployment_id=deploy.pk).failed
    assert dora.for_app(web, "7d", NOW) == reference(web, "7d", NOW)
