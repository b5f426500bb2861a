"""The admin that fits the screen, without a browser: the deployment list's
columns and their titles, human durations, the read-only deployment page
with its steps inline and no way to delete a deployment; and the
identifiers' template tags (deployments/templatetags/ids.py).
(tests/test_browser_pages.py looks at the same pages in Chromium.)"""

import re
from datetime import timedelta

import pytest
from django.contrib import admin
from django.db import connection
from django.template import Context, Template
from django.test.utils import CaptureQueriesContext

from deployments import transitions
from deployments.models import Deployment, DeploymentStatus, StepStatus
from deployments.templatetags.ids import ident_html, shorten
from tests.support.dashboard import web  # noqa: F401 (fixture)
from tests.support.dashboard import all_succeeded, make_deployment, page

pytestmark = pytest.mark.django_db

ADMIN = "/admin/deployments/deployment/"


def headers(html):
    return [re.sub(r"<[^>]+>", "", h).strip() for h in
            re.findall(r'<th scope="col"\s+class="[^"]*">(.*?)</th>', html, re.S)]


def test_the_list_titles_its_columns_readably(admin_client, web):
    make_deployment(web, steps=all_succeeded())
    titles = [t for t in headers(page(admin_client, ADMIN)) if t]
    assert titles == ["ID", "App", "Kind", "Ref / commit", "Status", "Requested by", "Queued at", "Duration"]


def test_the_list_shows_kind_ref_commit_and_human_durations(admin_client, web):
    quick = make_deployment(web, ref="main", commit="a" * 40)
    Deployment.objects.filter(pk=quick.pk).update(finished_at=quick.started_at + timedelta(seconds=0.076105))
    long = make_deployment(web, ref="release-2", commit="b" * 40, kind="rollback")
    Deployment.objects.filter(pk=long.pk).update(finished_at=long.started_at + timedelta(seconds=72))
    make_deployment(web, DeploymentStatus.BUILDING, ref="next")
    html = page(admin_client, ADMIN)
    assert "0.1 s" in html and "1 min 12 s" in html and "0:00:" not in html
    assert '<td class="field-took">—</td>' in html  # still running
    assert '<td class="field-kind">Rollback</td>' in html
    assert '<code class="ref" title="release-2">release-2</code>' in html
    assert '<code title="' + "b" * 40 + '">bbbbbbb</code>' in html
    assert 'data-copy="' + "b" * 40 + '"' in html


def test_deployments_cannot_be_deleted_from_the_admin(admin_client, web):
    deployment = make_deployment(web)
    listing = page(admin_client, ADMIN)
    assert "delete_selected" not in listing
    detail = page(admin_client, f"{ADMIN}{deployment.pk}/change/")
    assert "deletelink" not in detail and f"{deployment.pk}/delete/" not in detail
    assert admin_client.get(f"{ADMIN}{deployment.pk}/delete/").status_code == 403
    response = admin_client.post(ADMIN, {"action": "delete_selected", "_selected_action": [deployment.pk], "post": "yes"})
    assert response.status_code in (200, 302)
    assert Deployment.objects.filter(pk=deployment.pk).exists()


def test_the_deployment_page_has_its_steps_inline_with_human_durations(admin_client, web):
    steps = {**all_succeeded(0.8), "build": (StepStatus.SUCCEEDED, 72, {"output": "line\n" * 300}),
             "test": (StepStatus.FAILED, 3.4, {"error": "test failed: exit status 1"}),
             "snapshot": (StepStatus.SKIPPED, None, {"skip_reason": "no services.postgres"})}
    deployment = make_deployment(web, DeploymentStatus.FAILED, commit="c" * 40, image="reg/web:" + "c" * 40,
                                 steps=steps, error="test failed: exit status 1")
    html = page(admin_client, f"{ADMIN}{deployment.pk}/change/")
    assert "1 min 12 s" in html and "0.8 s" in html and "3.4 s" in html and "1 min 30 s" in html
    assert not re.search(r"\d:\d\d:\d\d\.\d", html)
    assert '<details class="norn-output"><summary>last 200 of 300 lines</summary>' in html
    assert "no services.postgres" in html and "test failed: exit status 1" in html
    assert 'class="status status-failed"' in html
    assert f'data-copy="{deployment.public_id}"' in html and 'data-copy="' + "c" * 40 + '"' in html
    # Finished: no worker bookkeeping.
    assert "Run by" not in html and "Heartbeat" not in html and "vm:" not in html


