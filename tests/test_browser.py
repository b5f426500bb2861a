"""The dashboard in a real browser, end to end: Chromium (Playwright) against a
real daphne and a real qcluster worker running the real pipeline (git, Docker,
PostgreSQL). Logging in, deploying from the page and following every step
live; failures and what to do about them; a server restart mid-deploy; and
screenshots of the main pages for people to look at (test-artifacts/screenshots).
"""

import json
import os
import re
import shlex
import struct
import subprocess
import uuid
import zlib

import pytest
from django.contrib.auth.models import Permission, User

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect
except ImportError:
    if os.environ.get("NORN_REQUIRE_BROWSER"):
        raise
    pytest.skip("the playwright package is not installed", allow_module_level=True)

from apps_registry.models import App
from deployments import appdb, events, transitions
from deployments.models import Deployment, Event, Snapshot, Step, StepStatus
from deployments.requests import request_deployment
from deployments.templatetags.ids import shorten_image
from tests.support.browser import DESKTOP, PHONE, browser, daphne, log_in  # noqa: F401 (fixtures)
from tests.support.cluster import REPO_ROOT, Cluster, wait_for
from tests.support.git_servers import make_repo

pytestmark = pytest.mark.django_db(transaction=True)

SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
PASSWORD = "correct horse battery staple"
STEPS = ("clone", "build", "test", "snapshot", "migrate", "deploy", "cleanup")
# How long a whole deployment may take here: a worker starting, a clone, a
# docker build of a two-line Dockerfile and a few seconds of test command.
DEPLOY_TIMEOUT = 45

DOCKERFILE = "FROM norn-busybox:1\nENV REPORT=nightly\n"


def cron_spec(name, repo, extra):
    """A cron app: its deploy step only registers a schedule, so it is quick and needs no port."""
    return (
        f"app: {name}\nrole: cron\nrepo:\n  url: {repo.file_url}\n"
        f"schedule: '0 3 * * *'\ncommand: ['sh', '-c', 'echo report']\n{extra}"
    )


@pytest.fixture
def operator():
    """A user who may view, start and cancel deployments, with a password to log in with."""
    user = User.objects.create_user("operator", password=PASSWORD)
    user.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_deployment", "start_deployment", "cancel_deployment"]
    ))
    return user


@pytest.fixture
def images(transactional_db):
    """Removes the images the test's deployments built, also when the test failed."""
    yield
    for image in Deployment.objects.exclude(image="").values_list("image", flat=True):
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, timeout=60)


@pytest.fixture
def page(browser, daphne):
    """A desktop-sized page that records the browser's own errors and failed responses."""
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(f"uncaught: {error}"))
    page.on("response", lambda r: r.status >= 400 and page.errors.append(f"{r.status} {r.url}"))
    yield page
    context.close()


# --- what the page showed, recorded in the page ----------------------------------------

# A MutationObserver writes down every distinct state of the deployment page
# (after each batch of DOM changes, which is what a person could have seen),
# and every step announcement. The Python side checks the history at the end,
# so no wait can miss a state that lasted a few milliseconds.
RECORDER = """() => {
  const label = (el) => {
    if (!el) return null;
    const symbol = el.querySelector(".symbol");
    return el.textContent.slice(symbol ? symbol.textContent.length : 0).trim();
  };
  const record = (window.nornRecord = { frames: [], announced: [] });
  let last = "";
  const capture = () => {
    const steps = {};
    document.querySelectorAll("#deployment-steps li.step").forEach((li) => {
      const pre = li.querySelector("pre.output-text");
      const reason = li.querySelector(".step-head .reason");
      steps[li.dataset.step] = {
        status: li.dataset.status,
        label: label(li.querySelector(".step-head .status")),
        reason: reason ? reason.textContent.trim() : "",
        output: pre ? pre.textContent : "",
      };
    });
    const frame = {
      header: label(document.querySelector("#deployment-header .big-status .status")),
      live: document.querySelector("#live-state .live-text").textContent,
      outcome: !document.getElementById("deployment-outcome").hidden,
      steps,
    };
    const key = JSON.stringify(frame);
    if (key !== last) {
      last = key;
      record.frames.push(frame);
    }
  };
  capture();
  new MutationObserver((mutations) => {
    for (const m of mutations) {
      if (m.target.id === "step-announcer") m.addedNodes.forEach((n) => record.announced.push(n.textContent));
    }
    capture();
  }).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
}"""

