"""Pages that fit, in a real browser (Debian's Chromium through Playwright,
a real daphne): the admin deployment list at 1280 px without scrolling
sideways, the admin's read-only deployment page, the rollback page on a
phone, the favicon, identifiers that never wrap and copy buttons that copy.
Screenshots at 1280 and 390 px go to test-artifacts/screenshots.
"""

import re

import pytest
from django.contrib.auth.models import User

from deployments import transitions
from deployments.models import Deployment, DeploymentStatus, Snapshot, StepStatus
from tests.support.browser import DESKTOP, PHONE, browser, daphne, logged_in_page  # noqa: F401 (fixtures)
from tests.support.dashboard import web  # noqa: F401 (fixture)
from tests.support.dashboard import all_succeeded, make_deployment, write_snapshot
from tests.test_browser import screenshots

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips or fails
    expect = None

pytestmark = pytest.mark.django_db(transaction=True)

ADMIN = "/admin/deployments/deployment/"
# Every column the list must show at 1280 px, by its title.
COLUMNS = ["ID", "App", "Kind", "Ref / commit", "Status", "Requested by", "Queued at", "Duration"]
LONG_REF = "feature/a-branch-name-long-enough-to-need-shortening-in-a-table"


@pytest.fixture
def superuser():
    return User.objects.create_superuser("admin-with-a-long-name", password="x")


def a_history(web, make_app):
    """Deployments as an operator's list has them: apps with longer names, long refs, people with long
    names, every kind, failures, one running."""
    from apps_registry.models import App

    make_app("notifications-api", "app: notifications-api\nrole: worker\n")
    other = App.objects.get(name="notifications-api")
    someone = User.objects.create_user("margaret.hamilton-longname")
    made = []
    for i in range(12):
        status = [DeploymentStatus.DEPLOYED, DeploymentStatus.FAILED, DeploymentStatus.ROLLED_BACK][i % 3]
        made.append(make_deployment(web, status, ref=LONG_REF if i % 2 else "main", commit=f"{i:x}" * 40,
                                    image=f"127.0.0.1:5000/norn/web:{f'{i:x}' * 40}", ago=100 - i,
                                    steps=all_succeeded(), kind="rollback" if i == 5 else "deploy"))
    made.append(make_deployment(other, DeploymentStatus.MIGRATING, ref="main", commit="f" * 40))
    made.append(make_deployment(other, ref=LONG_REF, commit="e" * 40, kind="restore"))
    Deployment.objects.filter(pk__in=[d.pk for d in made[::2]]).update(requested_by=someone)
    return made


def cells_fit(page):
    """(the table's scrollWidth, its container's clientWidth)."""
    return page.evaluate("""() => {
        const table = document.getElementById('result_list');
        return [table.scrollWidth, table.parentElement.clientWidth];
    }""")


def test_admin_list_shows_every_column_at_1280_without_scrolling(browser, daphne, web, make_app, superuser):
    a_history(web, make_app)
    page = logged_in_page(browser, daphne, superuser)
    page.goto(f"{daphne.url}{ADMIN}")
    headers = page.locator("#result_list thead th").evaluate_all("ths => ths.map(th => th.textContent.trim())")
    assert [h for h in headers if h] == COLUMNS
    table_width, room = cells_fit(page)
    assert table_width <= room, f"the list is {table_width} px wide in {room} px: it scrolls sideways"
    # Every column's title is on screen, not beyond its right edge.
    for title in COLUMNS:
        box = page.locator("#result_list thead th", has_text=title).first.bounding_box()
        assert box and box["x"] + box["width"] <= DESKTOP["width"], title
    # Human durations, readable column titles, a row per deployment.
    body = page.locator("#result_list tbody").inner_text()
    # No timedelta as Python writes it (0:01:30, 0:00:00.076105); "10:09 a.m." is a time of day.
    assert "1 min 30 s" in body and not re.search(r"\b\d+:\d\d:\d\d", body)
    assert "Requested by label" not in page.content()
    # The long ref is cut with an ellipsis, whole in its title; the commit is short, whole on its copy button.
    ref = page.locator("td.field-ref_commit code.ref", has_text="feature/").first
    assert ref.get_attribute("title") == LONG_REF
    assert ref.evaluate("e => e.scrollWidth > e.clientWidth")
    # Statuses coloured as on the dashboard, the word kept.
    failed = page.locator("#result_list td.field-status .status-failed").first
    expect(failed).to_have_text("Failed")
    assert failed.evaluate("e => getComputedStyle(e).color") == "rgb(207, 34, 46)"
    # No bulk delete among the actions.
    assert "delete_selected" not in page.locator("select[name=action]").inner_html()
    # On a phone every row is a short paragraph: nothing to scroll sideways, every value there.
    page.set_viewport_size(PHONE)
    table_width, room = cells_fit(page)
    assert table_width <= room, f"on a phone the list is {table_width} px wide in {room} px"
    first = page.locator("#result_list tbody tr").first
    for cell in ("short_id", "app", "kind", "ref_commit", "status", "requested_by_label", "queued_at", "took"):
        expect(first.locator(f".field-{cell}")).to_be_visible()
    page.set_viewport_size(DESKTOP)
    screenshots(page, "20-admin-deployment-list")