def test_a_running_deployment_names_its_worker_readably(admin_client, web):
    deployment = make_deployment(web, DeploymentStatus.MIGRATING)
    Deployment.objects.filter(pk=deployment.pk).update(owner="vm-7:11973:9f8e7d6c5b4a")
    html = page(admin_client, f"{ADMIN}{deployment.pk}/change/")
    assert "worker on host vm-7, pid 11973" in html and "9f8e7d6c5b4a" not in html
    Deployment.objects.filter(pk=deployment.pk).update(owner="")
    assert "no worker yet" in page(admin_client, f"{ADMIN}{deployment.pk}/change/")


def test_the_deployment_page_takes_the_same_queries_however_many_steps_ran(admin_client, web):
    few = make_deployment(web, steps={"clone": (StepStatus.SUCCEEDED, 1)})
    many = make_deployment(web, steps=all_succeeded())

    def queries(deployment):
        url = f"{ADMIN}{deployment.pk}/change/"
        admin_client.get(url)
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get(url).status_code == 200
        return len(ctx.captured_queries)

    assert queries(few) == queries(many)


def test_the_list_takes_the_same_queries_with_copy_buttons_and_kinds(admin_client, web):
    def queries():
        admin_client.get(ADMIN)
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get(ADMIN).status_code == 200
        return len(ctx.captured_queries)

    make_deployment(web, commit="1" * 40)
    one = queries()
    for i in range(30):
        make_deployment(web, commit=f"{i % 10}" * 40, kind="rollback" if i % 3 else "deploy", ago=i)
    assert queries() == one


def test_the_duration_of_the_list_is_a_dash_until_it_ends(web):
    admin.autodiscover()
    model_admin = admin.site._registry[Deployment]
    running = make_deployment(web, DeploymentStatus.BUILDING)
    done = make_deployment(web)
    Deployment.objects.filter(pk=done.pk).update(finished_at=done.started_at + timedelta(seconds=0.076105))
    done.refresh_from_db()
    assert (model_admin.took(running), model_admin.took(done)) == ("—", "0.1 s")


def test_owner_tokens_parse_as_the_worker_writes_them():
    host, pid, _ = transitions.parse_owner(transitions.owner_id())
    assert host and pid > 0


# --- the identifiers' template tags --------------------------------------------------------


def test_short_id_keeps_the_start_and_the_whole_value_in_its_title_and_button():
    uuid = "3f2a1b9c-0000-4000-8000-000000000001"
    html = Template("{% load ids %}{% short_id value %}").render(Context({"value": uuid}))
    assert html.startswith('<span class="ident"><code title="' + uuid + '">3f2a1b9c</code><button type="button" class="copy"')
    assert f'data-copy="{uuid}" aria-label="Copy {uuid}"' in html
    assert Template("{% load ids %}{% short_id value 7 copy=False %}").render(Context({"value": "a" * 40})) == \
        '<span class="ident"><code title="' + "a" * 40 + '">aaaaaaa</code></span>'


def test_short_middle_keeps_both_ends_of_a_path():
    path = "/var/lib/norn/snapshots/hello-web/2026-11-30T09-48-01-pre-migration.dump"
    short = shorten(path, 32, middle=True)
    assert len(short) == 32 and short.startswith("/var/lib/nor") and short.endswith("pre-migration.dump")
    assert "…" in short
    assert shorten("web_db", 32, middle=True) == "web_db"
    assert shorten("abcdef", 3) == "abc"
    heading = Template("{% load ids %}{{ value|middle:12 }}").render(Context({"value": "web_production_database"}))
    assert heading == "web_…atabase"


def test_short_image_keeps_the_name_and_the_tags_start():
    from deployments.templatetags.ids import shorten_image

    assert shorten_image("127.0.0.1:5000/norn/web:" + "9" * 40) == "127.0.0.1:5000/norn/web:" + "9" * 12
    assert shorten_image("web:1") == "web:1"
    assert shorten_image("127.0.0.1:5000/web") == "127.0.0.1:5000/web"  # a registry's port, no tag
    long_name = "registry.example.com:8443/" + "team/" * 10 + "web"
    short = shorten_image(long_name + ":v1")
    assert short.endswith("/web:v1") and "…" in short and len(short) == 40 + 3
    html = Template("{% load ids %}{% short_image value %}").render(Context({"value": "reg/web:" + "a" * 40}))
    assert '<code title="reg/web:' + "a" * 40 + '">reg/web:' + "a" * 12 + "</code>" in html


def test_identifiers_are_escaped_and_none_is_a_dash():
    html = ident_html('<img src=x onerror="alert(1)">', 8)
    assert "<img" not in html and "&lt;img" in html and "&quot;" in html
    assert ident_html(None) == "—" and ident_html("  ") == "—"
    rendered = Template("{% load ids %}{% short_middle value 10 %}").render(Context({"value": "<b>" * 10}))
    assert "<b>" not in rendered