LABELS = {"pending": "Pending", "running": "Running", "succeeded": "Succeeded", "failed": "Failed", "skipped": "Skipped"}


def as_html_reads_it(text):
    """Output as the page shows it: the HTML parser turns CR LF and a lone CR
    into LF in the server-rendered copy, and live.js does the same to the text
    it appends (docker build ends progress lines with CRs)."""
    return re.sub(r"\r\n?", "\n", text)


def divergence(shown, stored):
    """Where the page's text and the database's part ways, for a failure message."""
    at = next((i for i, (x, y) in enumerate(zip(shown, stored)) if x != y), min(len(shown), len(stored)))
    return f"at character {at}", f"page: {shown[max(0, at - 60):at + 60]!r}", f"database: {stored[max(0, at - 60):at + 60]!r}"


class LiveWatch:
    """Watches one deployment page: records it, and proves it never reloads."""

    def __init__(self, page, server, deployment):
        self.page = page
        self.server = server
        self.deployment = deployment
        self.url = f"{server.url}/deployments/{deployment.public_id}/"
        self.cluster = None
        expect(page).to_have_url(self.url)
        self.wait("document.querySelector('#live-state .live-text').textContent === 'live'", "the page to go live")
        self.after = int(page.get_attribute("#live-deployment", "data-after"))
        self.marker = uuid.uuid4().hex
        page.evaluate(f"window.nornMarker = '{self.marker}'")
        page.evaluate(RECORDER)
        self.navigations = []
        page.on("framenavigated", lambda frame: frame == page.main_frame and self.navigations.append(frame.url))

    def start_worker(self, tmp_path):
        """A real qcluster (use it as a context manager). Started only once the
        page listens, so the page sees every step from pending on."""
        self.cluster = Cluster(tmp_path / "qcluster.log")
        return self.cluster

    def wait(self, expression, what, timeout=DEPLOY_TIMEOUT):
        try:
            self.page.wait_for_function(expression, timeout=timeout * 1000)
        except PlaywrightError as exc:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.describe()}") from exc

    def wait_for_end(self):
        self.wait(
            "document.querySelector('#live-state .live-text').textContent === 'finished'"
            " && !document.getElementById('deployment-outcome').hidden",
            "the page to show the deployment finished",
        )
        self.deployment.refresh_from_db()
        assert self.deployment.is_terminal, self.describe()

    def describe(self):
        """The page's and the worker's state, for a failure message."""
        try:
            frames = self.frames()
            state = frames[-1] if frames else None
            state = state and {**state, "steps": {k: v["status"] for k, v in state["steps"].items()}}
        except PlaywrightError as exc:
            state = f"(page unreadable: {exc})"
        statuses = dict(Step.objects.filter(deployment=self.deployment).values_list("name", "status"))
        log = self.cluster.log_path if self.cluster else None
        worker = log.read_text(errors="replace")[-2000:] if log and log.exists() else "(no worker)"
        return f"page shows: {state}\ndatabase: {statuses}\nworker log:\n{worker}"

    def frames(self):
        return self.page.evaluate("window.nornRecord.frames")

    def announced(self):
        return self.page.evaluate("window.nornRecord.announced")

    def step_outputs(self):
        return dict(self.page.eval_on_selector_all(
            "pre.output-text", "els => els.map(e => [e.id.replace('output-', ''), e.textContent])"
        ))

    def history(self, step, key="status"):
        """What the page showed for one step, consecutive repeats collapsed."""
        seen = []
        for frame in self.frames():
            value = frame["steps"][step][key]
            if not seen or seen[-1] != value:
                seen.append(value)
        return seen

    def assert_never_reloaded(self):
        assert self.page.evaluate("window.nornMarker") == self.marker, "the page was reloaded"
        assert self.navigations == [], f"the page navigated: {self.navigations}"
        # The server agrees: the full page was fetched once, then only partials.
        path = f'"GET /deployments/{self.deployment.public_id}/"'
        assert self.server.access_log().count(path) == 1, self.server.access_log()

    def assert_followed_every_step_live(self):
        """Every step was shown pending first, then only moved forward to its
        final status (with the status text to match); every step event was
        announced once, in order; the outputs showed only what the steps
        wrote, and ended equal to what the database holds."""
        steps = {s.name: s for s in Step.objects.filter(deployment=self.deployment)}
        frames = self.frames()
        for name in STEPS:
            step = steps[name]
            shown = self.history(name)
            assert shown[0] == "pending" and shown[-1] == step.status, (name, shown, step.status)
            assert shown in (["pending", step.status], ["pending", "running", step.status]), (name, shown)
            if step.started_at is None:
                # Cut short by an earlier failure: it never ran, and never looked like it did.
                assert shown == ["pending", step.status], (name, shown)
            elif step.duration.total_seconds() >= 1:
                # Long enough that a person watching must have seen it run.
                assert "running" in shown, (name, shown, step.duration)
            stored = as_html_reads_it(step.output)
            for frame in frames:
                state = frame["steps"][name]
                assert state["label"] == LABELS[state["status"]], (name, state)
                # At every moment the page shows a beginning of what the step
                # wrote: no line twice, none missing or out of order, and its
                # CRs read as the server-rendered copy reads them.
                shown = state["output"]
                assert stored.startswith(shown), (name, *divergence(shown, stored))
        assert self.step_outputs() == {name: as_html_reads_it(steps[name].output) for name in STEPS}
        assert frames[0]["header"] == "Queued" and not frames[0]["outcome"]
        assert frames[-1]["header"] == self.deployment.get_status_display() and frames[-1]["outcome"]
        assert self.announced() == self.expected_announcements()

    def expected_announcements(self):
        """What the page's screen-reader announcer says for each step event after the page was rendered."""
        texts = []
        for event in Event.objects.filter(deployment=self.deployment, kind="deploy.step", seq__gt=self.after):
            text = f"Step {event.payload['step']}: {event.payload['status']}"
            if event.payload.get("reason"):
                text += f", {event.payload['reason']}"
            texts.append(text)
        return texts


