"""The log viewer in a real browser (Chromium through Playwright, a real
daphne): a 10 MB output opens quickly with its tail, "Load earlier" brings
the lines before it, search finds, highlights and counts, colours show, the
builder notice is one line until asked for, and lines that arrive live are
numbered and coloured the same way. Screenshots at 1280 and 390 px."""

import time
from datetime import datetime

import pytest
from django.utils import timezone

from tests.test_browser import PASSWORD, browser, daphne, log_in, operator, page, publish, screenshots  # noqa: F401

from playwright.sync_api import expect  # noqa: E402 (after test_browser's skip when Playwright is missing)

from apps_registry.models import App
from deployments import transitions
from deployments.models import Deployment, DeploymentStatus, Step, StepStatus

pytestmark = pytest.mark.django_db(transaction=True)

BANNER = (
    "DEPRECATED: The legacy builder is deprecated and will be removed in a future release.\n"
    "            BuildKit is currently disabled; enable it by removing the DOCKER_BUILDKIT=0\n"
    "            environment-variable.\n"
    "\n"
)
BUILD = BANNER + (
    "Sending build context to Docker daemon  3.072kB\r\n"
    "Step 1/2 : FROM norn-busybox:1\n"
    " ---> 3f57d9401f8d\n"
    "Step 2/2 : RUN ./check\n"
    "\x1b[1;32m✓\x1b[0m lint passed\n"
    "\x1b[33mwarning:\x1b[0m 2 deprecated calls\n"
    "\x1b[1;31merror:\x1b[0m \x1b[41;97m tests failed \x1b[0m\n"
)
LINES = 110_000  # of 96 characters: ~10.5 MB


def long_output():
    body = "".join(f"{i:07d} " + "z" * 87 + "\n" for i in range(1, LINES + 1))
    return body + "\x1b[31mFAIL\x1b[0m: needle-in-the-tail\n"


@pytest.fixture
def failed_with_long_output(make_app):
    """A finished deployment: a build with Docker's banner and colours, and a
    test step that failed after writing ~10 MB, through the real write path
    (so each piece has its event and its time)."""
    make_app("web", "app: web\nrole: worker\n")
    deployment = transitions.create(App.objects.get(name="web"), "HEAD", name="tester")
    transitions.append_output(deployment.pk, "build", BUILD)
    text = long_output()
    for start in range(0, len(text), 1_000_000):
        transitions.append_output(deployment.pk, "test", text[start:start + 1_000_000])
    Step.objects.filter(deployment=deployment, name__in=["clone", "build"]).update(status=StepStatus.SUCCEEDED)
    Step.objects.filter(deployment=deployment, name="test").update(status=StepStatus.FAILED, error="the test command exited 1")
    Deployment.objects.filter(pk=deployment.pk).update(status=DeploymentStatus.FAILED, error="test failed")
    return deployment


def test_a_10_mb_output_opens_with_its_tail_and_loads_earlier_lines(page, daphne, operator, failed_with_long_output):
    deployment = failed_with_long_output
    log_in(page, daphne, "operator", PASSWORD)
    started = time.monotonic()
    page.goto(f"{daphne.url}/deployments/{deployment.public_id}/")
    expect(page.locator("#output-test .ln").last).to_contain_text("needle-in-the-tail")
    opened = time.monotonic() - started
    assert opened < 5, f"the page took {opened:.1f} s"
    # Still responsive: a task queued now runs at once.
    lag = page.evaluate("() => new Promise(r => { const t = performance.now(); setTimeout(() => r(performance.now() - t), 0); })")
    assert lag < 200, lag
    test = page.locator("#output-test")
    assert test.locator(".ln").count() == 2000
    assert test.locator(".ln").first.get_attribute("data-n") == str(LINES + 1 - 1999)
    assert test.locator(".ln").last.get_attribute("data-n") == str(LINES + 1)
    # The tail's last line: red FAIL, with the time it was stored.
    fail = test.locator(".ln").last.locator(".a-f1")
    expect(fail).to_have_text("FAIL")
    assert fail.evaluate("e => getComputedStyle(e).color") == "rgb(255, 123, 114)"
    assert test.locator(".ln").last.locator(".lt").get_attribute("data-t")

    earlier = page.locator("#step-test [data-log-earlier]")
    expect(page.locator("#step-test .log-range")).to_have_text(f"Showing lines {LINES - 1998}–{LINES + 1}.")
    earlier.click()
    expect(test.locator(".ln").first).to_have_attribute("data-n", str(LINES - 3998))
    assert test.locator(".ln").count() == 4000
    first_loaded = test.locator(".ln").first.inner_text()
    assert first_loaded.startswith(f"{LINES - 3998:07d} zzz")
    expect(page.locator("#step-test .log-range")).to_have_text(f"Showing lines {LINES - 3998}–{LINES + 1}.")

    # Search: a line from the loaded part, found, counted and highlighted.
    box = page.get_by_label("Search the output of test")
    box.fill(f"{LINES - 3990:07d}")
    expect(page.locator("#log-count-test")).to_have_text("1 of 1 in the lines shown")
    assert page.evaluate("CSS.highlights.get('log-match').size") == 1
    box.fill("needle")
    expect(page.locator("#log-count-test")).to_have_text("1 of 1 in the lines shown")
    box.fill("zzzzzzzzzz 0108")  # no such text: the z's come after the number
    expect(page.locator("#log-count-test")).to_have_text("no matches in the lines shown")
    box.fill(f"{(LINES - 10) // 10:06d}")  # the first six of seven digits: ten lines
    expect(page.locator("#log-count-test")).to_contain_text("1 of ")
    total = int(page.locator("#log-count-test").inner_text().split(" of ")[1].split()[0])
    assert total == 10
    page.locator('[data-log-next="test"]').click()
    expect(page.locator("#log-count-test")).to_contain_text("2 of 10")
    page.locator('[data-log-prev="test"]').click()
    page.locator('[data-log-prev="test"]').click()
    expect(page.locator("#log-count-test")).to_contain_text("10 of 10")
    box.press("Enter")
    expect(page.locator("#log-count-test")).to_contain_text("1 of 10")
    assert page.errors == []


