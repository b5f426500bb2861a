"""The pipeline's transition rules, in one place.

The seven steps, the deployment status while each runs, and what a failure
of each step means. The real pipeline (deployments/pipeline.py) and the
dashboard's simulator both ask these functions what happens next, so the two
cannot drift apart. Pure functions over {step name: step status} mappings, in step order; a
deploy has seven steps, a rollback and a restore fewer (STEPS_BY_KIND).
"""

from deployments.models import DeploymentStatus, StepStatus
from deployments.outcomes import Outcome

Steps = dict[str, StepStatus]

STEPS = ("clone", "build", "test", "snapshot", "migrate", "deploy", "cleanup")
# A rollback only puts an earlier image back (with the same rollout gate); a
# restore verifies the snapshot file, snapshots the current state (so the
# restore can be undone), then restores.
ROLLBACK_STEPS = ("deploy",)
RESTORE_STEPS = ("verify", "snapshot", "restore")
STEPS_BY_KIND = {"deploy": STEPS, "rollback": ROLLBACK_STEPS, "restore": RESTORE_STEPS}

IN_FLIGHT_STATUS = {
    "clone": DeploymentStatus.CLONING,
    "build": DeploymentStatus.BUILDING,
    "test": DeploymentStatus.TESTING,
    "snapshot": DeploymentStatus.SNAPSHOTTING,
    "migrate": DeploymentStatus.MIGRATING,
    "deploy": DeploymentStatus.DEPLOYING,
    "cleanup": DeploymentStatus.CLEANING_UP,
    "verify": DeploymentStatus.VERIFYING,
    "restore": DeploymentStatus.RESTORING,
}

# The seed's "On failure" column.
ON_FAILURE = {
    "clone": "Pipeline stops",
    "build": "Pipeline stops",
    "test": "Pipeline stops",
    "snapshot": "Pipeline stops",
    "migrate": "Pipeline stops, snapshot available for restore",
    "deploy": "Rollback available",
    "cleanup": "Best-effort",
    "verify": "Nothing was changed",
    "restore": "Database unchanged (one transaction); the pre-restore snapshot is kept",
}

# Cleanup runs whatever happened before it, and its failure is recorded but
# never fails the deployment.
ALWAYS_RUNS = ("cleanup",)
BEST_EFFORT = ("cleanup",)

DONE = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED)


def initial(kind: str = "deploy") -> Steps:
    """Every step of a deployment of `kind`, pending, in order."""
    return {name: StepStatus.PENDING for name in STEPS_BY_KIND[kind]}


def failed_step(steps: Steps) -> str | None:
    """The step that failed the deployment, or None."""
    for name in steps:
        if steps[name] == StepStatus.FAILED and name not in BEST_EFFORT:
            return name
    return None


def next_step(steps: Steps) -> str | None:
    """The step to run next, or None when the pipeline is over."""
    stopped = failed_step(steps) is not None
    for name in steps:
        if steps[name] != StepStatus.PENDING:
            continue
        if stopped and name not in ALWAYS_RUNS:
            continue
        return name
    return None


def steps_cut_short(steps: Steps) -> list[str]:
    """Pending steps that will never run because an earlier step failed."""
    failed = failed_step(steps)
    if failed is None:
        return []
    return [
        name for name in steps
        if steps[name] == StepStatus.PENDING and name not in ALWAYS_RUNS
    ]


def apply(steps: Steps, name: str, outcome: Outcome) -> list[str]:
    """Give step `name` its outcome and cut short what will now never run.

    Updates `steps` in place; returns the steps cut short (now skipped), in
    order. The pipeline records exactly this; the simulator shows it.
    """
    steps[name] = outcome.status
    cut = steps_cut_short(steps)
    for other in cut:
        steps[other] = StepStatus.SKIPPED
    return cut


def failure_error(name: str, outcome: Outcome) -> str:
    """The deployment's error when step `name` failed it with `outcome`."""
    return outcome.error if outcome.is_cancel else f"{name} failed: {outcome.error}"


def final_status(steps: Steps, cancelled: bool = False) -> DeploymentStatus:
    """The deployment's terminal status once next_step() is None; `cancelled`
    when the step that failed it was stopped by a cancel (Outcome.is_cancel)."""
    if failed_step(steps) is None:
        return DeploymentStatus.DEPLOYED
    return DeploymentStatus.CANCELLED if cancelled else DeploymentStatus.FAILED


def recovery_options(steps: Steps, has_snapshot: bool) -> dict[str, bool]:
    """What the user can do after the pipeline ended, per the seed's table."""
    failed = failed_step(steps)
    return {
        "restore_snapshot": failed == "migrate" and has_snapshot,
        "rollback": failed == "deploy",
        "retry": failed is not None,
    }