def test_admin_deployment_page_is_read_only_with_its_steps_inline(browser, daphne, web, superuser):
    steps = {**all_succeeded(0.8), "build": (StepStatus.SUCCEEDED, 72, {"output": "step 1/2\nstep 2/2\n"}),
             "test": (StepStatus.FAILED, 3.4, {"error": "test failed: exit status 1", "output": "FAIL web\n"})}
    failed = make_deployment(web, DeploymentStatus.FAILED, commit="c" * 40, image="web:" + "c" * 40, steps=steps,
                             error="test failed: exit status 1")
    running = make_deployment(web, DeploymentStatus.MIGRATING, ref="main")
    Deployment.objects.filter(pk=running.pk).update(owner=f"{transitions.owner_id()}")
    page = logged_in_page(browser, daphne, superuser)
    page.goto(f"{daphne.url}{ADMIN}{failed.pk}/change/")
    content = page.locator("#content")
    # Read-only, and no Delete.
    assert page.locator("a.deletelink").count() == 0
    assert page.locator("input[type=submit]").count() == 0
    # The steps inline: each status, human duration, error; output folded.
    inline = page.locator(".inline-group")
    expect(inline).to_contain_text("1 min 12 s")
    expect(inline).to_contain_text("0.8 s")
    expect(inline).to_contain_text("3.4 s")
    expect(inline).to_contain_text("test failed: exit status 1")
    assert "0:00:" not in content.inner_text()
    expect(inline).to_contain_text("1 line")
    output = inline.locator("details.norn-output", has_text="2 lines").first
    expect(output.locator("pre")).to_be_hidden()
    output.locator("summary").click()
    expect(output.locator("pre")).to_contain_text("step 2/2")
    # The whole deployment takes 1 min 30 s; a finished one names no worker.
    expect(content).to_contain_text("1 min 30 s")
    expect(content).not_to_contain_text("Run by")
    screenshots(page, "21-admin-deployment-page")
    # A running one names its worker readably, not its owner token.
    page.goto(f"{daphne.url}{ADMIN}{running.pk}/change/")
    host, pid, nonce = transitions.parse_owner(transitions.owner_id())
    expect(content).to_contain_text(f"worker on host {host}, pid {pid}")
    expect(content).not_to_contain_text(nonce)


def test_rollback_page_on_a_phone_lists_choices_compactly_and_warns_once(browser, daphne, web, superuser):
    older = [make_deployment(web, commit=f"{i:x}" * 40, image=f"127.0.0.1:5000/norn/web:{f'{i:x}' * 40}",
                             ago=200 - i) for i in range(10)]
    live = make_deployment(web, commit="e" * 40, image="127.0.0.1:5000/norn/web:" + "e" * 40)
    # Migrations ran after every older one went live: each has a snapshot to restore with it.
    for deployment in [*older[1:], live]:
        Snapshot.objects.create(deployment=deployment, app=web, database="web_production_database", path="/s/x.dump",
                                size=1, sha256="0" * 64)
    page = logged_in_page(browser, daphne, superuser)
    page.set_viewport_size(PHONE)
    page.goto(f"{daphne.url}/apps/web/rollback")
    assert page.locator("input[name=to]").count() == 10
    assert page.get_by_text("Migrations ran after this version went live").count() == 1
    assert page.locator(".choice-note").count() >= 9
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 1400, f"the rollback page is {height} px tall on a phone"
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert_one_line(page)
    screenshots(page, "22-rollback-page")


def assert_one_line(page):
    """Every shortened identifier on the page is one line high, never wrapped."""
    heights = page.evaluate("""() => [...document.querySelectorAll('.ident code')].map(code => {
        const style = getComputedStyle(code);
        const line = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.5;
        return [code.textContent, code.getClientRects().length, code.getBoundingClientRect().height, line];
    })""")
    assert heights
    for text, rects, height, line in heights:
        assert rects == 1 and height <= line + 1, f"{text!r} wraps: {rects} boxes, {height} px for {line} px lines"