def test_colours_and_the_builder_notice(page, daphne, operator, failed_with_long_output):
    deployment = failed_with_long_output
    log_in(page, daphne, "operator", PASSWORD)
    page.goto(f"{daphne.url}/deployments/{deployment.public_id}/")
    page.locator("#step-build summary").click()
    build = page.locator("#output-build")
    # The banner is one muted line; its other lines are hidden until asked for.
    lines = build.locator(".ln")
    expect(lines.nth(0)).to_be_visible()
    for n in (1, 2, 3):
        expect(lines.nth(n)).to_be_hidden()
    page.get_by_label("Show the builder notice").check()
    expect(lines.nth(1)).to_be_visible()
    page.get_by_label("Show the builder notice").uncheck()
    expect(lines.nth(1)).to_be_hidden()
    assert build.locator(".a-b.a-f2").inner_text() == "✓"
    assert build.locator(".a-f15.a-g1").inner_text() == " tests failed "  # bright white on red
    # Copying the text gets the output, without numbers or times.
    assert build.inner_text().count("Step 1/2 : FROM norn-busybox:1\n") == 1
    assert "error: " in build.inner_text() and "\x1b" not in build.text_content()
    page.get_by_label("Search the output of build").fill("failed")
    expect(page.locator("#log-count-build")).to_have_text("1 of 1")
    page.locator("#step-build").scroll_into_view_if_needed()
    screenshots(page, "deployment-log-viewer")
    assert page.errors == []


def test_the_output_reads_without_javascript(browser, daphne, operator, failed_with_long_output):
    deployment = failed_with_long_output
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        log_in(page, daphne, "operator", PASSWORD)
        page.goto(f"{daphne.url}/deployments/{deployment.public_id}/")
        test = page.locator("#output-test")
        expect(test.locator(".ln").last).to_contain_text("needle-in-the-tail")
        expect(page.locator("#step-test .log-nojs")).to_be_visible()
        expect(page.locator('[data-log-earlier="' + f"/deployments/{deployment.public_id}/steps/test/output" + '"]')).to_be_hidden()
        expect(page.get_by_label("Search the output of test")).to_be_hidden()
        with page.expect_download() as download:
            page.locator("#step-test").get_by_text("Download raw").click()
        path = download.value.path()
        assert download.value.suggested_filename == f"web-{deployment.short_id}-test.log"
        with open(path, encoding="utf-8") as raw:
            assert raw.read() == long_output()
    finally:
        context.close()


