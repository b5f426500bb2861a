"""The dashboard: pages, permissions, the deploy form, cancel, live partials,
the duration chart, query counts, the pipeline simulator, and the live page in
a real browser against a real daphne."""

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps_registry import discovery
from apps_registry.models import App
from deployments import appdb, events, states, transitions
from deployments.models import TERMINAL_STATUSES, Deployment, DeploymentStatus, Snapshot, Step, StepStatus
from tests.support.browser import browser, daphne, logged_in_page  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

WEB = """
app: web
role: webserver
port: 8000
repo:
  url: https://git.example.com/web.git
  branch: main
"""
LOCAL = "app: local\nrole: worker\n"


@pytest.fixture
def web(make_app):
    make_app("web", WEB)
    return App.objects.get(name="web")


def user_with(*codenames, username="op"):
    user = User.objects.create_user(username, password="x")
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def viewer(client):
    client.force_login(user_with("view_deployment", username="viewer"))
    return client


@pytest.fixture
def operator(client):
    user = user_with("view_deployment", "start_deployment", "cancel_deployment")
    client.force_login(user)
    client.user = user
    return client


def make_deployment(app, status=DeploymentStatus.DEPLOYED, *, ref="HEAD", commit="", image="", steps=None,
                    error="", ago=0, kind="deploy", **links):
    """A deployment with its step rows; `steps` maps step name to
    (status, seconds, extra Step fields)."""
    deployment = transitions.create(app, ref, via="dashboard", runtime="docker", kind=kind, **links)
    started = timezone.now() - timedelta(minutes=ago + 5)
    finished = started + timedelta(seconds=90) if status in TERMINAL_STATUSES else None
    Deployment.objects.filter(pk=deployment.pk).update(
        status=status, commit_sha=commit, image=image, error=error, started_at=started, finished_at=finished,
        queued_at=started - timedelta(seconds=1),
    )
    for name, (step_status, seconds, *extra) in (steps or {}).items():
        fields = extra[0] if extra else {}
        Step.objects.filter(deployment=deployment, name=name).update(
            status=step_status,
            started_at=started,
            duration=timedelta(seconds=seconds) if seconds is not None else None,
            **fields,
        )
    deployment.refresh_from_db()
    return deployment


def all_succeeded(seconds=2):
    return {name: (StepStatus.SUCCEEDED, seconds) for name in states.STEPS}


def page(client, url, status=200):
    response = client.get(url)
    assert response.status_code == status, response.content[:500]
    return response.content.decode()


# --- login and permissions ------------------------------------------------------------


def dashboard_urls(app, deployment):
    base = f"/deployments/{deployment.public_id}/"
    return [
        "/", f"/apps/{app.name}/", base, base + "_steps", base + "_header", base + "_outcome",
        base + "_status", "/simulator/",
    ]


def test_every_page_needs_a_login(client, web):
    deployment = make_deployment(web)
    for url in [*dashboard_urls(web, deployment), "/apps/web/deploy"]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url


def test_every_page_needs_the_view_permission(client, web):
    deployment = make_deployment(web)
    client.force_login(user_with("start_deployment", "cancel_deployment", username="blind"))
    for url in [*dashboard_urls(web, deployment), "/apps/web/deploy"]:
        assert client.get(url).status_code == 403, url
    assert client.post(f"/deployments/{deployment.public_id}/cancel").status_code == 403
    assert client.post("/simulator/", {"step": "clone", "action": "succeed"}).status_code == 403


def test_the_view_permission_shows_everything_but_deploy_and_cancel(viewer, web):
    deployment = make_deployment(web, DeploymentStatus.BUILDING, steps={"clone": (StepStatus.SUCCEEDED, 1)})
    for url in dashboard_urls(web, deployment):
        assert viewer.get(url).status_code == 200, url
    assert 'href="/apps/web/deploy"' not in page(viewer, "/")
    assert 'href="/apps/web/deploy"' not in page(viewer, "/apps/web/")
    assert "Cancel deployment" not in page(viewer, f"/deployments/{deployment.public_id}/")
    assert viewer.get("/apps/web/deploy").status_code == 403
    assert viewer.post("/apps/web/deploy", {"ref": "main", "confirm": "yes"}).status_code == 403
    assert viewer.post(f"/deployments/{deployment.public_id}/cancel").status_code == 403
    assert Deployment.objects.count() == 1
    assert Deployment.objects.get().cancel_requested_at is None


