"""The app page: history, success rate, duration chart, snapshots, rollback
offer, and its query count."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps_registry import discovery
from deployments import appdb, states
from deployments.models import DeploymentStatus, Snapshot, StepStatus
from tests.support.dashboard import web, operator  # noqa: F401 (fixtures)
from tests.support.dashboard import make_deployment, all_succeeded, page

pytestmark = pytest.mark.django_db


def test_app_page_paginates_the_history(operator, web):
    made = [make_deployment(web, ref=f"r{i}", ago=100 - i) for i in range(25)]
    def history(url):
        return page(operator, url).split('<div id="history">')[1].split("</div>")[0]

    first = history("/apps/web/")
    assert "Page 1 of 2" in first and first.count("<tr>") == 1 + 20
    assert made[-1].short_id in first and made[0].short_id not in first
    # The older page starts after this page's last row (paging.LongListPaginator).
    older = f"?page=2&amp;after={made[5].public_id}"
    assert f'href="{older}"' in first and f'hx-get="{older}"' in first
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
    assert appdb.restore_command("web_db", "/var/snap/web_db_abc.dump", app="web") in html


def test_snapshots_are_listed_without_the_apps_database_server_setting(operator, web, settings):
    """NORN_APP_DATABASES_URL unset since the snapshot was taken: the page
    still answers, and the command leaves the server to libpq's PG* variables."""
    settings.NORN_APP_DATABASES = None
    Snapshot.objects.create(
        deployment=make_deployment(web), app=web, database="web_db", path="/var/snap/web_db_abc.dump",
        size=2048, sha256="f" * 64,
    )
    html = page(operator, "/apps/web/")
    assert ("pg_restore --clean --if-exists --single-transaction --no-owner --role=norn_app_web "
            "-d web_db /var/snap/web_db_abc.dump") in html


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