# --- screenshots ------------------------------------------------------------------------


def screenshots(page, name):
    """Full-page screenshots at desktop and phone widths; checks they are real pictures."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    paths = []
    for viewport in (DESKTOP, PHONE):
        page.set_viewport_size(viewport)
        path = SCREENSHOTS / f"{name}-{viewport['width']}x{viewport['height']}.png"
        path.unlink(missing_ok=True)
        page.screenshot(path=path, full_page=True, animations="disabled")
        width, height = check_png(path)
        assert width == viewport["width"], f"{path.name}: {width} px wide, the page overflows sideways"
        assert height >= viewport["height"], (path.name, height)
        paths.append(path)
    page.set_viewport_size(DESKTOP)
    return paths


def check_png(path):
    """(width, height) of a PNG that holds a picture, not a blank or broken file."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    pixels, offset = b"", 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"IDAT":
            pixels += data[offset + 8:offset + 8 + length]
        offset += length + 12
    raw = zlib.decompress(pixels)
    channels = {2: 3, 6: 4}[color]
    assert depth == 8 and len(raw) == height * (1 + width * channels), f"{path}: truncated image data"
    # A blank page filters down to a handful of byte values; text and colour give many.
    assert len(set(raw)) > 64, f"{path} looks blank"
    assert len(data) > 8_000, f"{path} is only {len(data)} bytes"
    return width, height


# --- 1. deploy from the dashboard and watch it ---------------------------------------------


