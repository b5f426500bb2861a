"""The deployment page without JS: the timeline, its partials, what to do
after a failure, and cancel."""

import re

import pytest
from django.contrib.auth.models import Permission, User

from deployments import appdb, states, transitions
from deployments.models import Deployment, DeploymentStatus, Snapshot, StepStatus
from tests.support.dashboard import web, operator  # noqa: F401 (fixtures)
from tests.support.dashboard import user_with, make_deployment, all_succeeded, page, running_deployment

pytestmark = pytest.mark.django_db


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
    assert appdb.restore_command("web", "/snap/web_c.dump", app="web") in outcome
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
    assert (deployment.status, deployment.error) == ("cancelled", "cancelled by op (dashboard)")
    assert "Cancelled before it started." in page(client, response["Location"])


def test_cancel_of_a_running_deployment_with_htmx_returns_the_header(operator, web):
    deployment = running_deployment(web)
    response = operator.post(f"/deployments/{deployment.public_id}/cancel", headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="deployment-header"')
    assert "Cancel requested by op (dashboard)" in html
    assert Deployment.objects.get(pk=deployment.pk).cancel_requested_by == "op (dashboard)"


def test_the_pushes_a_deployment_deploys_are_on_its_page_and_in_its_header(operator, web):
    from deployments.models import AutoDeployTrigger

    deployment = make_deployment(web, DeploymentStatus.QUEUED, ref="b" * 40)
    html = page(operator, f"/deployments/{deployment.public_id}/")
    assert "pushes-heading" not in html  # asked for by hand: no pushes
    commits = [{"sha": f"{i:040x}", "subject": f"change {i}"} for i in range(1, 51)]
    commits[-1]["subject"] = "<script>alert(1)</script> fix"
    AutoDeployTrigger.objects.create(
        deployment=deployment, source="webhook", provider="github", delivery_id="d-1", pusher="alice",
        branch="main", before="a" * 40, after="c" * 40, commits=commits[:2], commits_total=2, action="queued")
    AutoDeployTrigger.objects.create(
        deployment=deployment, source="poll", branch="main", before="c" * 40, after="b" * 40,
        commits=commits, commits_total=60, action="retargeted")
    for path in (f"/deployments/{deployment.public_id}/", f"/deployments/{deployment.public_id}/_header"):
        html = page(operator, path)
        pushes = html.split('<section class="pushes"')[1].split("</section>")[0]
        assert "The 2 pushes it deploys" in pushes
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", pushes))
        assert "alice pushed main aaaaaaa → ccccccc (2 commits), a GitHub webhook" in text
        assert ": queued this deployment" in text
        assert "Someone pushed main ccccccc → bbbbbbb (60 commits), seen by the poll" in text
        assert ": moved it, still queued, to this commit" in text
        # The newest three of each push, newest first, then how many are left out.
        assert text.index("change 2") < text.index("change 1")
        assert text.index("fix") < text.index("change 49") < text.index("change 48") < text.index("and 57 older")
        assert "change 47" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt; fix" in pushes and "<script>alert" not in pushes
