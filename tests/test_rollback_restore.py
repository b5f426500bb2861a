"""When a deploy goes wrong: snapshot restores on a real PostgreSQL database,
rollbacks (manual, chosen, automatic), the lock they share with deploys, and
snapshot retention."""

import subprocess
from pathlib import Path

import psycopg
import pytest

from apps_registry.spec import Spec
from deployments import appdb, deferred, pipeline, retention, transitions
from deployments.models import CronJob, Deployment, Snapshot
from deployments.requests import DeployRequestError, request_deployment, request_restore, request_rollback
from tests.support.fake_kube_controller import EXIT_AFTER_ENV
from tests.support.fake_kubernetes import FakeKubernetes
from tests.support.git_servers import make_repo

pytestmark = pytest.mark.django_db(transaction=True)

DOCKERFILE = "FROM norn-psql:1\nCMD [\"sh\", \"-c\", \"echo run\"]\n"


def sql(db, *statements):
    with psycopg.connect(appdb.database_url(db), autocommit=True) as conn:
        result = None
        for statement in statements:
            result = conn.execute(statement)
        return result.fetchall() if result is not None and result.description else None


def fingerprint(db):
    """Row count and a checksum of every table's rows, per table."""
    tables = [r[0] for r in sql(db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
    return {
        table: sql(db, f'SELECT count(*), md5(coalesce(string_agg(t::text, \'|\' ORDER BY t::text), \'\')) FROM "{table}" t')[0]
        for table in tables
    }


def run(deployment):
    pipeline.execute(deployment.pk)
    deferred.wait()
    deployment.refresh_from_db()
    return deployment


def cron_spec(name, url, database=None, migrate=None, retain=None):
    text = f"app: {name}\nrole: cron\nrepo:\n  url: {url}\nbuild: {{}}\nschedule: '0 1 * * *'\ncommand: echo run\n"
    if database:
        text += f"services:\n  postgres:\n    database: {database}\n"
    if migrate:
        text += f"migrations:\n  command: {migrate!r}\n"
    if retain:
        text += f"snapshots:\n  retain: {retain}\n"
    return text


@pytest.fixture
def shop(make_app, app_database, tmp_path, norn_dirs, busybox_image):
    """A cron app with a database of real data and a migration that rewrites it."""
    db = app_database("shop")
    sql("postgres", f'CREATE DATABASE "{db}"')
    sql(db,
        "CREATE TABLE customers (id int PRIMARY KEY, name text, email text)",
        "INSERT INTO customers SELECT i, 'customer ' || i, 'c' || i || '@example.com' FROM generate_series(1, 500) i",
        "CREATE TABLE orders (id serial PRIMARY KEY, customer int REFERENCES customers, total numeric)",
        "INSERT INTO orders (customer, total) SELECT 1 + i % 500, i * 1.5 FROM generate_series(1, 2000) i")
    migration = (
        "psql -v ON_ERROR_STOP=1 -c 'ALTER TABLE customers DROP COLUMN email' "
        "-c 'DELETE FROM orders WHERE total > 1000' -c 'UPDATE customers SET name = upper(name)' "
        "-c 'CREATE TABLE audit (id int)'"
    )
    repo = make_repo(tmp_path / "repos", "shop", {"Dockerfile": DOCKERFILE})
    make_app("shop", cron_spec("shop", repo.file_url, database=db, migrate=migration))
    return db


def test_restore_brings_back_exactly_the_pre_migration_data(shop, deploy_now):
    before = fingerprint(shop)
    deployment = deploy_now("shop")
    assert deployment.status == "deployed", deployment.error
    migrated = fingerprint(shop)
    assert migrated != before and "audit" in migrated
    snapshot = Snapshot.objects.get(deployment=deployment)
    assert snapshot.kind == "pre-migration"

    restore = run(request_restore(snapshot, name="tester"))
    assert restore.status == "deployed", restore.error
    assert restore.kind == "restore" and restore.snapshot == snapshot
    assert [s.name for s in restore.steps.all()] == ["verify", "snapshot", "restore"]
    # Every table of the snapshot is back exactly; the table the migration
    # created is not in the snapshot: it is left, and the output says so.
    restored = fingerprint(shop)
    assert restored.pop("audit") == (0, "d41d8cd98f00b204e9800998ecf8427e")
    assert restored == before
    assert "were left in place: public.audit" in restore.steps.get(name="restore").output
    assert restore.requested_by_label == "tester via cli"
    # Restored as the app's role: the app can still use what came back.
    owners = {r[0] for r in sql(shop, "SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")}
    assert owners == {appdb.role_name("shop")}

    # The restore took a snapshot of what it replaced: restoring that undoes it.
    undo = Snapshot.objects.get(deployment=restore, kind="pre-restore")
    assert run(request_restore(undo)).status == "deployed"
    assert fingerprint(shop) == migrated


def test_corrupted_snapshot_is_refused_and_nothing_changes(shop, deploy_now):
    deployment = deploy_now("shop")
    snapshot = Snapshot.objects.get(deployment=deployment)
    migrated = fingerprint(shop)
    path = Path(snapshot.path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DeployRequestError, match=f"cannot restore snapshot {snapshot.pk}: snapshot file {path} is corrupted"):
        request_restore(snapshot)
    assert Deployment.objects.filter(kind="restore").count() == 0

    # Corrupted after it was queued: the verify step stops it.
    path.write_bytes(bytes(data[:100]))
    Snapshot.objects.filter(pk=snapshot.pk).update(size=snapshot.size)  # as recorded
    restore = transitions.create(snapshot.app, "HEAD", kind="restore", snapshot=snapshot)
    restore = run(restore)
    assert restore.status == "failed"
    assert "is 100 bytes, but" in restore.error and "nothing was changed" in restore.error
    assert dict(restore.steps.values_list("name", "status")) == {"verify": "failed", "snapshot": "skipped", "restore": "skipped"}
    assert fingerprint(shop) == migrated

    path.unlink()
    with pytest.raises(DeployRequestError, match="is missing"):
        request_restore(snapshot)


def test_a_restore_that_fails_part_way_changes_nothing(shop, deploy_now):
    deployment = deploy_now("shop")
    snapshot = Snapshot.objects.get(deployment=deployment)
    migrated = fingerprint(shop)
    # A dump cut short whose checksum matches (as if written that way): it
    # passes verification, and pg_restore fails in the middle.
    path = Path(snapshot.path)
    truncated = path.read_bytes()[: path.stat().st_size * 2 // 3]
    path.write_bytes(truncated)
    import hashlib

    Snapshot.objects.filter(pk=snapshot.pk).update(size=len(truncated), sha256=hashlib.sha256(truncated).hexdigest())
    snapshot.refresh_from_db()
    restore = run(request_restore(snapshot))
    assert restore.status == "failed"
    assert restore.error.startswith("restore failed: pg_restore exited with status 1")
    assert fingerprint(shop) == migrated


def cron_history(make_app, tmp_path, name="job", retain=None, database=None):
    """An app deployed at two commits: (first, second) deployments."""
    repo = make_repo(tmp_path / "repos", name, {"Dockerfile": DOCKERFILE})
    make_app(name, cron_spec(name, repo.file_url, database=database, retain=retain))
    first = run(request_deployment(name))
    repo.commit({"Dockerfile": DOCKERFILE + "ENV V=2\n"}, "v2")
    second = run(request_deployment(name))
    assert (first.status, second.status) == ("deployed", "deployed"), (first.error, second.error)
    return repo, first, second


def test_rollback_to_the_previous_image_is_recorded(make_app, tmp_path, norn_dirs, busybox_image):
    _, first, second = cron_history(make_app, tmp_path)
    rollback = request_rollback("job", name="alice", via="cli")
    assert (rollback.kind, rollback.rollback_to, rollback.replaces) == ("rollback", first, second)
    assert rollback.priority == 0
    rollback = run(rollback)
    assert rollback.status == "deployed", rollback.error
    assert rollback.image == first.image and rollback.commit_sha == first.commit_sha
    assert [s.name for s in rollback.steps.all()] == ["deploy"]
    assert CronJob.objects.get(app__name="job").image == first.image
    second.refresh_from_db()
    assert second.status == "rolled_back"
    event = second.events.get(kind="deploy.rolled_back")
    assert event.payload["rolled_back_by"] == str(rollback.public_id)
    # Rolling back again goes to the other image: the newest one not in service.
    assert request_rollback("job").rollback_to == second


def test_rollback_to_a_chosen_deployment(make_app, tmp_path, norn_dirs, busybox_image):
    repo, first, second = cron_history(make_app, tmp_path)
    with pytest.raises(DeployRequestError, match="is already in service"):
        request_rollback("job", second)
    assert run(request_rollback("job", first)).status == "deployed"


def test_nothing_to_roll_back_to_is_refused(make_app, tmp_path, norn_dirs, busybox_image):
    repo = make_repo(tmp_path / "repos", "lonely", {"Dockerfile": DOCKERFILE})
    make_app("lonely", cron_spec("lonely", repo.file_url))
    with pytest.raises(DeployRequestError, match="cannot roll back lonely: lonely has no earlier successful deployment"):
        request_rollback("lonely")
    run(request_deployment("lonely"))
    with pytest.raises(DeployRequestError, match="no earlier successful deployment with another image"):
        request_rollback("lonely")
    assert not Deployment.objects.filter(kind="rollback").exists()


def test_rollback_waits_for_a_deploy_in_flight_and_goes_before_queued_deploys(make_app, tmp_path, norn_dirs, busybox_image):
    _, first, second = cron_history(make_app, tmp_path)
    running = request_deployment("job")
    assert transitions.claim(running.pk, "host:1:a")
    waiting_deploy = request_deployment("job")
    rollback = request_rollback("job")
    # The same lock as deploys: it cannot start while one is in flight...
    assert transitions.claim(rollback.pk, "host:2:b") is False
    assert Deployment.objects.get(pk=rollback.pk).status == "queued"
    transitions.finish(running.pk, "failed", "test")
    # ...and it goes first once the app is free.
    assert transitions.next_queued(rollback.app_id) == rollback.pk
    assert transitions.claim(waiting_deploy.pk, "host:2:b") is False
    assert transitions.claim(rollback.pk, "host:2:b") is True


def test_retention_keeps_the_newest_and_the_current_and_previous(make_app, tmp_path, norn_dirs, busybox_image, app_database):
    db = app_database("keep")
    repo = make_repo(tmp_path / "repos", "keep", {"Dockerfile": DOCKERFILE})
    make_app("keep", cron_spec("keep", repo.file_url, database=db, retain=2))
    deployments = []
    for i in range(4):
        repo.commit({"Dockerfile": DOCKERFILE + f"ENV V={i}\n"}, f"v{i}")
        deployments.append(run(request_deployment("keep")))
    snapshots = list(Snapshot.objects.filter(app__name="keep").kept().order_by("created_at"))
    assert [s.deployment_id for s in snapshots] == [d.pk for d in deployments[2:]]
    assert all(Path(s.path).exists() for s in snapshots)
    # The pruned ones keep their rows, saying when their files were removed.
    pruned = list(Snapshot.objects.filter(app__name="keep", pruned_at__isnull=False).order_by("created_at"))
    assert [s.deployment_id for s in pruned] == [d.pk for d in deployments[:2]]
    assert not any(Path(s.path).exists() for s in pruned)
    assert len(list(norn_dirs.NORN_SNAPSHOT_DIR.glob(f"{db}_*.dump"))) == 2
    assert Snapshot.objects.filter(app=snapshots[0].app).disk_usage()["bytes"] == sum(s.size for s in snapshots)

    # The current and previous deployments' snapshots survive a tighter limit.
    pruned = retention.prune(snapshots[0].app, Spec.from_dict({"snapshots": {"retain": 1}}))
    assert pruned == []


@pytest.fixture
def kube_web(make_app, tmp_path, norn_dirs, busybox_image, settings, monkeypatch):
    """A webserver with its own git repository, deployed to the fake Kubernetes
    (images pushed to the local registry): yields (kube, repo, add_app(extra))."""
    settings.NORN_RUNTIME = "kubernetes"
    settings.NORN_REGISTRY_URL = "127.0.0.1:5000/norn-autorollback"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # Its pods pull what the build pushed to the local registry, and read the images' ENV from there.
    with FakeKubernetes(progress_deadline_scale=0.002, registry_url="127.0.0.1:5000", time_scale=0.01) as kube:
        monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
        repo = make_repo(tmp_path / "repos", "kweb", {"Dockerfile": DOCKERFILE})

        def add_app(extra=""):
            make_app("kweb", f"app: kweb\nrole: webserver\nrepo:\n  url: {repo.file_url}\nbuild: {{}}\nport: 8000\n{extra}")

        yield kube, repo, add_app
        assert not kube.internal_errors, kube.internal_errors


def test_auto_rollback_after_a_failed_rollout_on_kubernetes(kube_web, tmp_path):
    kube, repo, add_app = kube_web
    add_app()
    good = run(request_deployment("kweb"))
    assert good.status == "deployed", good.error
    # The next release's container exits as it starts (the fake's kubelet reads the image's ENV).
    repo.commit({"Dockerfile": DOCKERFILE + f"ENV {EXIT_AFTER_ENV}=0\n"}, "broken")
    bad = run(request_deployment("kweb"))
    assert bad.status == "failed"
    assert 'container "kweb": CrashLoopBackOff' in bad.error
    assert f"rolling back automatically to {good.image}" in bad.error
    rollback = Deployment.objects.get(kind="rollback")
    assert (rollback.requested_via, rollback.rollback_to, rollback.replaces) == ("auto-rollback", good, bad)
    rollback = run(rollback)
    assert rollback.status == "deployed", rollback.error
    image = kube.get_object("deployments", "kweb")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == good.image
    bad.refresh_from_db()
    assert bad.status == "rolled_back"
    assert "successfully rolled out" in rollback.steps.get(name="deploy").output
    # kubectl agrees with Norn's verdict on the same fake.
    kubectl = subprocess.run(
        ["kubectl", f"--kubeconfig={tmp_path / 'kubeconfig'}", "rollout", "status", "deployment/kweb", "--timeout=20s"],
        capture_output=True, text=True, timeout=60,
    )
    assert kubectl.returncode == 0, kubectl.stderr


def test_auto_rollback_can_be_turned_off(kube_web):
    kube, repo, add_app = kube_web
    add_app("autoRollback: false\n")
    assert run(request_deployment("kweb")).status == "deployed"
    repo.commit({"Dockerfile": DOCKERFILE + f"ENV {EXIT_AFTER_ENV}=0\n"}, "crashes on start")
    bad = run(request_deployment("kweb"))
    assert bad.status == "failed" and "rolling back" not in bad.error
    assert not Deployment.objects.filter(kind="rollback").exists()


def test_after_a_failed_rollout_a_manual_rollback_reapplies_the_last_good_image(make_app, tmp_path, norn_dirs, busybox_image):
    repo, first, second = cron_history(make_app, tmp_path)
    # The next deploy fails in its deploy step (its rollout did not finish).
    repo.commit({"Dockerfile": DOCKERFILE + "ENV V=3\n"}, "v3")
    broken = request_deployment("job")
    transitions.claim(broken.pk, "host:1:x")
    transitions.start_step(broken.pk, "host:1:x", "deploy")
    transitions.finish_step(broken.pk, "deploy", "failed", error="rollout stuck")
    transitions.finish(broken.pk, "failed", "deploy failed: rollout stuck")
    rollback = request_rollback("job")
    assert (rollback.rollback_to, rollback.replaces) == (second, Deployment.objects.get(pk=broken.pk))
    rollback = run(rollback)
    assert rollback.status == "deployed", rollback.error
    assert Deployment.objects.get(pk=broken.pk).status == "rolled_back"