def test_log_in_deploy_from_the_dashboard_and_watch_every_step_live(
    page, daphne, operator, make_app, norn_dirs, busybox_image, images, tmp_path
):
    repo = make_repo(tmp_path / "repos", "nightly", {"Dockerfile": DOCKERFILE, "report.sh": "echo report\n"})
    test = "echo 'collecting 3 tests'; sleep 1; echo '3 passed'"
    make_app("nightly", cron_spec("nightly", repo, f"build:\n  test: {json.dumps(test)}\n"))

    page.goto(f"{daphne.url}/login/")
    expect(page.get_by_role("heading", name="Log in to Norn")).to_be_visible()
    shots = screenshots(page, "01-login")
    log_in(page, daphne, "operator", PASSWORD)
    row = page.locator("tr", has=page.get_by_role("link", name="nightly", exact=True))
    expect(row).to_contain_text("Never deployed")
    shots += screenshots(page, "02-overview")

    page.get_by_role("link", name="nightly", exact=True).click()
    expect(page.get_by_role("heading", name="nightly", exact=True)).to_be_visible()
    # The app's facts (the DORA section that htmx fetches is a second list of facts).
    expect(page.locator(".facts").first).to_contain_text(repo.file_url)
    shots += screenshots(page, "03-app")
    page.get_by_role("link", name="Deploy nightly").click()
    expect(page.get_by_role("heading", name="Deploy nightly")).to_be_visible()
    expect(page.get_by_label("HEAD")).to_be_checked()
    shots += screenshots(page, "04-deploy-form")
    page.get_by_role("button", name="Review deployment…").click()
    expect(page.get_by_role("heading", name="Deploy nightly at HEAD?")).to_be_visible()
    shots += screenshots(page, "05-deploy-confirm")
    assert Deployment.objects.count() == 0  # nothing happens before the confirmation
    page.get_by_role("button", name="Deploy nightly at HEAD").click()

    page.wait_for_url(re.compile(r"/deployments/[0-9a-f-]{36}/$"))
    deployment = Deployment.objects.get()
    assert (deployment.status, deployment.requested_by, deployment.requested_via) == ("queued", operator, "dashboard")
    watch = LiveWatch(page, daphne, deployment)
    assert [watch.history(name) for name in STEPS] == [["pending"]] * 7

    with watch.start_worker(tmp_path):
        watch.wait_for_end()

    assert deployment.status == "deployed", watch.describe()
    watch.assert_never_reloaded()
    watch.assert_followed_every_step_live()
    shown = {name: watch.history(name) for name in STEPS}
    assert shown["test"] == ["pending", "running", "succeeded"], shown
    assert shown["snapshot"][-1] == shown["migrate"][-1] == "skipped"
    final = watch.frames()[-1]["steps"]
    assert final["snapshot"]["reason"] == "— no services.postgres in infraspec.yaml"
    assert final["migrate"]["reason"] == "— no migrations.command in infraspec.yaml"
    assert "collecting 3 tests\n3 passed\n" in final["test"]["output"]
    # The test command's first line was on the page while the command still ran.
    assert any(
        f["steps"]["test"]["status"] == "running" and f["steps"]["test"]["output"].endswith("\ncollecting 3 tests\n")
        for f in watch.frames()
    ), [(f["steps"]["test"]["status"], f["steps"]["test"]["output"][-60:]) for f in watch.frames()]
    # The header went through the in-flight statuses too, live.
    headers = [f["header"] for f in watch.frames()]
    assert headers[0] == "Queued" and "Testing" in headers and headers[-1] == "Deployed", headers
    outcome = page.locator("#deployment-outcome")
    expect(outcome.get_by_role("heading", name="Deployed")).to_be_visible()
    # The image as the page shortens it (its tag's start), whole in the title.
    expect(outcome).to_contain_text(f"Image {shorten_image(deployment.image)} is live")
    expect(outcome.locator(f'code[title="{deployment.image}"]')).to_have_count(1)
    expect(page.locator("#deployment-header")).to_contain_text(deployment.commit_sha[:12])
    expect(page.locator(f'#deployment-header code[title="{deployment.commit_sha}"]')).to_have_count(1)
    expect(page.get_by_role("button", name="Cancel deployment")).to_have_count(0)
    assert page.errors == []
    shots += screenshots(page, "07-deployment-finished")

    # The app page now has a history and a duration chart.
    page.locator(".crumbs").get_by_role("link", name="nightly").click()
    expect(page.locator("#history")).to_contain_text(deployment.short_id)
    expect(page.locator("#history")).to_contain_text("Deployed")
    expect(page.locator("svg.durations a.bar")).to_have_count(1)
    shots += screenshots(page, "12-app-after-deploy")

    # The simulator, played to a failed test step.
    page.get_by_role("link", name="Pipeline simulator").click()
    for step, action in (("clone", "Succeed"), ("build", "Succeed"), ("test", "Fail"), ("cleanup", "Succeed")):
        # One click per rendered step: a second click on a button already used is refused as stale.
        expect(page.locator("#sim-status")).to_contain_text(f"Now running: {step}.")
        page.get_by_role("button", name=action).click()
    expect(page.locator(".sim-outcome")).to_contain_text("the test step failed")
    shots += screenshots(page, "08-simulator")
    assert page.errors == []
    assert all(path.stat().st_size > 8_000 for path in shots)


