"""`manage.py deployments`: the table (with its KIND column), `--json` (one
object per line, stable keys) and the filters, with bad values refused
(exit 2, naming the option, the value and what is valid)."""

import datetime
import json

import pytest
from django.utils import timezone

from apps_registry.models import App
from deployments import transitions
from deployments.models import Deployment
from norn_project import cli
from tests.support.commands import manage

pytestmark = pytest.mark.django_db(transaction=True)

KEYS = ["id", "app", "kind", "status", "ref", "commit", "requested_by", "requested_via", "queued_at", "started_at",
        "finished_at", "duration", "error"]


@pytest.fixture
def history(make_app):
    """web: a failed deploy, a deployed one, then a rollback still queued; api: a restore that was done."""
    make_app("web", "app: web\nrole: worker\n")
    make_app("api", "app: api\nrole: worker\n")
    web, api = App.objects.get(name="web"), App.objects.get(name="api")
    start = timezone.now() - datetime.timedelta(hours=1)
    failed = transitions.create(web, "main", name="alice")
    Deployment.objects.filter(pk=failed.pk).update(
        status="failed", error="build failed\nstep 3/5", commit_sha="a" * 40,
        started_at=start, finished_at=start + datetime.timedelta(seconds=12.5))
    deployed = transitions.create(web, "v2", name="bob")
    Deployment.objects.filter(pk=deployed.pk).update(
        status="deployed", commit_sha="b" * 40, started_at=start, finished_at=start + datetime.timedelta(seconds=3))
    rollback = transitions.create(web, "HEAD", name="carol", kind="rollback")
    restore = transitions.create(api, "HEAD", name="dave", via="dashboard", kind="restore")
    Deployment.objects.filter(pk=restore.pk).update(status="deployed")
    return {"failed": failed, "deployed": deployed, "rollback": rollback, "restore": restore}


def json_rows(result):
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_table_has_a_kind_column(history):
    result = manage("deployments")
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["ID", "APP", "KIND", "REF", "COMMIT", "STATUS", "QUEUED", "BY"]
    rows = {line.split()[0]: line.split() for line in lines if not line.startswith(" ")}
    assert rows[str(history["rollback"].public_id)][1:3] == ["web", "rollback"]
    assert rows[str(history["restore"].public_id)][1:3] == ["api", "restore"]
    assert rows[str(history["failed"].public_id)][1:6] == ["web", "deploy", "main", "a" * 12, "failed"]
    # The first line of the error, under its row.
    assert lines[lines.index(next(x for x in lines if x.startswith(str(history["failed"].public_id)))) + 1].strip() \
        == "build failed"


def test_json_is_one_object_per_line_with_stable_keys(history):
    rows = json_rows(manage("deployments", "--json"))
    assert [r["id"] for r in rows] == [str(history[k].public_id) for k in ("restore", "rollback", "deployed", "failed")]
    assert all(list(r) == KEYS for r in rows)
    failed = rows[3]
    assert failed["app"] == "web" and failed["kind"] == "deploy" and failed["status"] == "failed"
    assert failed["ref"] == "main" and failed["commit"] == "a" * 40
    assert failed["requested_by"] == "alice" and failed["requested_via"] == "cli"
    assert failed["duration"] == 12.5 and failed["error"] == "build failed\nstep 3/5"
    started = datetime.datetime.fromisoformat(failed["started_at"].replace("Z", "+00:00"))
    finished = datetime.datetime.fromisoformat(failed["finished_at"].replace("Z", "+00:00"))
    assert (finished - started).total_seconds() == 12.5
    assert failed["queued_at"].endswith("Z")
    queued = rows[1]
    assert queued["kind"] == "rollback" and queued["status"] == "queued"
    assert queued["commit"] is None and queued["started_at"] is None and queued["duration"] is None
    assert queued["error"] is None
    assert rows[0]["requested_via"] == "dashboard"


@pytest.mark.parametrize(
    "args, expected",
    [
        (("--app", "api"), ["restore"]),
        (("--status", "deployed"), ["restore", "deployed"]),
        (("--kind", "deploy"), ["deployed", "failed"]),
        (("--kind", "rollback"), ["rollback"]),
        (("--app", "web", "--status", "failed", "--kind", "deploy"), ["failed"]),
        (("--limit", "2"), ["restore", "rollback"]),
        (("--app", "web", "--limit", "1"), ["rollback"]),
        (("--status", "rolled_back"), []),
    ],
    ids=["app", "status", "kind deploy", "kind rollback", "all three", "limit", "app and limit", "none match"],
)
def test_filters(history, args, expected):
    rows = json_rows(manage("deployments", "--json", *args))
    assert [r["id"] for r in rows] == [str(history[k].public_id) for k in expected]
    table = manage("deployments", *args)
    assert table.returncode == 0, table.stderr
    if expected:
        assert [line.split()[0] for line in table.stdout.splitlines()[1:] if not line.startswith(" ")] == \
            [r["id"] for r in rows]
    else:
        assert table.stdout == "No deployments match.\n"


def test_nothing_at_all_says_so_and_json_prints_nothing():
    assert manage("deployments").stdout == "No deployments yet.\n"
    empty = manage("deployments", "--json")
    assert (empty.returncode, empty.stdout) == (0, "")


@pytest.mark.parametrize(
    "args, words",
    [
        (("--status", "done"), ["--status", "'done' is not a status", "valid: queued,", "deployed", "rolled_back"]),
        (("--kind", "redeploy"), ["--kind", "'redeploy' is not a kind", "valid: deploy, rollback, restore"]),
        (("--limit", "0"), ["--limit", "'0' is not a positive whole number"]),
        (("--limit", "ten"), ["--limit", "'ten' is not a positive whole number"]),
        (("--app", "nope"), ["--app", "unknown app 'nope'", "known apps: api, web"]),
    ],
    ids=["status", "kind", "limit 0", "limit not a number", "unknown app"],
)
def test_bad_filters_exit_2_naming_the_option_the_value_and_what_is_valid(history, args, words):
    result = manage("deployments", *args)
    assert result.returncode == cli.BAD_REQUEST, result.stdout + result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in last, last
