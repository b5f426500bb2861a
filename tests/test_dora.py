"""DORA's four figures (deployments/dora.py, docs/metrics.md) on a known
history computed by hand, their windows, an app without history, and the
app page that shows them at a constant query count."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deployments import dora, transitions
from deployments.models import Deployment, DeploymentStatus, Step, StepStatus
from tests.support.browser import browser, daphne  # noqa: F401 (fixtures)
from tests.support.dashboard import operator, page, web  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(microsecond=0)
DAY, HOUR, MINUTE = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)


def record(app, kind, status, queued, took=10 * MINUTE, lead=None, deploy_step=StepStatus.SUCCEEDED):
    """A finished deployment queued at `queued`, ended `took` later; its
    commit made `lead` before it ended; its deploy step ended `deploy_step`."""
    deployment = transitions.create(app, "HEAD", via="cli", runtime="docker", kind=kind)
    finished = queued + took
    Deployment.objects.filter(pk=deployment.pk).update(
        status=status, queued_at=queued, started_at=queued, finished_at=finished,
        commit_time=finished - lead if lead is not None else None, image="web:1",
    )
    if deploy_step is not None:
        Step.objects.filter(deployment=deployment, name="deploy").update(status=deploy_step)
    return deployment


@pytest.fixture
def history(web):
    """web's last 40 days:
    D0 (40 d ago) went live, lead 1 h; next change D1, a deploy: not a failure.
    D1 (20 d) went live, lead 1 h; next change R1, a rollback: a failed change,
       restored when R1 went live 55 min after D1 did (R1 replaced it: rolled_back).
    D2 (10 d) failed its deploy step: never live, changes nothing.
    D3 (10 d + 1 h) went live, lead 3 h; next change X, a restore (that failed):
       a failed change, restored when X2 ended 5 d 10 min after D3 went live.
    D4 (2 d) went live, commit time unknown; C (1 d) cancelled: ignored.
    D5 (1 h) went live, lead 30 min."""
    record(web, "deploy", DeploymentStatus.DEPLOYED, NOW - 40 * DAY, lead=HOUR)
    record(web, "deploy", DeploymentStatus.ROLLED_BACK, NOW - 20 * DAY, lead=HOUR)
    record(web, "rollback", DeploymentStatus.DEPLOYED, NOW - 20 * DAY + HOUR, took=5 * MINUTE)
    record(web, "deploy", DeploymentStatus.FAILED, NOW - 10 * DAY, lead=HOUR, deploy_step=StepStatus.FAILED)
    record(web, "deploy", DeploymentStatus.DEPLOYED, NOW - 10 * DAY + HOUR, lead=3 * HOUR)
    record(web, "restore", DeploymentStatus.FAILED, NOW - 5 * DAY, deploy_step=None)
    record(web, "restore", DeploymentStatus.DEPLOYED, NOW - 5 * DAY + HOUR, took=20 * MINUTE, deploy_step=None)
    record(web, "deploy", DeploymentStatus.DEPLOYED, NOW - 2 * DAY)
    record(web, "deploy", DeploymentStatus.CANCELLED, NOW - DAY)
    record(web, "deploy", DeploymentStatus.DEPLOYED, NOW - HOUR, took=5 * MINUTE, lead=30 * MINUTE)
    return web


def test_the_four_figures_over_30_days(history):
    figures = dora.for_app(history, None, NOW)
    assert (figures.window, figures.days, figures.error) == ("30d", 30, "")
    assert figures.deploys_live == 4  # D1, D3, D4, D5
    assert figures.frequency == pytest.approx(4 / 30)
    assert figures.lead_time == 3600  # median of 1 h, 3 h, 30 min (D4's commit time is unknown)
    assert (figures.failed_changes, figures.change_failure_rate) == (2, 0.5)  # D1 and D3
    # Median of 55 min and 5 d 10 min.
    assert figures.time_to_restore == (55 * 60 + (5 * 86400 + 10 * 60)) / 2
    assert figures.time_to_restore_text == "2 d 12 h"


def test_windows_of_7_and_90_days(history):
    week = dora.for_app(history, "7d", NOW)
    assert (week.deploys_live, week.frequency, week.lead_time) == (2, 2 / 7, 30 * 60)  # D4, D5
    assert (week.change_failure_rate, week.time_to_restore) == (0, None)
    quarter = dora.for_app(history, "90d", NOW)
    assert (quarter.deploys_live, quarter.failed_changes, quarter.change_failure_rate) == (5, 2, 0.4)
    assert quarter.lead_time == 3600  # median of 1 h, 1 h, 3 h, 30 min


def test_a_window_starts_exactly_its_days_ago(web):
    record(web, "deploy", DeploymentStatus.DEPLOYED, NOW - 7 * DAY)
    record(web, "deploy", DeploymentStatus.DEPLOYED, NOW - 7 * DAY - timedelta(seconds=1))
    assert dora.for_app(web, "7d", NOW).deploys_live == 1
    assert dora.for_app(web, "30d", NOW).deploys_live == 2


def test_an_app_without_history_has_no_data_and_no_division_by_zero(web, operator):
    figures = dora.for_app(web, "90d", NOW)
    assert (figures.deploys_live, figures.frequency) == (0, 0)
    assert figures.lead_time is figures.change_failure_rate is figures.time_to_restore is None
    html = page(operator, "/apps/web/?part=dora")
    block = html.split('id="dora"')[1].split("</section>")[0]
    assert block.count("no data") == 4


def test_a_bad_window_is_named_and_the_default_shown(web):
    figures = dora.for_app(web, "1y", NOW)
    assert figures.window == "30d"
    assert figures.error == "window='1y' is not a window; use 7d, 30d or 90d (showing 30d)"


def test_the_app_page_fetches_them_after_it_is_shown(history, operator):
    """The page itself reads none of the window: its DORA section asks for
    them (htmx, on load), keeping the window the page was opened with."""
    html = page(operator, "/apps/web/?window=7d")
    assert 'hx-get="?part=dora&amp;window=7d" hx-trigger="load"' in html
    assert "a day" not in html.split('id="dora"')[1].split("</section>")[0]


def test_the_app_page_shows_them_with_window_links(history, operator):
    block = page(operator, "/apps/web/?part=dora").split('id="dora"')[1].split("</section>")[0]
    assert "last 30 days" in block
    assert "<strong>0.13</strong> a day" in block and "(4 deploys went live)" in block
    assert "<strong>1 h</strong>" in block
    assert "<strong>50%</strong>" in block and "2 of 4 needed a rollback or restore" in block
    assert "<strong>2 d 12 h</strong>" in block
    assert 'href="?window=7d#dora"' in block and 'href="?window=90d#dora"' in block
    assert '<strong aria-current="true">30d</strong>' in block
    week = page(operator, "/apps/web/?part=dora&window=7d").split('id="dora"')[1].split("</section>")[0]
    assert "last 7 days" in week and "(2 deploys went live)" in week and "<strong>30 min</strong>" in week
    bad = page(operator, "/apps/web/?part=dora&window=%3Cb%3E").split('id="dora"')[1].split("</section>")[0]
    assert "window=&#x27;&lt;b&gt;&#x27; is not a window" in bad and "last 30 days" in bad


def test_the_app_page_costs_the_same_queries_with_a_longer_history(web, operator):
    def count():
        operator.get("/apps/web/")
        with CaptureQueriesContext(connection) as ctx:
            assert operator.get("/apps/web/?part=dora&window=90d").status_code == 200
        return len(ctx.captured_queries)

    record(web, "deploy", DeploymentStatus.DEPLOYED, NOW - DAY, lead=HOUR)
    few = count()
    for i in range(30):
        kind = "rollback" if i % 4 == 3 else "deploy"
        status = DeploymentStatus.ROLLED_BACK if i % 4 == 2 else DeploymentStatus.DEPLOYED
        record(web, kind, status, NOW - (i + 2) * DAY, lead=HOUR)
    assert count() == few


@pytest.mark.django_db(transaction=True)
def test_the_dora_block_fits_a_desktop_and_a_phone(web, browser, daphne):  # noqa: F811
    """In a real browser on a real daphne: the window links switch the
    figures; screenshots at 1280 and 390 px (test-artifacts/screenshots)."""
    from django.contrib.auth.models import Permission, User

    from playwright.sync_api import expect

    from tests.support.browser import logged_in_page
    from tests.test_browser_pages import screenshots

    record(web, "deploy", DeploymentStatus.ROLLED_BACK, NOW - 20 * DAY, lead=2 * HOUR)
    record(web, "rollback", DeploymentStatus.DEPLOYED, NOW - 20 * DAY + HOUR, took=5 * MINUTE)
    record(web, "deploy", DeploymentStatus.DEPLOYED, NOW - 3 * DAY, lead=40 * MINUTE)
    record(web, "deploy", DeploymentStatus.DEPLOYED, NOW - DAY, lead=HOUR)
    user = User.objects.create_user("dora-viewer", password="x")
    user.user_permissions.add(*Permission.objects.filter(codename="view_deployment"))
    page_ = logged_in_page(browser, daphne, user)
    page_.goto(f"{daphne.url}/apps/web/")
    block = page_.locator("#dora")
    expect(block).to_contain_text("1 of 3 needed a rollback or restore")  # once htmx fetched it
    assert "2 of 3 needed" not in block.inner_text()
    page_.locator("#dora").get_by_role("link", name="7d").click()
    page_.wait_for_url(f"{daphne.url}/apps/web/?window=7d#dora")
    expect(block).to_contain_text("last 7 days")
    expect(block).to_contain_text("2 deploys went live")
    block.scroll_into_view_if_needed()
    screenshots(page_, "25-app-dora")