def test_superusers_have_every_permission(admin_client, web):
    deployment = make_deployment(web, DeploymentStatus.QUEUED)
    assert 'href="/apps/web/deploy"' in page(admin_client, "/")
    assert "Cancel deployment" in page(admin_client, f"/deployments/{deployment.public_id}/")


def test_unknown_app_and_deployment_are_404(operator, web):
    assert operator.get("/apps/nope/").status_code == 404
    assert operator.get("/deployments/00000000-0000-0000-0000-000000000000/").status_code == 404


# --- apps overview -------------------------------------------------------------------


def test_overview_shows_last_deployment_status_commit_time_and_who(operator, web, make_app):
    make_deployment(web, DeploymentStatus.DEPLOYED, commit="a" * 40, ago=60)
    user = User.objects.create_user("alice")
    last = make_deployment(web, DeploymentStatus.FAILED, ref="main", commit="b" * 40)
    Deployment.objects.filter(pk=last.pk).update(requested_by=user)
    make_app("idle", "app: idle\nrole: worker\n")
    html = page(operator, "/")
    row = html.split('href="/apps/web/"')[1].split("</tr>")[0]
    # Status as a symbol and a word, not colour alone.
    assert '<span class="symbol" aria-hidden="true">✗ </span>Failed' in row
    assert "b" * 12 in row and "a" * 12 not in row
    assert "alice via dashboard" in row
    assert "ago</time>" in row
    assert f'href="/deployments/{last.public_id}/"' in row
    assert 'href="/apps/web/deploy"' in row
    idle = html.split('href="/apps/idle/"')[1].split("</tr>")[0]
    assert "Never deployed" in idle


def test_overview_flags_invalid_and_missing_apps(operator, make_app, apps_dir):
    make_app("broken", "app: broken\nrole: webapp\n")
    make_app("gone", "app: gone\nrole: worker\n")
    (apps_dir / "gone" / "infraspec.yaml").unlink()
    discovery.forget_fingerprint()
    html = page(operator, "/")
    broken = html.split('href="/apps/broken/"')[1].split("</tr>")[0]
    assert "Invalid infraspec.yaml" in broken
    assert "&#x27;webapp&#x27; is not a role" in broken
    assert 'href="/apps/broken/deploy"' not in broken
    gone = html.split('href="/apps/gone/"')[1].split("</tr>")[0]
    assert "Missing since" in gone and "infraspec.yaml</code> is gone" in gone
    assert 'href="/apps/gone/deploy"' not in gone


def test_overview_picks_up_a_new_app_without_restart(operator, web, write_spec):
    page(operator, "/")
    write_spec("fresh", "app: fresh\nrole: worker\n")
    assert 'href="/apps/fresh/"' in page(operator, "/")


# --- app page ------------------------------------------------------------------------


def test_app_page_paginates_the_history(operator, web):
    made = [make_deployment(web, ref=f"r{i}", ago=100 - i) for i in range(25)]
    def history(url):
        return page(operator, url).split('<div id="history">')[1].split("</div>")[0]

    first = history("/apps/web/")
    assert "Page 1 of 2" in first and first.count("<tr>") == 1 + 20
    assert made[-1].short_id in first and made[0].short_id not in first
    assert 'href="?page=2"' in first and 'hx-get="?page=2"' in first
    second = history("/apps/web/?page=2")
    assert made[0].short_id in second and "Page 2 of 2" in second and second.count("<tr>") == 1 + 5
    # An out-of-range page shows the last one rather than an error.
    assert "Page 2 of 2" in history("/apps/web/?page=99")