# --- 2. failures, live -----------------------------------------------------------------------


def open_live_page(page, server, deployment):
    log_in(page, server, "operator", PASSWORD)
    page.goto(f"{server.url}/deployments/{deployment.public_id}/")
    return LiveWatch(page, server, deployment)


def test_a_failing_test_step_shows_what_failed_what_was_skipped_and_what_next_live(
    page, daphne, operator, make_app, norn_dirs, busybox_image, images, tmp_path
):
    repo = make_repo(tmp_path / "repos", "flaky", {"Dockerfile": DOCKERFILE})
    test = "echo 'running 3 tests'; sleep 1; echo 'FAIL: test_total (expected 3, got 4)'; exit 3"
    make_app("flaky", cron_spec("flaky", repo, f"build:\n  test: {json.dumps(test)}\n"))
    deployment = request_deployment("flaky", user=operator, via="dashboard")
    watch = open_live_page(page, daphne, deployment)

    with watch.start_worker(tmp_path):
        watch.wait_for_end()

    assert deployment.status == "failed", watch.describe()
    watch.assert_never_reloaded()
    watch.assert_followed_every_step_live()
    final = watch.frames()[-1]["steps"]
    assert {name: final[name]["status"] for name in STEPS} == {
        "clone": "succeeded", "build": "succeeded", "test": "failed",
        "snapshot": "skipped", "migrate": "skipped", "deploy": "skipped", "cleanup": "succeeded",
    }
    assert watch.history("test") == ["pending", "running", "failed"]
    for name in ("snapshot", "migrate", "deploy"):
        assert final[name]["reason"] == "— test failed"
    failed = page.locator("#step-test")
    test_step = Step.objects.get(deployment=deployment, name="test")
    expect(failed.locator(".step-error")).to_have_text(test_step.error)
    assert "sh exited with status 3" in test_step.error
    expect(failed.locator("details.output")).to_have_attribute("open", "")
    expect(failed.locator("pre.output-text")).to_contain_text("FAIL: test_total (expected 3, got 4)")

    outcome = page.locator("#deployment-outcome")
    expect(outcome.get_by_role("heading", name="Not deployed")).to_be_visible()
    expect(outcome.locator("pre.error-text")).to_have_text(deployment.error)
    assert deployment.error.startswith("test failed: sh exited with status 3")
    expect(outcome).to_contain_text("The test step failed. On a test failure: Pipeline stops.")
    expect(outcome.get_by_role("heading", name="What you can do")).to_be_visible()
    expect(outcome.locator(".next-steps > li")).to_have_count(1)  # retry only: nothing to roll back or restore
    expect(outcome.get_by_label("Retry at")).to_have_value("HEAD")
    expect(page.locator("#deployment-header .big-status")).to_have_text("✗ Failed")
    expect(page.get_by_role("button", name="Cancel deployment")).to_have_count(0)
    assert page.errors == []
    screenshots(page, "09-deployment-failed-test")

    # "What next" works: the retry leads to the confirmation of the same ref.
    outcome.get_by_role("button", name="Review deployment…").click()
    expect(page.get_by_role("heading", name="Deploy flaky at HEAD?")).to_be_visible()


