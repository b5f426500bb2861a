"""The live deployment page in a real browser against a real daphne."""

import pytest
from django.contrib.auth.models import User

from apps_registry.models import App
from deployments import events, states, transitions
from deployments.models import DeploymentStatus, Step, StepStatus
from tests.support.browser import browser, daphne, logged_in_page  # noqa: F401 (fixtures)
from tests.support.dashboard import LOCAL

pytestmark = pytest.mark.django_db


def publish(action, *args, **kwargs):
    """Run a transition as the worker does, and wait until its events are sent."""
    result = action(*args, **kwargs)
    events.publisher.flush()
    return result


def outputs(page):
    return page.eval_on_selector_all("pre.output-text", "els => els.map(e => e.textContent)")


@pytest.mark.django_db(transaction=True)
def test_live_page_follows_a_deployment_without_reloading(browser, daphne, make_app):
    make_app("web", LOCAL.replace("local", "web"))
    deployment = transitions.create(App.objects.get(name="web"), "HEAD", name="tester")
    page = logged_in_page(browser, daphne, User.objects.create_superuser("root"))
    page.goto(f"{daphne.url}/deployments/{deployment.public_id}/")
    page.wait_for_function("document.getElementById('live-state').textContent.includes('live')")
    page.evaluate("window.notReloaded = true")

    owner = transitions.owner_id()
    assert transitions.claim(deployment.pk, owner)
    publish(transitions.start_step, deployment.pk, owner, "clone")
    publish(transitions.append_output, deployment.pk, "clone", "<img src=x onerror=alert(1)> cloned\n")
    page.wait_for_selector('#step-clone[data-status="running"]')
    page.wait_for_function("document.getElementById('output-clone').textContent.includes('cloned')")
    # Event text is shown as text, never parsed as markup.
    assert page.locator("#output-clone img").count() == 0 and page.dialogs == []
    assert "Cloning" in page.inner_text("#deployment-header")

    publish(transitions.finish_step, deployment.pk, "clone", StepStatus.SUCCEEDED)
    publish(transitions.start_step, deployment.pk, owner, "build")
    publish(transitions.finish_step, deployment.pk, "build", StepStatus.FAILED, error="docker build: exit 1")
    steps = {**states.initial(), "clone": StepStatus.SUCCEEDED, "build": StepStatus.FAILED}
    publish(transitions.skip_cut_short, deployment.pk, states.steps_cut_short(steps), "build")
    publish(transitions.start_step, deployment.pk, owner, "cleanup")
    publish(transitions.finish_step, deployment.pk, "cleanup", StepStatus.SUCCEEDED)
    publish(transitions.finish, deployment.pk, DeploymentStatus.FAILED, "build failed: docker build: exit 1")

    page.wait_for_selector("#deployment-outcome:not([hidden])")
    page.wait_for_function("document.getElementById('live-state').textContent.includes('finished')")
    assert "build failed: docker build: exit 1" in page.inner_text("#deployment-outcome")
    assert "Failed" in page.inner_text("#deployment-header .big-status")
    assert page.get_attribute("#step-test", "data-status") == "skipped"
    assert "build failed" in page.inner_text("#step-test")
    assert page.text_content("#step-announcer") == "Step cleanup: succeeded"
    assert page.locator("#deployment-header button.danger").count() == 0  # no cancel once over
    assert page.evaluate("window.notReloaded") is True
    # What the page built from events equals what the server renders now.
    live = outputs(page)
    page.reload()
    assert outputs(page) == live and "cloned" in live[0]


@pytest.mark.django_db(transaction=True)
def test_live_page_reconnects_and_resumes_after_the_server_restarts(browser, daphne, make_app):
    make_app("web", LOCAL.replace("local", "web"))
    deployment = transitions.create(App.objects.get(name="web"), "HEAD", name="tester")
    owner = transitions.owner_id()
    assert transitions.claim(deployment.pk, owner)
    publish(transitions.start_step, deployment.pk, owner, "clone")
    publish(transitions.append_output, deployment.pk, "clone", "line 1\n")
    page = logged_in_page(browser, daphne, User.objects.create_superuser("root"))
    page.goto(f"{daphne.url}/deployments/{deployment.public_id}/")
    page.wait_for_function("document.getElementById('live-state').textContent.includes('live')")

    daphne.kill()
    page.wait_for_function("document.getElementById('live-state').textContent.includes('reconnecting')")
    # Written while no server could tell the page: only the database has it.
    publish(transitions.append_output, deployment.pk, "clone", "line 2\n")
    publish(transitions.finish_step, deployment.pk, "clone", StepStatus.SUCCEEDED)
    daphne.start()

    page.wait_for_selector('#step-clone[data-status="succeeded"]', timeout=30000)
    page.wait_for_function("document.getElementById('live-state').textContent.includes('live')")
    publish(transitions.append_output, deployment.pk, "build", "line 3\n")
    page.wait_for_function("document.getElementById('output-build').textContent.includes('line 3')")
    assert page.text_content("#output-clone") == "line 1\nline 2\n"  # each line once
    assert daphne.access_log().count(f"WSCONNECT /ws/deployments/{deployment.public_id}/") >= 1


@pytest.mark.django_db(transaction=True)
def test_running_clocks_tick_with_the_texts_the_server_rendered(browser, daphne, make_app):
    make_app("web", LOCAL.replace("local", "web"))
    deployment = transitions.create(App.objects.get(name="web"), "HEAD", name="tester")
    owner = transitions.owner_id()
    assert transitions.claim(deployment.pk, owner)
    publish(transitions.start_step, deployment.pk, owner, "clone")
    page = logged_in_page(browser, daphne, User.objects.create_superuser("root"))
    page.goto(f"{daphne.url}/deployments/{deployment.public_id}/")
    clock = "#step-clone .elapsed"
    first = page.text_content(clock)
    page.wait_for_function(f"document.querySelector('{clock}').textContent !== {first!r}")
    ticks = page.get_attribute("#step-clone .step-detail", "data-ticks").split("|")
    assert page.text_content(clock) in ticks[1:] and ticks[0] == first
    header = page.get_attribute("#deployment-header dd[data-ticks]", "data-ticks").split("|")
    assert page.text_content("#deployment-header .elapsed") in header