def test_restore_page_identifiers_stay_on_one_line_on_a_phone(browser, daphne, web, superuser, tmp_path):
    deep = tmp_path / ("a-directory-with-a-long-name/" * 3)
    deep.mkdir(parents=True)
    snapshot = write_snapshot(deep, web, make_deployment(web))
    Snapshot.objects.filter(pk=snapshot.pk).update(database="web_production_database_with_a_long_name")
    page = logged_in_page(browser, daphne, superuser)
    for viewport in (PHONE, DESKTOP):
        page.set_viewport_size(viewport)
        page.goto(f"{daphne.url}/snapshots/{snapshot.pk}/restore")
        path = page.locator(f'.ident code[title="{snapshot.path}"]')
        expect(path).to_contain_text("…")
        # The heading and the button name the database short, never broken mid-name.
        expect(page.get_by_role("heading", level=1)).to_have_text("Restore database web_produ…th_a_long_name?")
        assert_one_line(page)
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    screenshots(page, "23-restore-page")


def test_favicon_is_linked_and_served(browser, daphne, superuser):
    page = logged_in_page(browser, daphne, superuser)
    for path in ("/", "/admin/"):
        page.goto(f"{daphne.url}{path}")
        icon = page.locator("link[rel=icon]")
        assert icon.get_attribute("type") == "image/svg+xml"
        assert page.request.get(daphne.url + icon.get_attribute("href")).status == 200
    # /favicon.ico answers without a login, as browsers ask for it.
    response = page.context.browser.new_context().request.get(f"{daphne.url}/favicon.ico")
    assert response.status == 200 and response.headers["content-type"] == "image/svg+xml"
    assert b"<svg" in response.body()


def open_with_clipboard(browser, daphne, user, url, init_script=None):
    page = logged_in_page(browser, daphne, user)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=daphne.url)
    if init_script:
        page.add_init_script(init_script)
    page.goto(f"{daphne.url}{url}")
    return page


def test_copy_button_puts_the_whole_value_on_the_clipboard(browser, daphne, web, superuser):
    deployment = make_deployment(web, commit="d" * 40, image="web:" + "d" * 40, steps=all_succeeded())
    page = open_with_clipboard(browser, daphne, superuser, f"{ADMIN}{deployment.pk}/change/")
    button = page.get_by_role("button", name=f"Copy {deployment.public_id}")
    expect(button).to_be_visible()
    button.click()
    expect(button).to_have_attribute("data-state", "copied")
    assert page.evaluate("navigator.clipboard.readText()") == str(deployment.public_id)
    # In the list too: a row's commit, whole.
    page.goto(f"{daphne.url}{ADMIN}")
    page.get_by_role("button", name=f"Copy {'d' * 40}").click()
    assert page.evaluate("navigator.clipboard.readText()") == "d" * 40


def test_copy_button_falls_back_without_the_clipboard_api(browser, daphne, web, superuser, tmp_path):
    snapshot = write_snapshot(tmp_path, web, make_deployment(web))
    no_api = "Object.defineProperty(Navigator.prototype, 'clipboard', {get: () => undefined});"
    page = open_with_clipboard(browser, daphne, superuser, f"/snapshots/{snapshot.pk}/restore", no_api)
    assert page.evaluate("navigator.clipboard") is None
    page.evaluate("""() => {
        window.copied = [];
        document.addEventListener('copy', () => window.copied.push(document.getSelection().toString()));
    }""")
    button = page.get_by_role("button", name=f"Copy {snapshot.sha256}")
    button.click()
    expect(button).to_have_attribute("data-state", "copied")
    assert page.evaluate("window.copied") == [snapshot.sha256]


def test_a_deploy_confirmation_of_a_commit_shows_it_short(browser, daphne, web, superuser):
    sha = "abcdef0123456789" * 2 + "abcdef01"
    page = logged_in_page(browser, daphne, superuser)
    page.set_viewport_size(PHONE)
    page.goto(f"{daphne.url}/apps/web/deploy?kind=sha&ref={sha}")
    if page.locator("button", has_text="Review deployment").count():
        page.locator("input[name=kind][value=sha]").check()
        page.locator("input[name=ref]").fill(sha)
        page.locator("button", has_text="Review deployment").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(sha[:12])
    assert page.locator("h1 code").get_attribute("title") == sha
    assert_one_line(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshots(page, "24-deploy-confirm-commit")
