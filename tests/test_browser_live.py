"""What is live, in a browser (Chromium against a real daphne): the overview's
"In service" column and the app page's live row, with screenshots of both at
1280 and 390 px (test-artifacts/screenshots), where the pages must not
overflow sideways."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from deployments.models import Deployment, DeploymentStatus, Snapshot
from tests.support.browser import browser, daphne, logged_in_page  # noqa: F401 (fixtures)
from tests.support.dashboard import web  # noqa: F401 (fixture)
from tests.support.dashboard import all_succeeded, make_deployment

try:
    from playwright.sync_api import expect

    from tests.test_browser import screenshots
except ImportError:  # the browser fixture skips or fails
    expect = screenshots = None

pytestmark = pytest.mark.django_db(transaction=True)


def went_live(app, image, ago, subject):
    deployment = make_deployment(app, commit=image[-1] * 40, image=image, steps=all_succeeded(), ago=ago)
    Deployment.objects.filter(pk=deployment.pk).update(
        commit_subject=subject, commit_author="Ada Lovelace", finished_at=timezone.now() - timedelta(minutes=ago))
    return deployment


def test_overview_and_history_show_what_is_live(browser, daphne, web, make_app):
    went_live(web, "web:1", 300, "Serve the landing page from the cache")
    live = went_live(web, "web:2", 200, "Render the invoice list without a query per row, and page it by date")
    failed = make_deployment(web, DeploymentStatus.FAILED, ref="main", ago=100, commit="3" * 40, failed_step="test",
                             error="test failed: sh exited with status 1:\nFAILED tests/test_invoices.py::test_totals")
    make_deployment(web, DeploymentStatus.FAILED, kind="rollback", rollback_to=live, ago=90, failed_step="deploy",
                    error="deploy failed: the new container exited with status 137 before it was ready")
    snapshot = Snapshot.objects.create(deployment=live, app=web, database="web", path="/var/snapshots/web.dump",
                                       size=2048, sha256="0" * 64)
    make_deployment(web, kind="restore", snapshot=snapshot, ago=80)
    cancelled = make_deployment(web, DeploymentStatus.CANCELLED, ref="feature/long-branch-name", ago=60,
                                error="cancelled by alice (dashboard)")
    make_app("idle", "app: idle\nrole: worker\n")
    user = User.objects.create_user("viewer")
    user.user_permissions.add(Permission.objects.get(codename="view_deployment"))
    page = logged_in_page(browser, daphne, user)

    page.goto(f"{daphne.url}/")
    row = page.locator("tr", has=page.get_by_role("link", name="web", exact=True))
    in_service = row.locator('td[data-label="In service"]')
    expect(in_service).to_contain_text(f"● Live {live.short_id}")
    expect(in_service).to_contain_text("Render the invoice list")
    expect(in_service).to_contain_text("healthy at deploy")
    expect(row.locator('td[data-label="Last deployment"]')).to_contain_text("Cancelled")
    expect(row.locator('td[data-label="Last deployment"]').get_by_role("link")).to_have_attribute(
        "href", f"/deployments/{cancelled.public_id}/")
    expect(page.locator("tr", has=page.get_by_role("link", name="idle", exact=True))).to_contain_text(
        "Nothing in service")
    screenshots(page, "overview-live")

    page.goto(f"{daphne.url}/apps/web/")
    live_row = page.locator("#history tr.live")
    expect(live_row).to_have_count(1)
    expect(live_row).to_contain_text(live.short_id)
    expect(live_row).to_contain_text("● Live")
    expect(page.locator("#history")).to_contain_text("rollback to " + live.short_id)
    expect(page.locator("#history")).to_contain_text(f"restore of snapshot {snapshot.pk}")
    expect(page.locator("#history tr", has_text=failed.short_id)).to_contain_text("test: sh exited with status 1:")
    expect(page.locator("#history tr", has_text=cancelled.short_id)).to_contain_text("Cancelled")
    screenshots(page, "app-history-live")

    page.goto(f"{daphne.url}/deployments/{live.public_id}/")
    expect(page.locator("#deployment-outcome")).to_contain_text("Image web:2 is live")
    page.goto(f"{daphne.url}/deployments/{cancelled.public_id}/")
    expect(page.locator("#deployment-outcome")).to_contain_text("Cancelled")
    expect(page.locator("#deployment-outcome")).not_to_contain_text("Not deployed")
