"""The pipeline simulator: step through the seven steps by hand.

Every question (which step runs next, which steps a failure cuts short, the
final status, what the user can do afterwards) is answered by
deployments/states.py, the same functions the real pipeline calls, so the
simulator shows what a deployment would do and cannot drift from it. The
state travels in the page's form; nothing is stored.
"""

from dataclasses import dataclass, field

from deployments import states
from deployments.models import DeploymentStatus, StepStatus
from deployments.outcomes import Outcome

# The buttons under the current step, and the status each one gives it.
ACTIONS = {
    "succeed": StepStatus.SUCCEEDED,
    "fail": StepStatus.FAILED,
    "skip": StepStatus.SKIPPED,
}
# In the real pipeline a step skips itself when it does not apply to the app
# (no build section, no services.postgres, ...); here the user decides.
SKIPPED_BY_USER = "you skipped it"
# A step a form can claim to be in. "running" never travels: the current
# step is whichever one states.next_step() names.
FORM_STATUSES = (StepStatus.PENDING, *states.DONE)
MAX_REASON = 100


class SimulationError(ValueError):
    """The posted state is not one the simulator can have produced."""


class StaleStep(SimulationError):
    """The form acted on a step that is no longer the current one."""


@dataclass
class Simulation:
    steps: dict = field(default_factory=states.initial)
    reasons: dict = field(default_factory=dict)

    @classmethod
    def from_form(cls, data):
        """Read the state a simulator form posted (a QueryDict or dict)."""
        steps, reasons = {}, {}
        for name in states.STEPS:
            status = data.get(name, StepStatus.PENDING)
            if status not in FORM_STATUSES:
                raise SimulationError(f"{name}: {status!r} is not a step status")
            steps[name] = StepStatus(status)
            reason = data.get(f"{name}-reason", "")
            if reason and status == StepStatus.SKIPPED:
                reasons[name] = reason[:MAX_REASON]
        return cls(steps, reasons)

    def apply(self, step, action):
        """Give the current step the outcome `action`, as the pipeline would.

        `step` is the step the form was showing as current; a form posted
        twice (double click, back button) names a step that is no longer
        current and is refused rather than applied to the wrong step.
        """
        if action not in ACTIONS:
            raise SimulationError(f"{action!r} is not one of {', '.join(ACTIONS)}")
        if step is None or step != self.current:
            raise StaleStep(f"{step!r} is not the step running now")
        outcome = Outcome(ACTIONS[action], skip_reason=SKIPPED_BY_USER if action == "skip" else "")
        if outcome.skip_reason:
            self.reasons[step] = outcome.skip_reason
        # The same rule the pipeline applies: the steps that will never run
        # are skipped, naming the failed step (transitions.skip_cut_short's reason).
        for name in states.apply(self.steps, step, outcome):
            self.reasons[name] = f"{step} failed"

    @property
    def current(self):
        return states.next_step(self.steps)

    @property
    def finished(self):
        return self.current is None

    @property
    def started(self):
        return any(status != StepStatus.PENDING for status in self.steps.values())

    @property
    def failed_step(self):
        return states.failed_step(self.steps)

    @property
    def has_snapshot(self):
        # The snapshot step records a Snapshot row exactly when it succeeds.
        return self.steps["snapshot"] == StepStatus.SUCCEEDED

    @property
    def deployment_status(self):
        """The deployment's status now: the running step's, or the final one."""
        if self.finished:
            return states.final_status(self.steps)
        return states.IN_FLIGHT_STATUS[self.current]

    @property
    def deployment_status_label(self):
        return DeploymentStatus(self.deployment_status).label

    @property
    def recovery(self):
        return states.recovery_options(self.steps, self.has_snapshot) if self.finished else None

    @property
    def failure_consequence(self):
        """The seed's "On failure" text for the step that failed the deployment."""
        failed = self.failed_step
        return states.ON_FAILURE[failed] if failed else ""

    @property
    def best_effort_failures(self):
        """Steps that failed without failing the deployment (cleanup)."""
        return [
            name for name in states.BEST_EFFORT if self.steps[name] == StepStatus.FAILED
        ]

    def rows(self):
        """One dict per step, for the template."""
        current = self.current
        return [
            {
                "name": name,
                "status": StepStatus.RUNNING if name == current else self.steps[name],
                "label": (StepStatus.RUNNING if name == current else self.steps[name]).label,
                "reason": self.reasons.get(name, ""),
                "stored_status": self.steps[name],
                "in_flight_status": states.IN_FLIGHT_STATUS[name].label,
                "on_failure": states.ON_FAILURE[name],
                "is_current": name == current,
            }
            for name in states.STEPS
        ]