def test_a_failed_migration_shows_the_restore_command_live(
    page, daphne, operator, make_app, norn_dirs, busybox_image, app_database, tmp_path
):
    database = app_database("ledger")
    repo = make_repo(tmp_path / "repos", "ledger", {
        "migrations/0002.sql": "SELECT broken(\n",
        # Migrations run in the app's image: psql and the SQL files are in it.
        "Dockerfile": "FROM norn-psql:1\nCOPY migrations/ /migrations/\n",
    })
    migrate = "echo 'applying 0002'; sleep 1; psql -v ON_ERROR_STOP=1 -f migrations/0002.sql"
    # No build.test: nothing to test, so the failure comes quickly.
    make_app("ledger", cron_spec(
        "ledger", repo, f"build: {{}}\nservices:\n  postgres:\n    database: {database}\nmigrations:\n  command: {json.dumps(migrate)}\n"
    ))
    deployment = request_deployment("ledger", user=operator, via="dashboard")
    watch = open_live_page(page, daphne, deployment)

    with watch.start_worker(tmp_path):
        watch.wait_for_end()

    assert deployment.status == "failed", watch.describe()
    watch.assert_never_reloaded()
    watch.assert_followed_every_step_live()
    final = watch.frames()[-1]["steps"]
    assert {name: final[name]["status"] for name in STEPS} == {
        "clone": "succeeded", "build": "succeeded", "test": "skipped",
        "snapshot": "succeeded", "migrate": "failed", "deploy": "skipped", "cleanup": "succeeded",
    }
    assert watch.history("migrate") == ["pending", "running", "failed"]
    assert final["deploy"]["reason"] == "— migrate failed"
    assert "applying 0002" in final["migrate"]["output"] and "syntax error" in final["migrate"]["output"]

    snapshot = Snapshot.objects.get(deployment=deployment)
    command = appdb.restore_command(database, snapshot.path, app="ledger")
    assert f"-d {database} {snapshot.path}" in command
    outcome = page.locator("#deployment-outcome")
    expect(outcome).to_contain_text("The migrate step failed. On a migrate failure: Pipeline stops, snapshot available for restore.")
    expect(outcome.locator("pre.command")).to_have_text(command)
    expect(outcome.get_by_role("link", name=f"Restore snapshot {snapshot.pk} from here…")).to_have_attribute(
        "href", f"/snapshots/{snapshot.pk}/restore"
    )
    expect(outcome.get_by_label("Retry at")).to_have_value("HEAD")
    # The step's own error says the same, for the CLI and the logs.
    expect(page.locator("#step-migrate .step-error")).to_contain_text(command)
    assert page.errors == []
    screenshots(page, "10-deployment-failed-migration")

    # The app page lists the snapshot with the same command.
    page.locator(".crumbs").get_by_role("link", name="ledger").click()
    expect(page.locator("#snapshots-heading ~ table")).to_contain_text(snapshot.path)
    expect(page.locator("#snapshots-heading ~ table pre.command")).to_have_text(command)
    screenshots(page, "13-app-with-snapshot")


# --- 3. the server restarts mid-deploy ---------------------------------------------------------


def stored_test_output(deployment):
    return Step.objects.get(deployment=deployment, name="test").output


def test_the_page_reconnects_after_the_server_restarts_and_catches_up_without_gaps_or_repeats(
    page, daphne, operator, make_app, norn_dirs, busybox_image, images, tmp_path
):
    # Long enough that the page is back before the step ends, even after
    # the longest backoff (docs: 0.5-1 s, 1-2 s, 2-4 s, 4-8 s ...).
    lines = 150
    repo = make_repo(tmp_path / "repos", "stream", {"Dockerfile": DOCKERFILE})
    test = f'i=1; while [ $i -le {lines} ]; do echo "line $i"; i=$((i+1)); sleep 0.1; done'
    make_app("stream", cron_spec("stream", repo, f"build:\n  test: {json.dumps(test)}\n"))
    deployment = request_deployment("stream", user=operator, via="dashboard")
    watch = open_live_page(page, daphne, deployment)

    with watch.start_worker(tmp_path):
        watch.wait("document.getElementById('output-test').textContent.includes('line 5\\n')", "test output to stream")
        screenshots(page, "06-deployment-running")

        daphne.kill()
        watch.wait(
            "document.querySelector('#live-state .live-text').textContent === 'reconnecting…'",
            "the page to say it is reconnecting", timeout=10,
        )
        # Output the page cannot hear about while the server is down.
        unheard = "line {}\n".format(len(stored_test_output(deployment).splitlines()) + 10)
        wait_for(
            lambda: unheard in stored_test_output(deployment),
            timeout=20, message="the worker to write output while the server is down",
        )
        assert unheard not in page.text_content("#output-test")
        screenshots(page, "11-deployment-reconnecting")
        daphne.start()
        watch.wait_for_end()

    assert deployment.status == "deployed", watch.describe()
    watch.assert_never_reloaded()
    watch.assert_followed_every_step_live()
    live_states = [f["live"] for f in watch.frames()]
    assert "reconnecting…" in live_states, live_states
    outage = live_states.index("reconnecting…")
    assert live_states[-1] == "finished" and set(live_states[outage:]) <= {"reconnecting…", "live", "finished"}, live_states
    # Back live while the step still ran, and it went on streaming from there.
    back = [f for f in watch.frames()[outage:] if f["live"] == "live" and f["steps"]["test"]["status"] == "running"]
    assert back, live_states
    assert len(back[-1]["steps"]["test"]["output"]) > len(back[0]["steps"]["test"]["output"])
    output = watch.step_outputs()["test"]
    # Norn's own lines about the test container come first; then the command's.
    streamed = output.splitlines()
    command = f"$ sh -c {shlex.quote(test)}"
    streamed = streamed[streamed.index(command):]
    streamed = [line for line in streamed if not line.startswith("  (in a throwaway container")]
    assert streamed == [command, *(f"line {i}" for i in range(1, lines + 1))]
    assert daphne.access_log().count(f"WSCONNECT /ws/deployments/{deployment.public_id}/") >= 2
    assert page.errors == []


