"""What is live, everywhere (issue 14): the overview shows what serves each
app's traffic and the last deployment when it is another, the history marks
the live row and says what each row was (kind) and why it did not go live,
only the live deployment's page says "is live", and cancelled is a status of
its own that recovery leaves alone. Query counts stay flat."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps_registry.models import App
from deployments import recovery, transitions
from deployments.models import Deployment, DeploymentStatus, Snapshot
from deployments.requests import request_deployment
from tests.support.dashboard import web, operator  # noqa: F401 (fixtures)
from tests.support.dashboard import all_succeeded, make_deployment, page

pytestmark = pytest.mark.django_db


def went_live(app, image, *, ago, subject="", **fields):
    """A deploy that went live `ago` minutes ago (its deploy step succeeded)."""
    deployment = make_deployment(app, commit=image[-1] * 40, image=image, steps=all_succeeded(), ago=ago, **fields)
    Deployment.objects.filter(pk=deployment.pk).update(
        commit_subject=subject, finished_at=timezone.now() - timedelta(minutes=ago))
    deployment.refresh_from_db()
    return deployment


@pytest.fixture
def history(web):
    """web: v1 went live, v2 went live (live now), then a failed deploy, a
    rollback that failed, a restore and a cancelled deploy."""
    v1 = went_live(web, "web:1", ago=50, subject="First version")
    v2 = went_live(web, "web:2", ago=40, subject="Second version with a subject long enough to be cut " * 2)
    failed = make_deployment(web, DeploymentStatus.FAILED, ref="main", ago=30, failed_step="test",
                             error="test failed: sh exited with status 1:\npytest output")
    back = make_deployment(web, DeploymentStatus.FAILED, kind="rollback", rollback_to=v1, ago=20,
                           failed_step="deploy", error="deploy failed: the new container died")
    snapshot = Snapshot.objects.create(deployment=v2, app=web, database="web", path="/x.dump", size=1, sha256="0")
    restore = make_deployment(web, kind="restore", snapshot=snapshot, ago=10)
    cancelled = make_deployment(web, DeploymentStatus.CANCELLED, ref="feature", ago=5, error="cancelled by bob")
    return {"v1": v1, "v2": v2, "failed": failed, "rollback": back, "restore": restore, "cancelled": cancelled}


def row_of(html, deployment):
    return "<tr" + html.split(f'href="/deployments/{deployment.public_id}/"')[0].rsplit("<tr", 1)[1] + \
        html.split(f'href="/deployments/{deployment.public_id}/"')[1].split("</tr>")[0]


def test_live_for_every_app_in_one_query(web, make_app):
    v2 = went_live(web, "web:2", ago=40)
    went_live(web, "web:1", ago=50)
    make_deployment(web, DeploymentStatus.FAILED, ago=1)
    make_app("idle", "app: idle\nrole: worker\n")
    make_app("restored", "app: restored\nrole: worker\n")
    restored = App.objects.get(name="restored")
    make_deployment(restored, kind="restore", image="", ago=3)  # a restore puts no image into service
    with CaptureQueriesContext(connection) as queries:
        live = Deployment.objects.live_per_app()
    assert len(queries) == 1
    assert {app_id: d.pk for app_id, d in live.items()} == {web.pk: v2.pk}
    assert Deployment.objects.live_for(web) == v2


def test_overview_shows_what_serves_traffic_and_the_last_deployment_when_another(operator, history, make_app):
    make_app("idle", "app: idle\nrole: worker\n")
    html = page(operator, "/")
    row = html.split('href="/apps/web/"')[1].split("</tr>")[0]
    live = row.split('data-label="In service"')[1].split("</td>")[0]
    assert f'href="/deployments/{history["v2"].public_id}/"' in live and "● Live" in live
    assert "2" * 12 in live and "Second version with a subject" in live
    assert "healthy at deploy" in live
    since = row.split('data-label="Since"')[1].split("</td>")[0]
    assert history["v2"].finished_at.isoformat()[:16] in since.replace(" ", "T")
    last = row.split('data-label="Last deployment"')[1].split("</td>")[0]
    assert f'href="/deployments/{history["cancelled"].public_id}/"' in last and "Cancelled" in last
    idle = html.split('href="/apps/idle/"')[1].split("</tr>")[0]
    assert "Nothing in service" in idle and "Never deployed" in idle


def test_overview_says_the_last_deployment_is_the_live_one(operator, web):
    went_live(web, "web:1", ago=5)
    row = page(operator, "/").split('href="/apps/web/"')[1].split("</tr>")[0]
    assert "The one in service" in row


def test_overview_queries_do_not_grow_with_apps(operator, web, make_app):
    went_live(web, "web:1", ago=5)
    page(operator, "/")  # discovery's first look
    with CaptureQueriesContext(connection) as few:
        page(operator, "/")
    for name in ("a1", "a2", "a3"):
        make_app(name, f"app: {name}\nrole: worker\n")
        app = App.objects.get(name=name)
        went_live(app, f"{name}:1", ago=9)
        make_deployment(app, DeploymentStatus.FAILED, ago=1)
    page(operator, "/")
    with CaptureQueriesContext(connection) as many:
        html = page(operator, "/")
    assert html.count("● Live") == 4
    assert len(many) == len(few)


def test_history_marks_the_live_row_and_says_what_and_why(operator, history):
    html = page(operator, "/apps/web/")
    table = html.split('<div id="history">')[1]
    assert table.count('class="live"') == 1 and table.count("● Live") == 1
    live = row_of(table, history["v2"])
    assert live.startswith('<tr class="live">') and "● Live" in live
    # The subject under the commit, cut, with the whole of it in the title.
    assert 'title="Second version with a subject long enough' in live and "…</span>" in live
    assert "● Live" not in row_of(table, history["v1"])
    assert "rollback to " + history["v1"].short_id in row_of(table, history["rollback"])
    assert "deploy: the new container died" in row_of(table, history["rollback"])
    restore = row_of(table, history["restore"])
    assert f"restore of snapshot {history['restore'].snapshot_id}" in restore and "HEAD" not in restore
    assert "test: sh exited with status 1:" in row_of(table, history["failed"])
    cancelled = row_of(table, history["cancelled"])
    assert "status-cancelled" in cancelled and "⊘" in cancelled and "cancelled by bob" in cancelled
    for column in ("What", "Why"):
        assert f'<th scope="col">{column}</th>' in table


def test_history_queries_do_not_depend_on_its_rows(operator, web):
    went_live(web, "web:1", ago=50)
    last = make_deployment(web, DeploymentStatus.FAILED, ago=1, failed_step="test", error="test failed: x")
    with CaptureQueriesContext(connection) as plain:
        page(operator, "/apps/web/?page=1")
    target = went_live(web, "web:2", ago=40)
    for n in range(5):
        make_deployment(web, DeploymentStatus.FAILED, kind="rollback", rollback_to=target, ago=30 - n,
                        failed_step="deploy", error="deploy failed: x")
    Deployment.objects.filter(pk=last.pk).update(finished_at=timezone.now())  # still the latest to finish
    with CaptureQueriesContext(connection) as rollbacks:
        html = page(operator, "/apps/web/?page=1")
    assert html.count("rollback to " + target.short_id) == 5
    assert len(rollbacks) == len(plain)
    # No join in the history's row query: the rollback targets are a subquery.
    rows_query = next(q["sql"] for q in rollbacks if '"commit_subject"' in q["sql"])
    assert "rollback_to_public_id" in rows_query and 'JOIN "deployments_deployment"' not in rows_query


def test_only_the_live_deployment_says_it_is_live(operator, history):
    live = page(operator, f"/deployments/{history['v2'].public_id}/")
    assert re.search(r'Image <span class="ident"><code title="web:2">web:2</code>.*?</span> is live', live)
    assert "● Live" in live
    older = page(operator, f"/deployments/{history['v1'].public_id}/")
    assert "is live" not in older and "● Live" not in older
    assert re.search(r'Image <span class="ident"><code title="web:1">web:1</code>.*?</span> was live from', older)
    assert f'href="/deployments/{history["v2"].public_id}/">deploy {history["v2"].short_id}</a> replaced it' in older
    assert "is live" not in page(operator, f"/deployments/{history['failed'].public_id}/")


def test_a_cancelled_deployment_says_so(operator, history):
    html = page(operator, f"/deployments/{history['cancelled'].public_id}/")
    outcome = html.split('id="deployment-outcome"')[1]
    assert "Cancelled</h2>" in outcome and "cancelled by bob" in outcome
    assert "Not deployed" not in outcome and "cancelled before it started" in outcome
    header = html.split('id="deployment-header"')[1].split("</section>")[0]
    assert "status-cancelled" in header and '<span class="kind kind-deploy">deploy</span>' in header


def test_the_header_names_the_kind(operator, history):
    html = page(operator, f"/deployments/{history['rollback'].public_id}/")
    assert f'<span class="kind kind-rollback">rollback to {history["v1"].short_id}</span>' in html


def test_failure_reason_reads_the_row_alone(web):
    reasons = {
        ("failed", "build", "build failed: docker exited with status 1:\nStep 3/5"): "build: docker exited with status 1:",
        ("failed", "clone", "infraspec.yaml is invalid: x.yaml:3: bad\nmore"): "clone: infraspec.yaml is invalid: x.yaml:3: bad",
        ("cancelled", "test", "cancelled by alice (cli)"): "test: cancelled by alice (cli)",
        ("cancelled", "", "cancelled by bob"): "cancelled by bob",
        ("rolled_back", "deploy", "deploy failed: died; rolling back"): "deploy: died; rolling back",
        ("rolled_back", "", ""): "",  # went live, then a rollback replaced it
        ("deployed", "", ""): "",
        ("failed", "migrate", ""): "migrate",
    }
    for (status, step, error), reason in reasons.items():
        deployment = Deployment(app=web, status=status, failed_step=step, error=error)
        with CaptureQueriesContext(connection) as queries:
            assert deployment.failure_reason == reason, (status, step, error)
        assert not queries


def test_recovery_leaves_cancelled_deployments_alone_and_the_app_is_free(make_app):
    make_app("calm", "app: calm\nrole: worker\n")
    deployment = request_deployment("calm")
    assert transitions.claim(deployment.pk, "gone:1:x")
    transitions.finish(deployment.pk, DeploymentStatus.CANCELLED, "cancelled by tester", failed_step="build")
    Deployment.objects.filter(pk=deployment.pk).update(heartbeat_at=timezone.now() - timedelta(days=1))
    assert recovery.recover() == []
    assert Deployment.objects.get(pk=deployment.pk).status == "cancelled"
    # cancelled is terminal: the one-in-flight constraint lets the next one run.
    following = request_deployment("calm")
    assert transitions.claim(following.pk, "here:2:y")


def test_recovery_names_the_step_that_was_running(make_app):
    make_app("lost", "app: lost\nrole: worker\n")
    deployment = request_deployment("lost")
    assert transitions.claim(deployment.pk, "elsewhere:4242:abcd")
    assert transitions.start_step(deployment.pk, "elsewhere:4242:abcd", "clone")
    Deployment.objects.filter(pk=deployment.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert recovery.recover() == [deployment.pk]
    deployment.refresh_from_db()
    assert (deployment.status, deployment.failed_step) == ("failed", "clone")
    assert deployment.failure_reason == "clone: norn restarted during deployment"


def test_earlier_cancels_become_cancelled_and_failures_name_their_step(web):
    """Migration 0013's backfill, on rows as earlier versions wrote them."""
    import importlib

    backfill = importlib.import_module("deployments.migrations.0013_truth_statuses_commit_context").BACKFILL
    cancelled = make_deployment(web, DeploymentStatus.FAILED, error="cancelled by alice (cli)",
                                steps={"build": ("failed", 1, {"error": "cancelled by alice (cli)"})})
    Deployment.objects.filter(pk=cancelled.pk).update(cancel_requested_at=timezone.now(),
                                                      cancel_requested_by="alice (cli)")
    failed = make_deployment(web, DeploymentStatus.FAILED, error="test failed: exit 1",
                             steps={"test": ("failed", 1), "cleanup": ("failed", 1)})
    # Asked to cancel, but it failed for a reason of its own first: still failed.
    raced = make_deployment(web, DeploymentStatus.FAILED, error="clone failed: no such branch",
                            steps={"clone": ("failed", 1)})
    Deployment.objects.filter(pk=raced.pk).update(cancel_requested_at=timezone.now(), cancel_requested_by="bob")
    went_live(web, "web:1", ago=5)
    with connection.cursor() as cursor:
        cursor.execute(backfill)
    found = {d.pk: (d.status, d.failed_step) for d in Deployment.objects.all()}
    assert found[cancelled.pk] == ("cancelled", "build")
    assert found[failed.pk] == ("failed", "test")
    assert found[raced.pk] == ("failed", "clone")
    assert {v for k, v in found.items() if k not in (cancelled.pk, failed.pk, raced.pk)} == {("deployed", "")}


