"""The rollback and restore pages: what they offer, confirm and queue."""

from pathlib import Path
import re

import pytest

from deployments import appdb
from deployments.models import Deployment, DeploymentStatus, Snapshot, StepStatus
from tests.support.dashboard import web, viewer, operator  # noqa: F401 (fixtures)
from tests.support.dashboard import make_deployment, all_succeeded, page, write_snapshot

pytestmark = pytest.mark.django_db


def test_rollback_page_puts_back_a_chosen_earlier_image(operator, web):
    older = make_deployment(web, commit="1" * 40, image="web:111", ago=60)
    previous = make_deployment(web, commit="2" * 40, image="web:222", ago=30)
    live = make_deployment(web, commit="3" * 40, image="web:333")
    html = page(operator, "/apps/web/rollback")
    assert 'In service now: <span class="ident"><code title="web:333">web:333</code>' in html
    assert re.findall(r'name="to" value="([0-9a-f-]+)"', html) == [str(previous.public_id), str(older.public_id)]
    response = operator.post("/apps/web/rollback", {"to": str(older.public_id)})
    rollback = Deployment.objects.get(kind="rollback")
    assert response.status_code == 302 and response["Location"] == f"/deployments/{rollback.public_id}/"
    assert (rollback.rollback_to, rollback.replaces, rollback.requested_via) == (older, live, "dashboard")
    assert rollback.requested_by == operator.user
    # Its page: one deploy step, what it puts back and what it replaces.
    html = page(operator, response["Location"])
    assert re.findall(r'<li class="step step-(\w+)" id="step-(\w+)"', html) == [("pending", "deploy")]
    assert "Rollback of web" in html and older.short_id in html and live.short_id in html


def test_rollback_page_offers_the_snapshot_that_matches_the_older_code(operator, web):
    older = make_deployment(web, commit="1" * 40, image="web:111", ago=60)
    live = make_deployment(web, commit="2" * 40, image="web:222", ago=30)
    # live ran migrations: its pre-migration snapshot is the database older's code knew.
    snapshot = Snapshot.objects.create(deployment=live, app=web, database="web_db", path="/x", size=1, sha256="0")
    html = page(operator, "/apps/web/rollback")
    assert f'href="/snapshots/{snapshot.pk}/restore"' in html
    assert "Migrations ran after this version went live" in html
    assert "Data written since then is lost" in html
    assert older.short_id in html


def test_rollback_page_says_when_there_is_nothing_to_roll_back_to(operator, web):
    make_deployment(web, image="web:only")
    html = page(operator, "/apps/web/rollback")
    assert "nothing to roll back to" in html and 'name="to"' not in html
    response = operator.post("/apps/web/rollback")
    assert "cannot roll back web" in response.content.decode()
    assert not Deployment.objects.filter(kind="rollback").exists()


def test_rollback_and_restore_need_the_start_permission(viewer, web):
    deployment = make_deployment(web, image="web:1")
    snapshot = Snapshot.objects.create(deployment=deployment, app=web, database="web", path="/x", size=1, sha256="0")
    for url in ("/apps/web/rollback", f"/snapshots/{snapshot.pk}/restore"):
        assert viewer.get(url).status_code == 403
        assert viewer.post(url).status_code == 403
    assert Deployment.objects.count() == 1


def test_restore_page_confirms_then_queues_the_restore(operator, web, tmp_path):
    snapshot = write_snapshot(tmp_path, web, make_deployment(web))
    html = page(operator, f"/snapshots/{snapshot.pk}/restore")
    assert "Restore database web_db?" in html and snapshot.created_at.strftime("%Y-%m-%d %H:%M:%S") in html
    assert "is lost" in html and appdb.restore_command("web_db", snapshot.path, app="web") in html
    assert Deployment.objects.filter(kind="restore").count() == 0  # looking changes nothing
    response = operator.post(f"/snapshots/{snapshot.pk}/restore")
    restore = Deployment.objects.get(kind="restore")
    assert response["Location"] == f"/deployments/{restore.public_id}/"
    assert (restore.snapshot, restore.requested_by, restore.requested_via) == (snapshot, operator.user, "dashboard")
    html = page(operator, response["Location"])
    assert [name for _, name in re.findall(r'<li class="step step-(\w+)" id="step-(\w+)"', html)] == ["verify", "snapshot", "restore"]
    assert "Snapshot restore of web" in html


def test_restore_of_a_corrupted_snapshot_is_refused_on_the_page(operator, web, tmp_path):
    snapshot = write_snapshot(tmp_path, web, make_deployment(web))
    Path(snapshot.path).write_bytes(b"PGDMP tampered!")
    response = operator.post(f"/snapshots/{snapshot.pk}/restore")
    assert response.status_code == 200 and "is corrupted" in response.content.decode()
    assert not Deployment.objects.filter(kind="restore").exists()


def test_finished_restore_offers_to_undo_it(operator, web, tmp_path):
    snapshot = write_snapshot(tmp_path, web, make_deployment(web))
    restore = make_deployment(web, kind="restore", snapshot=snapshot,
                              steps={name: (StepStatus.SUCCEEDED, 1) for name in ("verify", "snapshot", "restore")})
    undo = Snapshot.objects.create(deployment=restore, app=web, database="web_db", path="/s/pre.dump", size=1,
                                   sha256="0", kind=Snapshot.Kind.PRE_RESTORE)
    outcome = page(operator, f"/deployments/{restore.public_id}/_outcome")
    assert "Restored" in outcome and f'href="/snapshots/{undo.pk}/restore"' in outcome


def test_failed_migration_links_to_the_restore_page(operator, web, tmp_path):
    deployment = make_deployment(web, DeploymentStatus.FAILED,
                                 steps={**all_succeeded(), "migrate": (StepStatus.FAILED, 1)})
    snapshot = write_snapshot(tmp_path, web, deployment)
    outcome = page(operator, f"/deployments/{deployment.public_id}/_outcome")
    assert f'href="/snapshots/{snapshot.pk}/restore"' in outcome


def test_rollback_page_says_when_the_matching_snapshot_was_pruned(operator, web):
    older = make_deployment(web, commit="1" * 40, image="web:111", ago=60)
    live = make_deployment(web, commit="2" * 40, image="web:222", ago=30)
    snapshot = Snapshot.objects.create(deployment=live, app=web, database="web_db", path="/x", size=1, sha256="0")
    from django.utils import timezone

    Snapshot.objects.filter(pk=snapshot.pk).update(pruned_at=timezone.now())
    snapshot.refresh_from_db()
    html = page(operator, "/apps/web/rollback")
    assert older.short_id in html
    assert f"snapshot {snapshot.pk} was pruned on {snapshot.pruned_at:%Y-%m-%d %H:%M} UTC: it can no longer be restored" in html
    assert f'href="/snapshots/{snapshot.pk}/restore"' not in html
