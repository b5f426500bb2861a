"""Retention never prunes the snapshot an app's newest failed migration points
to until a later migration of the app succeeds; once pruned, every page and
command that names it says it was pruned and when, and none offers to
restore it. Real pg_dump snapshots of a real database."""

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from deployments import deferred, pipeline
from deployments.models import Snapshot
from deployments.requests import DeployRequestError, request_deployment, request_restore
from tests.support.dashboard import user_with
from tests.support.git_servers import make_repo

pytestmark = pytest.mark.django_db(transaction=True)

DOCKERFILE = "FROM norn-psql:1\nCMD [\"sh\", \"-c\", \"echo run\"]\n"


def spec(url, db, migrate):
    text = (
        f"app: keep\nrole: cron\nrepo:\n  url: {url}\nbuild: {{}}\nschedule: '0 1 * * *'\ncommand: echo run\n"
        f"services:\n  postgres:\n    database: {db}\nsnapshots:\n  retain: 1\n"
    )
    return text + (f"migrations:\n  command: {migrate!r}\n" if migrate else "")


def deploy(make_app, repo, db, migrate, version):
    """Deploy a new commit of `keep` with `migrate` as its migration (None: none)."""
    make_app("keep", spec(repo.file_url, db, migrate))
    repo.commit({"Dockerfile": DOCKERFILE + f"ENV V={version}\n"}, f"v{version}")
    deployment = request_deployment("keep")
    pipeline.execute(deployment.pk)
    deferred.wait()
    deployment.refresh_from_db()
    return deployment, Snapshot.objects.get(deployment=deployment)


@pytest.fixture
def history(make_app, tmp_path, norn_dirs, busybox_image, app_database):
    """v1 migrates, v2's migration fails, v3 has no migration (retain 1)."""
    db = app_database("keep")
    repo = make_repo(tmp_path / "repos", "keep", {"Dockerfile": DOCKERFILE})
    v1, s1 = deploy(make_app, repo, db, "true", 1)
    assert v1.status == "deployed", v1.error
    v2, s2 = deploy(make_app, repo, db, "echo half-way; exit 1", 2)
    assert v2.status == "failed" and f"Restore snapshot {s2.pk}" in v2.error
    v3, s3 = deploy(make_app, repo, db, None, 3)
    assert v3.status == "deployed", v3.error
    assert v3.steps.get(name="migrate").status == "skipped"
    return repo, db, (v1, s1), (v2, s2), (v3, s3)


def test_the_failed_migrations_snapshot_outlives_retain_until_a_later_migration_succeeds(history, make_app, client):
    repo, db, (v1, s1), (v2, s2), (v3, s3) = history
    # retain is 1 and s2 is neither the newest nor a live deployment's: only
    # the failed migration keeps it.
    for snapshot in (s1, s2, s3):
        snapshot.refresh_from_db()
        assert snapshot.pruned_at is None and Path(snapshot.path).exists(), snapshot.pk

    v4, s4 = deploy(make_app, repo, db, "true", 4)
    assert v4.status == "deployed", v4.error
    s2.refresh_from_db()
    assert s2.pruned_at is not None and not Path(s2.path).exists()
    # s3 is the previous live deployment's; s1's deployment is neither of the last two live.
    s1.refresh_from_db()
    s3.refresh_from_db()
    assert s1.pruned_at is not None and not Path(s1.path).exists()
    assert s3.pruned_at is None and Path(s3.path).exists()
    assert Snapshot.objects.filter(app=v1.app).disk_usage() == {"count": 2, "bytes": s3.size + s4.size}
    when = f"{s2.pruned_at:%Y-%m-%d %H:%M}"

    client.force_login(user_with("view_deployment", "start_deployment"))
    # The failed deployment's page: pruned, when, and no restore offered.
    html = client.get(v2.get_absolute_url()).content.decode()
    assert f"Snapshot {s2.pk} was pruned on {when} UTC" in html
    assert f'href="/snapshots/{s2.pk}/restore"' not in html
    assert "No snapshot was taken" not in html
    # The snapshot's own restore page says the same and has no form.
    html = client.get(f"/snapshots/{s2.pk}/restore").content.decode()
    assert f"Snapshot {s2.pk} was pruned on {when} UTC" in html
    assert 'action="/snapshots/' not in html
    # Posting anyway queues nothing.
    html = client.post(f"/snapshots/{s2.pk}/restore").content.decode()
    assert "was pruned on" in html
    # The app page lists it as pruned, with no restore link.
    html = client.get("/apps/keep/").content.decode()
    assert f"Snapshot {s2.pk} was pruned on {when} UTC" in html
    assert f'href="/snapshots/{s2.pk}/restore"' not in html
    assert f'href="/snapshots/{s3.pk}/restore"' in html

    # manage.py restore_snapshot: the same words, a non-zero exit, no question asked.
    with pytest.raises(CommandError, match=rf"^Snapshot {s2.pk} was pruned on {when} UTC") as refused:
        call_command("restore_snapshot", str(s2.pk), stdout=io.StringIO())
    assert refused.value.returncode == 2
    with pytest.raises(DeployRequestError, match=rf"Snapshot {s2.pk} was pruned on {when} UTC"):
        request_restore(s2)
    assert not v1.app.deployments.filter(kind="restore").exists()


def test_a_later_failed_migration_takes_over_the_protection(history, make_app):
    repo, db, (v1, s1), (v2, s2), (v3, s3) = history
    # v4's migration fails too: now its snapshot is the one to keep, and v2's
    # is no longer the newest failed migration's.
    v4, s4 = deploy(make_app, repo, db, "exit 2", 4)
    assert v4.status == "failed"
    v5, s5 = deploy(make_app, repo, db, None, 5)
    assert v5.status == "deployed", v5.error
    s2.refresh_from_db()
    s4.refresh_from_db()
    assert s2.pruned_at is not None
    assert s4.pruned_at is None and Path(s4.path).exists()