# --- live.js: log lines around a refresh of the partials ------------------------------------
#
# Deterministic versions of races the end-to-end tests above can only hit by
# chance: the test holds the partial responses the page's refresh waits for,
# and writes log lines at exactly the wrong moment.


def publish(action, *args, **kwargs):
    """Run a transition as the worker does, and wait until its events are sent."""
    result = action(*args, **kwargs)
    events.publisher.flush()
    return result


@pytest.fixture
def running_clone(make_app):
    """A deployment whose clone step runs, driven by this test instead of a worker."""
    make_app("web", "app: web\nrole: worker\n")
    deployment = transitions.create(App.objects.get(name="web"), "HEAD", name="tester")
    owner = transitions.owner_id()
    assert transitions.claim(deployment.pk, owner)
    publish(transitions.start_step, deployment.pk, owner, "clone")
    publish(transitions.append_output, deployment.pk, "clone", "cloned\n")
    return deployment, owner


def output_text(page, step):
    return page.text_content(f"#output-{step}")


def test_a_log_line_arriving_while_the_page_refreshes_is_shown_once(page, daphne, operator, running_clone):
    deployment, owner = running_clone
    watch = open_live_page(page, daphne, deployment)
    held = []
    page.route(re.compile(r"/_outcome$"), lambda route: held.append(route))  # the refresh's last partial waits for us

    with page.expect_request(re.compile(r"/_outcome$")):
        # A step event: the page refreshes its header, steps, then outcome.
        publish(transitions.finish_step, deployment.pk, "clone", StepStatus.SUCCEEDED)
        publish(transitions.start_step, deployment.pk, owner, "build")
    expect(page.locator("#step-build")).to_have_attribute("data-status", "running")  # steps swapped
    publish(transitions.append_output, deployment.pk, "build", "line 2\n")
    expect(page.locator("#output-build")).to_have_text("line 2\n")

    held[0].continue_()  # the outcome arrives; the refresh ends
    watch.wait("!document.querySelector('#deployment-outcome.htmx-request')", "the refresh to end", timeout=10)
    publish(transitions.append_output, deployment.pk, "build", "line 3\n")
    watch.wait("document.getElementById('output-build').textContent.includes('line 3')", "line 3", timeout=10)
    assert output_text(page, "build") == "line 2\nline 3\n"
    assert Step.objects.get(deployment=deployment, name="build").output == "line 2\nline 3\n"


def test_output_never_disappears_while_the_page_refreshes(page, daphne, operator, running_clone):
    deployment, owner = running_clone
    watch = open_live_page(page, daphne, deployment)
    rendered, held = [], []

    def render_now_deliver_later(route):
        # The server renders the steps partial now; the browser gets it when we say.
        rendered.append((route, route.fetch()))

    page.route(re.compile(r"/_steps$"), render_now_deliver_later)
    page.route(re.compile(r"/_outcome$"), lambda route: held.append(route))
    with page.expect_request(re.compile(r"/_steps$")):
        publish(transitions.finish_step, deployment.pk, "clone", StepStatus.SUCCEEDED)
        publish(transitions.start_step, deployment.pk, owner, "build")
    wait_for(lambda: page.evaluate("1") and rendered, timeout=10, message="the steps partial to be rendered")
    # Newer than the rendered partial: the page appends it to the output it shows now.
    publish(transitions.append_output, deployment.pk, "build", "line 2\n")
    expect(page.locator("#output-build")).to_have_text("line 2\n")

    with page.expect_request(re.compile(r"/_outcome$")):
        route, response = rendered[0]
        route.fulfill(response=response)
    expect(page.locator("#step-build")).to_have_attribute("data-status", "running")  # steps swapped
    # The outcome partial is still on its way: the line must still be there.
    assert output_text(page, "build") == "line 2\n"
    held[0].continue_()
    watch.wait("!document.querySelector('#deployment-outcome.htmx-request')", "the refresh to end", timeout=10)
    assert output_text(page, "build") == "line 2\n"


