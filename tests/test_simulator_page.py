"""The pipeline simulator page: its outcomes are what states.py says."""

import re

import pytest

from deployments import states
from deployments.models import DeploymentStatus, Snapshot, StepStatus
from tests.support.dashboard import viewer  # noqa: F401 (fixtures)
from tests.support.dashboard import page

pytestmark = pytest.mark.django_db


def sim_state(html):
    """The step statuses (and the current step) the simulator's form carries."""
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="(\w*)">', html))
    return {name: value for name, value in fields.items() if name in (*states.STEPS, "step")}


def simulate(client, outcomes):
    """Press a button for each step the simulator offers; `outcomes` maps
    step to action (default succeed). Returns the last page."""
    html = page(client, "/simulator/")
    while 'name="action"' in html:
        state = sim_state(html)
        reasons = dict(re.findall(r'name="(\w+-reason)" value="([^"]*)"', html))
        current = state.pop("step")
        response = client.post("/simulator/", {**state, **reasons, "step": current, "action": outcomes.get(current, "succeed")})
        assert response.status_code == 200
        html = response.content.decode()
    return html


def expected_run(failing):
    """What states.py says a deployment whose `failing` step fails ends as."""
    steps = states.initial()
    while (name := states.next_step(steps)) is not None:
        steps[name] = StepStatus.FAILED if name == failing else StepStatus.SUCCEEDED
        for cut in states.steps_cut_short(steps):
            steps[cut] = StepStatus.SKIPPED
    has_snapshot = steps["snapshot"] == StepStatus.SUCCEEDED
    return steps, states.final_status(steps), states.recovery_options(steps, has_snapshot)


@pytest.mark.parametrize("failing", states.STEPS)
def test_simulator_outcome_of_a_failure_at_every_step_is_what_states_says(viewer, failing):
    html = simulate(viewer, {failing: "fail"})
    steps, final, recovery = expected_run(failing)
    state = sim_state(html)
    state.pop("step")
    assert state == {name: str(status) for name, status in steps.items()}
    final_label = DeploymentStatus(final).label
    assert f"Final status: <span class=\"status status-{final}\">" in html and final_label in html
    assert ("Snapshot available for restore" in html) == recovery["restore_snapshot"]
    assert ("Rollback available" in html) == recovery["rollback"]
    assert ("<strong>Retry</strong>" in html) == recovery["retry"]
    failed = states.failed_step(steps)
    if failed:
        assert f"the <strong>{failed}</strong> step failed: {states.ON_FAILURE[failed]}" in html
        for name, status in steps.items():
            if status == StepStatus.SKIPPED:
                assert f'name="{name}-reason" value="{failed} failed"' in html


def test_simulator_migrate_failure_skips_deploy_but_runs_cleanup(viewer):
    html = simulate(viewer, {"migrate": "fail"})
    assert '<span class="reason">— migrate failed</span>' in html
    assert 'name="deploy-reason" value="migrate failed"' in html
    state = sim_state(html)
    assert (state["deploy"], state["cleanup"]) == ("skipped", "succeeded")
    assert "Snapshot available for restore" in html and "Failed" in html


def test_simulator_cleanup_failure_still_deploys(viewer):
    html = simulate(viewer, {"cleanup": "fail"})
    assert 'Final status: <span class="status status-deployed">' in html
    assert "best-effort: the deployment is still deployed" in html


def test_simulator_skipped_snapshot_means_nothing_to_restore(viewer):
    html = simulate(viewer, {"snapshot": "skip", "migrate": "fail"})
    assert "Snapshot available for restore" not in html
    assert "No snapshot to restore" in html
    assert 'name="snapshot-reason" value="you skipped it"' in html


def test_simulator_shows_the_in_flight_status_of_the_current_step(viewer):
    html = page(viewer, "/simulator/")
    assert "Now running: <strong>clone</strong>" in html and "Cloning" in html
    response = viewer.post("/simulator/", {**states.initial(), "step": "clone", "action": "succeed"}, headers={"HX-Request": "true"})
    partial = response.content.decode()
    assert partial.lstrip().startswith('<section id="simulator"')
    assert "Now running: <strong>build</strong>" in partial
    assert "Building" in partial and "autofocus" in partial


def test_simulator_refuses_a_stale_or_forged_form(viewer):
    stale = viewer.post("/simulator/", {**states.initial(), "step": "build", "action": "succeed"})
    assert stale.status_code == 200 and "no longer running" in stale.content.decode()
    assert sim_state(stale.content.decode())["build"] == "pending"
    assert viewer.post("/simulator/", {"clone": "exploded", "step": "clone", "action": "fail"}).status_code == 400
    assert viewer.post("/simulator/", {"step": "clone", "action": "explode"}).status_code == 400