def test_history_page_alone_for_htmx(operator, web):
    for i in range(25):
        make_deployment(web, ref=f"r{i}")
    response = operator.get("/apps/web/?page=2", headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="history">') and "<html" not in html
    assert "Page 2 of 2" in html
    assert "HX-Request" in response["Vary"]


def test_app_page_chart_has_a_segment_per_step_and_a_table(operator, web):
    slow_build = {**all_succeeded(2), "build": (StepStatus.SUCCEEDED, 40)}
    ok = make_deployment(web, steps=slow_build, ago=10)
    failed = make_deployment(
        web, DeploymentStatus.FAILED,
        steps={"clone": (StepStatus.SUCCEEDED, 1), "build": (StepStatus.FAILED, 5),
               "test": (StepStatus.SKIPPED, None, {"skip_reason": "build failed"}),
               "cleanup": (StepStatus.SUCCEEDED, 0.5)},
    )
    html = page(operator, "/apps/web/")
    svg = html.split('<svg class="durations"')[1].split("</svg>")[0]
    assert 'role="img"' in svg and 'aria-labelledby="chart-title chart-desc"' in svg
    assert "<title id=\"chart-title\">Duration of the last 2 deployments of web, by step</title>" in svg
    bars = svg.split('<a href="')[1:]
    assert len(bars) == 2
    assert bars[0].startswith(f"/deployments/{ok.public_id}/")  # oldest on the left
    assert re.findall(r'data-step="(\w+)"', bars[0]) == list(states.STEPS)
    assert re.findall(r'data-step="(\w+)"', bars[1]) == ["clone", "build", "cleanup"]
    heights = dict(re.findall(r'height="([\d.]+)" data-step="(\w+)"', bars[0])[i][::-1] for i in range(7))
    assert float(heights["build"]) == pytest.approx(20 * float(heights["clone"]), rel=0.01)
    assert "build 40 s" in bars[0]  # the bar's tooltip title
    assert "✗" in bars[1]  # the failed one is marked by a symbol, not only colour
    table = html.split('<details class="chart-table">')[1].split("</details>")[0]
    assert "40 s" in table and failed.short_id in table
    assert "Success rate" in html and "50%" in html and "1 of 2 finished deploys went live" in html


def test_success_rate_counts_deploys_that_went_live(operator, web):
    make_deployment(web, steps=all_succeeded())
    # Both end rolled_back: one had gone live, the other failed its deploy step.
    make_deployment(web, DeploymentStatus.ROLLED_BACK, steps=all_succeeded())
    make_deployment(web, DeploymentStatus.ROLLED_BACK, steps={**all_succeeded(), "deploy": (StepStatus.FAILED, 1)})
    # Rollbacks are not deploys.
    make_deployment(web, kind="rollback", steps={"deploy": (StepStatus.FAILED, 1)})
    html = page(operator, "/apps/web/")
    assert "<strong>67%</strong>" in html and "2 of 3 finished deploys went live" in html


def test_app_page_lists_snapshots_with_restore_command(operator, web):
    deployment = make_deployment(web)
    Snapshot.objects.create(
        deployment=deployment, app=web, database="web_db", path="/var/snap/web_db_abc.dump",
        size=2048, sha256="f" * 64,
    )
    html = page(operator, "/apps/web/")
    assert "/var/snap/web_db_abc.dump" in html and "2.0\xa0KB" in html
    assert appdb.restore_command("web_db", "/var/snap/web_db_abc.dump") in html


@pytest.mark.parametrize("url", ["/", "/apps/web/"])
def test_query_count_does_not_grow_with_history(operator, web, url):
    def count_queries():
        operator.get(url)  # warm up: discovery sync, permission cache
        with CaptureQueriesContext(connection) as ctx:
            assert operator.get(url).status_code == 200
        return len(ctx.captured_queries)

    first_ten = [make_deployment(web, steps=all_succeeded(), ago=i) for i in range(10)]
    ten = count_queries()
    for i in range(90):
        make_deployment(web, DeploymentStatus.FAILED if i % 3 else DeploymentStatus.DEPLOYED, steps=all_succeeded(), ago=20 + i)
    # Snapshots too: each links to its deployment, which must not cost a query apiece.
    for deployment in first_ten:
        Snapshot.objects.create(deployment=deployment, app=web, database="d", path=f"/s/{deployment.pk}", size=1, sha256="0")
    assert count_queries() == ten
    # A fixed handful: session, user, app, history page, chart, success rate,
    # snapshots and their usage, what is live and whether a rollback exists.
    assert ten <= 14


# --- deployment page -----------------------------------------------------------------


def running_deployment(app):
    return make_deployment(
        app, DeploymentStatus.MIGRATING, ref="main",
        steps={
            "clone": (StepStatus.SUCCEEDED, 1.5, {"output": "Cloned <b>web</b>\n"}),
            "build": (StepStatus.SKIPPED, 0.1, {"skip_reason": "no build section in infraspec.yaml"}),
            "test": (StepStatus.SKIPPED, 0.1, {"skip_reason": "no build.test in infraspec.yaml"}),
            "snapshot": (StepStatus.SUCCEEDED, 3),
            "migrate": (StepStatus.RUNNING, None, {"output": "Applying 0001…\n"}),
        },
    )


def test_deployment_page_shows_the_timeline_without_js(operator, web):
    deployment = running_deployment(web)
    html = page(operator, f"/deployments/{deployment.public_id}/")
    steps = html.split('<ol id="deployment-steps"')[1].split("</ol>")[0]
    assert re.findall(r'<li class="step step-(\w+)" id="step-(\w+)"', steps) == [
        ("succeeded", "clone"), ("skipped", "build"), ("skipped", "test"), ("succeeded", "snapshot"),
        ("running", "migrate"), ("pending", "deploy"), ("pending", "cleanup"),
    ]
    assert "— no build section in infraspec.yaml" in steps
    assert re.search(r'for <span class="elapsed" data-elapsed="\d+\.\d">', steps)
    assert "in 1.5 s" in steps
    # Output is in the page (escaped), collapsible, open for the running step.
    assert "Cloned &lt;b&gt;web&lt;/b&gt;" in steps
    assert '<details class="output" data-output-for="migrate" open>' in steps
    assert '<details class="output" data-output-for="deploy" hidden>' in steps
    # Without JS: complete, with a refresh link; with JS: where to listen and resume.
    assert f'<a href="/deployments/{deployment.public_id}/" class="refresh">Refresh</a>' in html
    assert f'data-ws-path="/ws/deployments/{deployment.public_id}/"' in html
    assert f'data-after="{deployment.last_event_seq}"' in html
    assert f'data-seq="{deployment.last_event_seq}"' in steps
    assert 'aria-live="polite"' in html and "/static/norn/live.js" in html
    assert "/static/vendor/htmx/htmx.min.js" in html
    assert '<span class="symbol" aria-hidden="true">▶ </span>Migrating' in html


def test_step_seq_matches_the_output_it_includes(operator, web):
    deployment = running_deployment(web)
    before = Deployment.objects.get(pk=deployment.pk).last_event_seq
    transitions.append_output(deployment.pk, "migrate", "Applying 0002…\n")
    html = page(operator, f"/deployments/{deployment.public_id}/_steps")
    assert f'data-seq="{before + 1}"' in html and "Applying 0002" in html


@pytest.mark.parametrize("partial,root", [
    ("_steps", '<ol id="deployment-steps"'),
    ("_header", '<section id="deployment-header"'),
    ("_outcome", '<section id="deployment-outcome"'),
    ("_status", '<span class="status status-migrating">'),
])
def test_partials_render_alone(operator, web, partial, root):
    deployment = running_deployment(web)
    html = page(operator, f"/deployments/{deployment.public_id}/{partial}")
    assert "<html" not in html and "<body" not in html
    assert html.lstrip().startswith(root)


def test_failed_migration_offers_the_snapshot_restore_command_and_retry(operator, web):
    deployment = make_deployment(
        web, DeploymentStatus.FAILED, ref="main", commit="c" * 40, error="migrate failed: exit 1",
        steps={**all_succeeded(), "migrate": (StepStatus.FAILED, 2, {"error": "exit 1"}),
               "deploy": (StepStatus.SKIPPED, None, {"skip_reason": "migrate failed"})},
    )
    Snapshot.objects.create(
        deployment=deployment, app=web, database="web", path="/snap/web_c.dump", size=10, sha256="0" * 64
    )
    html = page(operator, f"/deployments/{deployment.public_id}/")
    outcome = html.split('<section id="deployment-outcome"')[1].split("</section>")[0]
    assert "migrate failed: exit 1" in outcome
    assert states.ON_FAILURE["migrate"] in outcome
    assert appdb.restore_command("web", "/snap/web_c.dump") in outcome
    assert 'action="/apps/web/deploy"' in outcome and 'name="ref" value="main"' in outcome
    assert "Roll back" not in outcome
    assert "— migrate failed" in html  # the skipped deploy step says why
    assert "Cancel deployment" not in html


def test_failed_migration_without_snapshot_says_there_is_none(operator, web):
    deployment = make_deployment(
        web, DeploymentStatus.FAILED,
        steps={**all_succeeded(), "snapshot": (StepStatus.SKIPPED, 0), "migrate": (StepStatus.FAILED, 1)},
    )
    html = page(operator, f"/deployments/{deployment.public_id}/_outcome")
    assert "no snapshot to restore" in html and "pg_restore" not in html


def test_failed_deploy_offers_a_rollback(operator, web):
    deployment = make_deployment(
        web, DeploymentStatus.FAILED, commit="e" * 40,
        steps={**all_succeeded(), "deploy": (StepStatus.FAILED, 3)},
    )
    outcome = page(operator, f"/deployments/{deployment.public_id}/_outcome")
    assert states.ON_FAILURE["deploy"] in outcome
    assert 'href="/apps/web/rollback"' in outcome
    assert "pg_restore" not in outcome


def test_deployed_page_has_no_next_steps(operator, web):
    deployment = make_deployment(web, steps={**all_succeeded(), "cleanup": (StepStatus.FAILED, 1, {"error": "rm: busy"})})
    html = page(operator, f"/deployments/{deployment.public_id}/")
    assert "What you can do" not in html
    assert "The cleanup step failed; it is best-effort" in html and "rm: busy" in html
    assert 'data-terminal="true"' in html


# --- rollback and restore ---------------------------------------------------------------


def test_rollback_page_puts_back_a_chosen_earlier_image(operator, web):
    older = make_deployment(web, commit="1" * 40, image="web:111", ago=60)
    previous = make_deployment(web, commit="2" * 40, image="web:222", ago=30)
    live = make_deployment(web, commit="3" * 40, image="web:333")
    html = page(operator, "/apps/web/rollback")
    assert "In service now: <code>web:333</code>" in html
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


def write_snapshot(tmp_path, app, deployment, content=b"PGDMP fake dump"):
    import hashlib

    path = tmp_path / "web_db.dump"
    path.write_bytes(content)
    return Snapshot.objects.create(
        deployment=deployment, app=app, database="web_db", path=str(path),
        size=len(content), sha256=hashlib.sha256(content).hexdigest(),
    )


def test_restore_page_confirms_then_queues_the_restore(operator, web, tmp_path):
    snapshot = write_snapshot(tmp_path, web, make_deployment(web))
    html = page(operator, f"/snapshots/{snapshot.pk}/restore")
    assert "Restore database web_db?" in html and snapshot.created_at.strftime("%Y-%m-%d %H:%M:%S") in html
    assert "is lost" in html and appdb.restore_command("web_db", snapshot.path) in html
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


# --- cancel --------------------------------------------------------------------------


def test_cancel_needs_post_and_the_permission(client, web):
    deployment = make_deployment(web, DeploymentStatus.QUEUED)
    client.force_login(user_with("view_deployment", "start_deployment"))
    url = f"/deployments/{deployment.public_id}/cancel"
    assert client.post(url).status_code == 403
    user = User.objects.get(username="op")
    user.user_permissions.add(Permission.objects.get(codename="cancel_deployment"))
    client.force_login(User.objects.get(pk=user.pk))
    assert client.get(url).status_code == 405
    response = client.post(url)
    assert response.status_code == 302 and response["Location"] == f"/deployments/{deployment.public_id}/"
    deployment.refresh_from_db()
    assert (deployment.status, deployment.error) == ("failed", "cancelled by op (dashboard)")
    assert "Cancelled before it started." in page(client, response["Location"])


def test_cancel_of_a_running_deployment_with_htmx_returns_the_header(operator, web):
    deployment = running_deployment(web)
    response = operator.post(f"/deployments/{deployment.public_id}/cancel", headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="deployment-header"')
    assert "Cancel requested by op (dashboard)" in html
    assert Deployment.objects.get(pk=deployment.pk).cancel_requested_by == "op (dashboard)"


def test_posts_are_csrf_protected(web):
    deployment = make_deployment(web, DeploymentStatus.QUEUED)
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_superuser("root", password="x"))
    assert client.post(f"/deployments/{deployment.public_id}/cancel").status_code == 403
    assert client.post("/apps/web/deploy", {"ref": "main", "confirm": "yes"}).status_code == 403
    assert client.post("/simulator/", {"step": "clone", "action": "succeed"}).status_code == 403
    assert Deployment.objects.get(pk=deployment.pk).status == "queued"
    assert Deployment.objects.count() == 1
    # The pages' forms carry the token.
    form = page(client, "/apps/web/deploy")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    response = client.post("/apps/web/deploy", {"kind": "branch", "ref": "main", "csrfmiddlewaretoken": token})
    assert response.status_code == 200 and "Deploy web at main" in response.content.decode()


# --- deploy form ---------------------------------------------------------------------


def test_deploy_form_confirms_then_deploys_and_redirects_to_the_live_page(operator, web):
    html = page(operator, "/apps/web/deploy")
    assert 'type="radio" name="kind" value="head"' in html and "checked" in html
    assert '<label for="id_ref">Branch or commit SHA</label>' in html
    confirm = operator.post("/apps/web/deploy", {"kind": "branch", "ref": " release-1 "})
    body = confirm.content.decode()
    assert confirm.status_code == 200 and Deployment.objects.count() == 0
    assert 'name="ref" value="release-1"' in body and 'name="confirm" value="yes"' in body
    for name in states.STEPS:
        assert f"<strong>{name}</strong>" in body
    response = operator.post("/apps/web/deploy", {"kind": "branch", "ref": "release-1", "confirm": "yes"})
    deployment = Deployment.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/deployments/{deployment.public_id}/"
    assert (deployment.ref, deployment.requested_by, deployment.requested_via) == ("release-1", operator.user, "dashboard")
    assert deployment.status == "queued"


@pytest.mark.parametrize("kind,ref,message", [
    ("branch", "bad..name", "is not a valid git ref: it contains &#x27;..&#x27; or &#x27;//&#x27;"),
    ("branch", "-rf", "starts with &#x27;-&#x27;"),
    ("branch", "", "Enter a branch name."),
    ("sha", "xyz123", "is not a commit SHA: use 4 to 40 hexadecimal digits"),
    ("sha", "", "Enter a commit SHA."),
])
def test_deploy_form_shows_ref_errors(operator, web, kind, ref, message):
    for confirm in ("", "yes"):
        response = operator.post("/apps/web/deploy", {"kind": kind, "ref": ref, "confirm": confirm})
        html = response.content.decode()
        assert response.status_code == 200
        assert message in html
        assert 'aria-invalid="true"' in html and 'id="ref-errors"' in html
    assert Deployment.objects.count() == 0


def test_deploy_form_head_ignores_the_text_field_and_sha_is_lowercased(operator, web):
    operator.post("/apps/web/deploy", {"kind": "head", "ref": "whatever..", "confirm": "yes"})
    operator.post("/apps/web/deploy", {"kind": "sha", "ref": "ABCDEF1", "confirm": "yes"})
    assert sorted(Deployment.objects.values_list("ref", flat=True)) == ["HEAD", "abcdef1"]


def test_deploy_form_reports_request_errors_on_the_form(operator, make_app):
    make_app("local", LOCAL)
    html = page(operator, "/apps/local/deploy")
    assert 'value="branch"' not in html  # no repository: no branches to offer
    response = operator.post("/apps/local/deploy", {"ref": "feature", "confirm": "yes"})
    assert "has no repo in infraspec.yaml, so there is no branch" in response.content.decode()
    assert Deployment.objects.count() == 0


def test_deploy_form_for_an_invalid_app_shows_its_errors(operator, make_app):
    make_app("broken", "app: broken\nrole: webapp\n")
    html = page(operator, "/apps/broken/deploy")
    assert "infraspec.yaml is invalid" in html and "<form method=\"post\" action=\"/apps/broken/deploy\"" not in html
    response = operator.post("/apps/broken/deploy", {"ref": "HEAD", "confirm": "yes"})
    assert "&#x27;webapp&#x27; is not a role" in response.content.decode()
    assert Deployment.objects.count() == 0


def test_deploy_form_is_prefilled_from_the_ref(operator, web):
    html = page(operator, f"/apps/web/deploy?ref={'a' * 12}")
    assert re.search(r'value="sha"[^>]*checked', html)
    assert f'value="{"a" * 12}"' in html


# --- pipeline simulator --------------------------------------------------------------


def sim_state(html):
    """The step statuses (and the current step) the simulator's form carries."""
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="(\w*)">', html))
    return {name: value for name, value in fields.items() if name in (*states.STEPS, "step")}


def simulate(client, outcomes):
    """Press a button for each step the simulator offers; `outcomes` maps
    step to action (default succeed). Returns the last page."""
    html = page(client, "/simulator/")
    while 'name="action"' in html:
        state = sim_state(html)
        reasons = dict(re.findall(r'name="(\w+-reason)" value="([^"]*)"', html))
        current = state.pop("step")
        response = client.post("/simulator/", {**state, **reasons, "step": current, "action": outcomes.get(current, "succeed")})
        assert response.status_code == 200
        html = response.content.decode()
    return html


def expected_run(failing):
    """What states.py says a deployment whose `failing` step fails ends as."""
    steps = states.initial()
    while (name := states.next_step(steps)) is not None:
        steps[name] = StepStatus.FAILED if name == failing else StepStatus.SUCCEEDED
        for cut in states.steps_cut_short(steps):
            steps[cut] = StepStatus.SKIPPED
    has_snapshot = steps["snapshot"] == StepStatus.SUCCEEDED
    return steps, states.final_status(steps), states.recovery_options(steps, has_snapshot)


@pytest.mark.parametrize("failing", states.STEPS)
def test_simulator_outcome_of_a_failure_at_every_step_is_what_states_says(viewer, failing):
    html = simulate(viewer, {failing: "fail"})
    steps, final, recovery = expected_run(failing)
    state = sim_state(html)
    state.pop("step")
    assert state == {name: str(status) for name, status in steps.items()}
    final_label = DeploymentStatus(final).label
    assert f"Final status: <span class=\"status status-{final}\">" in html and final_label in html
    assert ("Snapshot available for restore" in html) == recovery["restore_snapshot"]
    assert ("Rollback available" in html) == recovery["rollback"]
    assert ("<strong>Retry</strong>" in html) == recovery["retry"]
    failed = states.failed_step(steps)
    if failed:
        assert f"the <strong>{failed}</strong> step failed: {states.ON_FAILURE[failed]}" in html
        for name, status in steps.items():
            if status == StepStatus.SKIPPED:
                assert f'name="{name}-reason" value="{failed} failed"' in html


def test_simulator_migrate_failure_skips_deploy_but_runs_cleanup(viewer):
    html = simulate(viewer, {"migrate": "fail"})
    assert '<span class="reason">— migrate failed</span>' in html
    assert 'name="deploy-reason" value="migrate failed"' in html
    state = sim_state(html)
    assert (state["deploy"], state["cleanup"]) == ("skipped", "succeeded")
    assert "Snapshot available for restore" in html and "Failed" in html


def test_simulator_cleanup_failure_still_deploys(viewer):
    html = simulate(viewer, {"cleanup": "fail"})
    assert 'Final status: <span class="status status-deployed">' in html
    assert "best-effort: the deployment is still deployed" in html


def test_simulator_skipped_snapshot_means_nothing_to_restore(viewer):
    html = simulate(viewer, {"snapshot": "skip", "migrate": "fail"})
    assert "Snapshot available for restore" not in html
    assert "No snapshot to restore" in html
    assert 'name="snapshot-reason" value="you skipped it"' in html


def test_simulator_shows_the_in_flight_status_of_the_current_step(viewer):
    html = page(viewer, "/simulator/")
    assert "Now running: <strong>clone</strong>" in html and "Cloning" in html
    response = viewer.post("/simulator/", {**states.initial(), "step": "clone", "action": "succeed"}, headers={"HX-Request": "true"})
    partial = response.content.decode()
    assert partial.lstrip().startswith('<section id="simulator"')
    assert "Now running: <strong>build</strong>" in partial
    assert "Building" in partial and "autofocus" in partial


def test_simulator_refuses_a_stale_or_forged_form(viewer):
    stale = viewer.post("/simulator/", {**states.initial(), "step": "build", "action": "succeed"})
    assert stale.status_code == 200 and "no longer running" in stale.content.decode()
    assert sim_state(stale.content.decode())["build"] == "pending"
    assert viewer.post("/simulator/", {"clone": "exploded", "step": "clone", "action": "fail"}).status_code == 400
    assert viewer.post("/simulator/", {"step": "clone", "action": "explode"}).status_code == 400


# --- admin and assets ------------------------------------------------------------------


def test_admin_deployment_list_listens_live(admin_client, web):
    deployment = make_deployment(web, DeploymentStatus.QUEUED)
    html = page(admin_client, "/admin/deployments/deployment/")
    assert "/static/norn/admin_live.js" in html
    assert 'data-ws-path="/ws/deployments/"' in html
    assert 'data-status-url="/deployments/00000000-0000-0000-0000-000000000000/_status"' in html
    # The script finds a row by the short id in its first column.
    assert f'<th class="field-short_id"><a href="/admin/deployments/deployment/{deployment.pk}/change/">{deployment.short_id}</a></th>' in html


def test_htmx_is_vendored_with_its_license():
    from django.conf import settings

    vendor = settings.BASE_DIR / "static" / "vendor" / "htmx"
    assert (vendor / "htmx.min.js").read_text().startswith("var htmx=function()")
    assert "Zero-Clause BSD" in (vendor / "LICENSE").read_text()


# --- the live page in a browser ---------------------------------------------------------


def publish(action, *args, **kwargs):
    """Run a transition as the worker does, and wait until its events are sent."""
    result = action(*args, **kwargs)
    events.publisher.flush()
    return result


def outputs(page):
    return page.eval_on_selector_all("pre.output-text", "els => els.map(e => e.textContent)")


@pytest.mark.django_db(transaction=True)
def test_live_page_follows_a_deployment_without_reloading(browser, daphne, make_app):
    make_app("web", LOCAL.replace("local", "web"))
    deployment = transitions.create(App.objects.get(name="web"), "HEAD", name="tester")
    page = logged_in_page(browser, daphne, User.objects.create_superuser("root"))
    page.goto(f"{daphne.url}/deployments/{deployment.public_id}/")
    page.wait_for_function("document.getElementById('live-state').textContent.includes('live')")
    page.evaluate("window.notReloaded = true")

    owner = transitions.owner_id()
    assert transitions.claim(deployment.pk, owner)
    publish(transitions.start_step, deployment.pk, owner, "clone")
    publish(transitions.append_output, deployment.pk, "clone", "<img src=x onerror=alert(1)> cloned\n")
    page.wait_for_selector('#step-clone[data-status="running"]')
    page.wait_for_function("document.getElementById('output-clone').textContent.includes('cloned')")
    # Event text is shown as text, never parsed as markup.
    assert page.locator("#output-clone img").count() == 0 and page.dialogs == []
    assert "Cloning" in page.inner_text("#deployment-header")

    publish(transitions.finish_step, deployment.pk, "clone", StepStatus.SUCCEEDED)
    publish(transitions.start_step, deployment.pk, owner, "build")
    publish(transitions.finish_step, deployment.pk, "build", StepStatus.FAILED, error="docker build: exit 1")
    steps = {**states.initial(), "clone": StepStatus.SUCCEEDED, "build": StepStatus.FAILED}
    publish(transitions.skip_cut_short, deployment.pk, states.steps_cut_short(steps), "build")
    publish(transitions.start_step, deployment.pk, owner, "cleanup")
    publish(transitions.finish_step, deployment.pk, "cleanup", StepStatus.SUCCEEDED)
    publish(transitions.finish, deployment.pk, DeploymentStatus.FAILED, "build failed: docker build: exit 1")

    page.wait_for_selector("#deployment-outcome:not([hidden])")
    page.wait_for_function("document.getElementById('live-state').textContent.includes('finished')")
    assert "build failed: docker build: exit 1" in page.inner_text("#deployment-outcome")
    assert "Failed" in page.inner_text("#deployment-header .big-status")
    assert page.get_attribute("#step-test", "data-status") == "skipped"
    assert "build failed" in page.inner_text("#step-test")
    assert page.text_content("#step-announcer") == "Step cleanup: succeeded"
    assert page.locator("#deployment-header button.danger").count() == 0  # no cancel once over
    assert page.evaluate("window.notReloaded") is True
    # What the page built from events equals what the server renders now.
    live = outputs(page)
    page.reload()
    assert outputs(page) == live and "cloned" in live[0]


@pytest.mark.django_db(transaction=True)
def test_live_page_reconnects_and_resumes_after_the_server_restarts(browser, daphne, make_app):
    make_app("web", LOCAL.replace("local", "web"))
    deployment = transitions.create(App.objects.get(name="web"), "HEAD", name="tester")
    owner = transitions.owner_id()
    assert transitions.claim(deployment.pk, owner)
    publish(transitions.start_step, deployment.pk, owner, "clone")
    publish(transitions.append_output, deployment.pk, "clone", "line 1\n")
    page = logged_in_page(browser, daphne, User.objects.create_superuser("root"))
    page.goto(f"{daphne.url}/deployments/{deployment.public_id}/")
    page.wait_for_function("document.getElementById('live-state').textContent.includes('live')")

    daphne.kill()
    page.wait_for_function("document.getElementById('live-state').textContent.includes('reconnecting')")
    # Written while no server could tell the page: only the database has it.
    publish(transitions.append_output, deployment.pk, "clone", "line 2\n")
    publish(transitions.finish_step, deployment.pk, "clone", StepStatus.SUCCEEDED)
    daphne.start()

    page.wait_for_selector('#step-clone[data-status="succeeded"]', timeout=30000)
    page.wait_for_function("document.getElementById('live-state').textContent.includes('live')")
    publish(transitions.append_output, deployment.pk, "build", "line 3\n")
    page.wait_for_function("document.getElementById('output-build').textContent.includes('line 3')")
    assert page.text_content("#output-clone") == "line 1\nline 2\n"  # each line once
    assert daphne.access_log().count(f"WSCONNECT /ws/deployments/{deployment.public_id}/") >= 1


def test_app_page_offers_a_rollback_only_when_there_is_one(operator, web):
    make_deployment(web, commit="1" * 40, image="web:111", ago=60)
    assert "Roll back…" not in page(operator, "/apps/web/")
    make_deployment(web, commit="2" * 40, image="web:222", ago=30)
    assert "Roll back…" in page(operator, "/apps/web/")


def test_app_page_shows_snapshot_disk_usage(operator, web):
    deployment = make_deployment(web, image="web:1")
    for size in (1024, 3072):
        Snapshot.objects.create(deployment=deployment, app=web, database="web", path="/x", size=size, sha256="0")
    html = page(operator, "/apps/web/")
    assert "2 snapshots on disk, 4.0\xa0KB in all; the newest 5 are kept" in html
