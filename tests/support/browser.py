"""Browser fixtures: Debian's Chromium driven by Playwright, against a real daphne.

Import the fixtures into a test module (`from tests.support.browser import
browser, daphne`) to use them. Without /usr/bin/chromium the tests skip, or
fail when NORN_REQUIRE_BROWSER is set (CI must not pass by skipping).
"""

import os
from pathlib import Path

import pytest
from django.db import connections
from django.test import Client

from tests.support.servers import Daphne

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def browser(monkeypatch):
    if not CHROMIUM.exists():
        if os.environ.get("NORN_REQUIRE_BROWSER"):
            pytest.fail("no /usr/bin/chromium: scripts/services --browser installs it")
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, and
    # Django refuses ORM calls while one runs; the test's own ORM calls are
    # plain synchronous code between browser steps.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
            # While Playwright's loop runs, Django keeps a separate connection
            # for this context; close it, or the test database cannot be dropped.
            connections.close_all()


@pytest.fixture
def daphne(tmp_path, apps_dir):
    with Daphne(tmp_path / "daphne.log", tmp_path / "access.log", extra_env={"NORN_APPS_DIR": str(apps_dir)}) as server:
        yield server


def logged_in_page(browser, server, user):
    """A page whose session belongs to `user`, without going through /login/."""
    client = Client()
    client.force_login(user)
    context = browser.new_context(viewport=DESKTOP)
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": server.url}])
    # Hand the browser the project's own static files, found as collectstatic
    # would find them, so these tests do not depend on how the server serves them.
    context.route(f"{server.url}/static/**", serve_static)
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    return page


def serve_static(route):
    from django.contrib.staticfiles import finders

    found = finders.find(route.request.url.split("/static/", 1)[1])
    if found:
        route.fulfill(path=found)
    else:
        route.fulfill(status=404)


def log_in(page, server, username, password):
    """Log in through the real /login/ form; ends on the overview."""
    page.goto(f"{server.url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/")
