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

KEYS = ["id", "app", "kind", "status", "ref", "commit", "commit_subject", "commit_author", "commit_time",
        "requested_by", "requested_via", "queued_at", "started_at", "finished_at", "duration", "error",
        "failure_reason"]
SUBJECT = "Fix the flaky login test when the clock jumps backwards across a daylight-saving change in Europe"


@pytest.fixture
def history(make_app):
    """web: a failed deploy, a deployed one, then a rollback still queued; api: a restore that was done."""
    make_app("web", "app: web\nrole: worker\n")
    make_app("api", "app: api\nrole: worker\n")
    web, api = App.objects.get(name="web"), App.objects.get(name="api")
    start = timezone.now() - datetime.timedelta(hours=1)
    failed = transitions.create(web, "main", name="alice")
    Deployment.objects.filter(pk=failed.pk).update(
        status="failed", error="build failed: docker exited with status 1:\nstep 3/5", failed_step="build",
        commit_sha="a" * 40, started_at=start, finished_at=start + datetime.timedelta(seconds=12.5))
    deployed = transitions.create(web, "v2", name="bob")
    Deployment.objects.filter(pk=deployed.pk).update(
        status="deployed", commit_sha="b" * 40, started_at=start, finished_at=start + datetime.timedelta(seconds=3),
        commit_subject=SUBJECT, commit_author="Bob Builder",
        commit_time=datetime.datetime(2026, 5, 4, 3, 2, 1, tzinfo=datetime.timezone.utc))
    rollback = transitions.create(web, "HEAD", name="carol", kind="rollback")
    restore = transitions.create(api, "HEAD", name="dave", via="dashboard", kind="restore")
    Deployment.objects.filter(pk=restore.pk).update(status="deployed")
    return {"failed": failed, "deployed": deployed, "rollback": rollback, "restore": restore}


def json_rows(result):
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_table_has_kind_and_subject_columns_and_says_why(history):
    result = manage("deployments", extra_env={"COLUMNS": "160"})
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["ID", "APP", "KIND", "STATUS", "REF", "COMMIT", "QUEUED", "BY", "SUBJECT"]
    rows = {line.split()[0]: line for line in lines if not line.startswith(" ")}
    assert rows[history["rollback"].short_id].split()[1:4] == ["web", "rollback", "queued"]
    assert rows[history["restore"].short_id].split()[1:3] == ["api", "restore"]
    assert rows[history["failed"].short_id].split()[1:6] == ["web", "deploy", "failed", "main", "a" * 12]
    # The subject, trimmed to what the 160 columns leave, ends the row.
    deployed = rows[history["deployed"].short_id]
    assert len(deployed) <= 160 and deployed.endswith("…")
    assert SUBJECT[:40] in deployed
    # Why it failed: the step and the first line of its error, under its row.
    failed_at = lines.index(rows[history["failed"].short_id])
    assert lines[failed_at + 1].strip() == "why: build: docker exited with status 1:"


def test_a_narrow_terminal_still_shows_some_of_the_subject(history):
    line = next(x for x in manage("deployments", extra_env={"COLUMNS": "80"}).stdout.splitlines()
                if x.startswith(history["deployed"].short_id))
    assert line.endswith(SUBJECT[:19] + "…")


def test_json_is_one_object_per_line_with_stable_keys(history):
    rows = json_rows(manage("deployments", "--json"))
    assert [r["id"] for r in rows] == [str(history[k].public_id) for k in ("restore", "rollback", "deployed", "failed")]
    assert all(list(r) == KEYS for r in rows)
    failed = rows[3]
    assert failed["app"] == "web" and failed["kind"] == "deploy" and failed["status"] == "failed"
    assert failed["ref"] == "main" and failed["commit"] == "a" * 40
    assert failed["requested_by"] == "alice" and failed["requested_via"] == "cli"
    assert failed["duration"] == 12.5 and failed["error"] == "build failed: docker exited with status 1:\nstep 3/5"
    assert failed["failure_reason"] == "build: docker exited with status 1:"
    assert failed["commit_subject"] == "" and failed["commit_time"] is None
    deployed = rows[2]
    assert (deployed["commit_subject"], deployed["commit_author"]) == (SUBJECT, "Bob Builder")
    assert deployed["commit_time"] == "2026-05-04T03:02:01Z" and deployed["failure_reason"] is None
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
            [r["id"][:8] for r in rows]
    else:
        assert table.stdout == "No deployments match.\n"


def test_cancelled_is_a_status_of_its_own(history):
    queued = transitions.create(App.objects.get(name="api"), "HEAD", name="erin")
    transitions.request_cancel(queued, "erin")
    rows = json_rows(manage("deployments", "--status", "cancelled", "--json"))
    assert [(r["id"], r["status"], r["failure_reason"]) for r in rows] == \
        [(str(queued.public_id), "cancelled", "cancelled by erin")]
    assert json_rows(manage("deployments", "--status", "failed", "--json"))[0]["id"] == str(history["failed"].public_id)
    table = manage("deployments", "--status", "cancelled").stdout.splitlines()
    assert table[1].split()[3] == "cancelled" and table[2].strip() == "why: cancelled by erin"


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
