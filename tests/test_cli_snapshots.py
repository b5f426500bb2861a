"""`manage.py snapshots [APP] [--json]`: every snapshot newest first (id, app,
database, kind, size, sha256 prefix, created, deployment, pruned or its path),
with the restore hint when one can be restored; an unknown app exits 2."""

import datetime
import json

import pytest
from django.utils import timezone

from apps_registry.models import App
from deployments import transitions
from deployments.models import Snapshot
from norn_project import cli
from tests.support.commands import manage

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def snapshots(make_app):
    make_app("web", "app: web\nrole: worker\n")
    make_app("api", "app: api\nrole: worker\n")
    make_app("quiet", "app: quiet\nrole: worker\n")
    now = timezone.now()
    made = {}
    for key, app_name, kind, size, age, pruned in [
        ("old", "web", "pre-migration", 512, 3, True),
        ("web", "web", "pre-restore", 3 * 1024 * 1024 + 1, 2, False),
        ("api", "api", "pre-migration", 2048, 1, False),
    ]:
        app = App.objects.get(name=app_name)
        deployment = transitions.create(app, "HEAD", name="tester")
        row = Snapshot.objects.create(
            deployment=deployment, app=app, database=f"norn_{app_name}", kind=kind, size=size,
            path=f"/var/snapshots/{app_name}/{key}.dump", sha256=(key[0] * 64),
        )
        Snapshot.objects.filter(pk=row.pk).update(
            created_at=now - datetime.timedelta(hours=age),
            pruned_at=now - datetime.timedelta(hours=1) if pruned else None,
        )
        row.refresh_from_db()
        made[key] = row
    return made


def test_the_table_newest_first_with_the_restore_hint(snapshots):
    result = manage("snapshots")
    assert result.returncode == 0, result.stderr
    header, *lines, hint = result.stdout.splitlines()
    assert header.split() == ["ID", "APP", "DATABASE", "KIND", "SIZE", "SHA256", "CREATED", "DEPLOYMENT", "PATH"]
    api, web, old = (line.split() for line in lines)
    assert api[:6] == [str(snapshots["api"].pk), "api", "norn_api", "pre-migration", "2.0", "KiB"]
    assert api[6] == "a" * 12 and api[9] == snapshots["api"].deployment.short_id
    assert api[10] == "/var/snapshots/api/api.dump"
    assert web[3:6] == ["pre-restore", "3.0", "MiB"]
    assert old[3:6] == ["pre-migration", "512", "B"]
    assert old[9:11] == [snapshots["old"].deployment.short_id, "pruned"]  # its file is gone: no path
    assert "/var/snapshots/web/old.dump" not in result.stdout
    assert hint == f"Restore one with: manage.py restore_snapshot ID (e.g. {snapshots['api'].pk}); " \
                   "the current state is snapshotted first."


def test_one_apps_snapshots_and_json(snapshots):
    table = manage("snapshots", "web")
    assert [line.split()[0] for line in table.stdout.splitlines()[1:-1]] == \
        [str(snapshots["web"].pk), str(snapshots["old"].pk)]
    result = manage("snapshots", "web", "--json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in records] == [snapshots["web"].pk, snapshots["old"].pk]
    web, old = records
    assert list(web) == ["id", "app", "database", "kind", "size", "sha256", "created_at", "deployment", "pruned_at",
                         "path"]
    assert web["size"] == 3 * 1024 * 1024 + 1 and web["sha256"] == "w" * 64 and web["pruned_at"] is None
    assert web["deployment"] == str(snapshots["web"].deployment.public_id)
    assert datetime.datetime.fromisoformat(web["created_at"].replace("Z", "+00:00")) == snapshots["web"].created_at
    assert old["pruned_at"] is not None and old["path"] == "/var/snapshots/web/old.dump"
    assert len(json.loads(manage("snapshots", "--json", "--limit", "1").stdout.strip())) == 10


def test_nothing_to_restore_gives_no_hint(snapshots):
    only_pruned = manage("snapshots", "web", "--limit", "5")
    assert "Restore one with" in only_pruned.stdout
    Snapshot.objects.filter(app__name="web").update(pruned_at=timezone.now())
    assert "Restore one with" not in manage("snapshots", "web").stdout
    assert manage("snapshots", "quiet").stdout == "No snapshots of quiet.\n"
    assert manage("snapshots", "quiet", "--json").stdout == ""


@pytest.mark.parametrize(
    "args, message",
    [(("nope",), "CommandError: unknown app 'nope'; known apps: api, quiet, web"),
     (("--limit", "-1"), "argument --limit: '-1' is not a positive whole number")],
    ids=["unknown app", "bad limit"],
)
def test_bad_input_exits_2(snapshots, args, message):
    result = manage("snapshots", *args)
    assert result.returncode == cli.BAD_REQUEST, result.stdout + result.stderr
    assert result.stdout == "" and message in result.stderr and "Traceback" not in result.stderr