def test_live_lines_are_numbered_coloured_and_found(page, daphne, operator, make_app):
    make_app("web", "app: web\nrole: worker\n")
    deployment = transitions.create(App.objects.get(name="web"), "HEAD", name="tester")
    owner = transitions.owner_id()
    assert transitions.claim(deployment.pk, owner)
    publish(transitions.start_step, deployment.pk, owner, "clone")
    publish(transitions.append_output, deployment.pk, "clone", "cloned\n")
    publish(transitions.finish_step, deployment.pk, "clone", StepStatus.SUCCEEDED)
    publish(transitions.start_step, deployment.pk, owner, "build")
    log_in(page, daphne, "operator", PASSWORD)
    page.goto(f"{daphne.url}/deployments/{deployment.public_id}/")
    expect(page.locator("#live-state .live-text")).to_have_text("live")
    # Some time passes before output comes: the live times must not count it twice.
    page.wait_for_timeout(6000)

    # The banner, then colours, with an escape sequence split across two events.
    for text in (BANNER, "Step 1/2 : FROM x\n\x1b[3", "2mgreen\x1b[0m and plain\n", "half a li", "ne\n"):
        publish(transitions.append_output, deployment.pk, "build", text)
    build = page.locator("#output-build")
    expect(build.locator(".ln").last).to_have_text("half a line\n")
    assert build.locator(".ln").evaluate_all("els => els.map(e => e.dataset.n)") == [str(n) for n in range(1, 8)]
    expect(build.locator(".a-f2")).to_have_text("green")
    expect(build.locator(".ln").nth(1)).to_be_hidden()  # the banner, collapsed live too
    expect(page.get_by_label("Show the builder notice")).to_be_visible()
    # Lines that arrive live show when they arrived, by the server's clock.
    shown = build.locator(".ln").last.locator(".lt").get_attribute("title")
    arrived = datetime.fromisoformat(shown.split(" ")[0].replace("Z", "+00:00"))
    assert abs((timezone.now() - arrived).total_seconds()) < 5, shown
    assert build.text_content() == BANNER + "Step 1/2 : FROM x\ngreen and plain\nhalf a line\n"

    box = page.get_by_label("Search the output of build")
    box.fill("plain")
    expect(page.locator("#log-count-build")).to_have_text("1 of 1")
    publish(transitions.append_output, deployment.pk, "build", "more plain text\n")
    expect(page.locator("#log-count-build")).to_have_text("1 of 2")  # new lines are searched too

    # The server's copy, swapped in when the step ends, reads the same and keeps the search.
    publish(transitions.finish_step, deployment.pk, "build", StepStatus.SUCCEEDED)
    expect(page.locator("#step-build")).to_have_attribute("data-status", "succeeded")
    page.locator("#step-build summary").click()
    assert build.text_content() == BANNER + "Step 1/2 : FROM x\ngreen and plain\nhalf a line\nmore plain text\n"
    expect(page.locator("#log-count-build")).to_have_text("1 of 2")
    assert build.locator(".ln").last.get_attribute("data-n") == "8"
    assert page.errors == []


def test_earlier_lines_the_reader_loaded_stay_when_the_steps_are_swapped(page, daphne, operator, make_app):
    make_app("web", "app: web\nrole: worker\n")
    deployment = transitions.create(App.objects.get(name="web"), "HEAD", name="tester")
    owner = transitions.owner_id()
    assert transitions.claim(deployment.pk, owner)
    publish(transitions.start_step, deployment.pk, owner, "clone")
    publish(transitions.finish_step, deployment.pk, "clone", StepStatus.SUCCEEDED)
    publish(transitions.start_step, deployment.pk, owner, "build")
    publish(transitions.append_output, deployment.pk, "build", "".join(f"line {i}\n" for i in range(1, 5001)))
    log_in(page, daphne, "operator", PASSWORD)
    page.goto(f"{daphne.url}/deployments/{deployment.public_id}/")
    expect(page.locator("#live-state .live-text")).to_have_text("live")
    build = page.locator("#output-build")
    page.locator("#step-build [data-log-earlier]").click()
    expect(build.locator(".ln").first).to_have_attribute("data-n", "1001")
    page.get_by_label("Search the output of build").fill("line 1500\n".strip())
    expect(page.locator("#log-count-build")).to_have_text("1 of 1 in the lines shown")

    publish(transitions.append_output, deployment.pk, "build", "line 5001\n")
    publish(transitions.finish_step, deployment.pk, "build", StepStatus.FAILED)  # open, as a failed step's output is
    expect(page.locator("#step-build")).to_have_attribute("data-status", "failed")
    expect(build.locator(".ln").last).to_have_text("line 5001\n")
    # The new copy's tail (3002-5001) and the lines loaded before it, each once, in order.
    numbers = build.locator(".ln").evaluate_all("els => els.map(e => Number(e.dataset.n))")
    assert numbers == list(range(1001, 5002))
    assert build.text_content() == "".join(f"line {i}\n" for i in range(1001, 5002))
    expect(page.locator("#step-build .log-range")).to_have_text("Showing lines 1001–5001.")
    expect(page.locator("#log-count-build")).to_have_text("1 of 1 in the lines shown")
    assert page.errors == []
