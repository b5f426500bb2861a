"""The app page's history in a browser (Chromium, htmx, a real daphne): the
Older and Newer links swap the table in place, put the keyset page's URL in
the address bar (?page=N&after=<id>), and the back button shows the page
before again."""

import re

import pytest
from django.contrib.auth.models import Permission, User

from tests.support.browser import browser, daphne, logged_in_page  # noqa: F401 (fixtures)
from tests.support.dashboard import web  # noqa: F401 (fixture)
from tests.support.dashboard import make_deployment

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips or fails
    expect = None

pytestmark = pytest.mark.django_db(transaction=True)


def test_older_and_newer_swap_the_history_and_keep_a_bookmarkable_url(browser, daphne, web):
    made = [make_deployment(web, ref=f"r{i}", ago=50 - i) for i in range(45)]
    user = User.objects.create_user("viewer")
    user.user_permissions.add(Permission.objects.get(codename="view_deployment"))
    page = logged_in_page(browser, daphne, user)
    page.goto(f"{daphne.url}/apps/web/")
    # A mark on the window: it survives swaps, and a full page load drops it.
    page.evaluate("window.nornMark = 1")
    history = page.locator("#history")
    expect(history).to_contain_text(made[-1].short_id)

    history.get_by_role("link", name="Older ›").click()
    expect(history).to_contain_text("Page 2 of 3")
    expect(history).to_contain_text(made[24].short_id)
    expect(history).not_to_contain_text(made[25].short_id)
    expect(page).to_have_url(re.compile(rf"\?page=2&after={made[25].public_id}$"))
    assert page.evaluate("window.nornMark") == 1

    # The URL in the address bar is the same page when loaded on its own.
    bookmarked = page.url
    page.locator("#history").get_by_role("link", name="Older ›").click()
    expect(history).to_contain_text("Page 3 of 3")
    expect(history).to_contain_text(made[0].short_id)
    history.get_by_role("link", name="‹ Newer").click()
    expect(history).to_contain_text("Page 2 of 3")
    expect(page).to_have_url(re.compile(rf"\?page=2&before={made[4].public_id}$"))
    expect(history).to_contain_text(made[24].short_id)
    page.goto(bookmarked)
    expect(page.locator("#history")).to_contain_text(made[5].short_id)
    expect(page.locator("#history")).not_to_contain_text(made[4].short_id)