def test_the_admin_shows_the_commit_context_read_only(admin_client, web):
    deployment = went_live(web, "web:1", ago=5, subject="Admin sees <this>")
    Deployment.objects.filter(pk=deployment.pk).update(commit_author="Ada Lovelace")
    html = page(admin_client, f"/admin/deployments/deployment/{deployment.pk}/change/")
    assert "Admin sees &lt;this&gt;" in html and "Ada Lovelace" in html
    for field in ("commit_subject", "commit_author", "commit_time", "failed_step"):
        assert f'name="{field}"' not in html


def test_a_rollout_stopped_by_a_cancel_can_be_rolled_back_and_stays_cancelled(web):
    from deployments import rollback

    live = went_live(web, "web:1", ago=50)
    stopped = make_deployment(web, DeploymentStatus.CANCELLED, commit="2" * 40, image="web:2", ago=5,
                              failed_step="deploy", error="cancelled by alice (cli)",
                              steps={"deploy": ("failed", 3, {"error": "cancelled by alice (cli)"})})
    # Kubernetes goes on with what it accepted: the rollback page treats it as a broken rollout.
    assert rollback.failed_rollout(web) == stopped
    assert rollback.choose(web) == (live, stopped)
    back = rollback.queue(web, live, stopped, name="tester")
    assert transitions.mark_rolled_back(stopped.pk, back) is False
    assert Deployment.objects.get(pk=stopped.pk).status == "cancelled"
