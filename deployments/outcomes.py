"""What running a step can end with.

A step's `run(ctx)` returns when it succeeded, raises `Skip` when it does not
apply to the app and `StepFailed` (or lets a runner.CommandError through) when
it failed. The pipeline turns that into an `Outcome`, and the transition rules
(states.apply) decide from the outcome, never from the text of an error.
"""

from dataclasses import dataclass

from deployments.models import StepStatus


class Skip(Exception):
    """The step does not apply; the argument is the reason shown to users."""


class StepFailed(Exception):
    """The step failed; the argument is the error shown to users."""


@dataclass(frozen=True)
class Outcome:
    status: StepStatus
    error: str = ""
    skip_reason: str = ""
    # Who cancelled the deployment, when that is why the step failed.
    cancelled_by: str = ""

    @classmethod
    def succeeded(cls) -> "Outcome":
        return cls(StepStatus.SUCCEEDED)

    @classmethod
    def skipped(cls, reason: str) -> "Outcome":
        return cls(StepStatus.SKIPPED, skip_reason=reason)

    @classmethod
    def failed(cls, error: str) -> "Outcome":
        return cls(StepStatus.FAILED, error=error)

    @classmethod
    def cancelled(cls, by: str) -> "Outcome":
        return cls(StepStatus.FAILED, error=cancel_message(by), cancelled_by=by)

    @property
    def is_cancel(self) -> bool:
        return bool(self.cancelled_by)


def cancel_message(by: str) -> str:
    """The error a cancel leaves on the step and the deployment."""
    return f"cancelled by {by}"