def test_the_page_says_live_again_once_a_failed_refresh_succeeds(page, daphne, operator, running_clone):
    deployment, owner = running_clone
    open_live_page(page, daphne, deployment)
    failed = []

    def fail_once(route):
        if failed:
            route.continue_()
        else:
            failed.append(route.request.url)
            route.abort()  # as when the server is briefly unreachable

    page.route(re.compile(r"/_header$"), fail_once)
    publish(transitions.finish_step, deployment.pk, "clone", StepStatus.SUCCEEDED)
    expect(page.locator("#step-clone")).to_have_attribute("data-status", "succeeded")  # the retry worked
    assert failed
    expect(page.locator("#live-state .live-text")).to_have_text("live", timeout=3_000)


def test_carriage_returns_read_the_same_live_as_after_a_refresh(page, daphne, operator, running_clone):
    deployment, owner = running_clone
    # The page opens on output that ends in the first half of a CR LF.
    publish(transitions.append_output, deployment.pk, "clone", "fetching 50%\r")
    watch = open_live_page(page, daphne, deployment)
    assert output_text(page, "clone") == "cloned\nfetching 50%\n"

    # Progress lines end with a lone CR; a CR LF may be split across two events.
    for text in ("\nfetching 100%\r", "\r\ndone\r", "\n", "exit 0\r\n"):
        publish(transitions.append_output, deployment.pk, "clone", text)
    watch.wait("document.getElementById('output-clone').textContent.includes('exit 0')", "the last line", timeout=10)
    stored = Step.objects.get(deployment=deployment, name="clone").output
    assert output_text(page, "clone") == as_html_reads_it(stored) == "cloned\nfetching 50%\nfetching 100%\n\ndone\nexit 0\n"

    # The server's copy, swapped in, reads the same.
    publish(transitions.finish_step, deployment.pk, "clone", StepStatus.SUCCEEDED)
    expect(page.locator("#step-clone")).to_have_attribute("data-status", "succeeded")
    assert output_text(page, "clone") == as_html_reads_it(stored)
    assert page.errors == []


def test_failed_refreshes_are_retried_less_and_less_often(page, daphne, operator, running_clone):
    deployment, owner = running_clone
    # When the page asked for its header partial, by the page's own clock.
    page.add_init_script("""
      window.headerRequests = [];
      const open = XMLHttpRequest.prototype.open;
      XMLHttpRequest.prototype.open = function (method, url) {
        if (String(url).endsWith("/_header")) window.headerRequests.push(performance.now());
        return open.apply(this, arguments);
      };
    """)
    open_live_page(page, daphne, deployment)
    failures = []

    def fail_twice(route):
        # Once unreachable, once an error page; then it works.
        if not failures:
            failures.append(route.request.url)
            route.abort()
        elif len(failures) == 1:
            failures.append(route.request.url)
            route.fulfill(status=500, body="Server Error")
        else:
            route.continue_()

    page.route(re.compile(r"/_header$"), fail_twice)
    publish(transitions.finish_step, deployment.pk, "clone", StepStatus.SUCCEEDED)
    wait_for(lambda: page.evaluate("window.headerRequests.length") >= 2, timeout=10, message="a first retry")
    # A step event while the retry waits does not bring the retry forward.
    publish(transitions.start_step, deployment.pk, owner, "build")
    expect(page.locator("#step-build")).to_have_attribute("data-status", "running")
    expect(page.locator("#live-state .live-text")).to_have_text("live")
    first, second, third = page.evaluate("window.headerRequests")[:3]
    # Backoff with jitter: 0.5-1 s, then 1-2 s (not the 150 ms of a burst of events).
    assert second - first >= 500 and third - second >= 1000, (first, second, third)
    assert page.errors == [f"500 {failures[1]}"]
