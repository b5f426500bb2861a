"""The pipeline's transition rules, in one place.

The seven steps, the deployment status while each runs, and what a failure
of each step means. The real pipeline (deployments/pipeline.py) and the
dashboard's simulator both ask these functions what happens next, so the two
cannot drift apart. Pure functions over {step name: step status} mappings, in step order; a
deploy has seven steps, a rollback and a restore fewer (STEPS_BY_KIND).
"""

from deployments.models import DeploymentStatus, StepStatus

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


def initial(kind="deploy"):
    """Every step of a deployment of `kind`, pending, in order."""
    return {name: StepStatus.PENDING for name in STEPS_BY_KIND[kind]}


def failed_step(steps):
    """The step that failed the deployment, or None."""
    for name in steps:
        if steps[name] == StepStatus.FAILED and name not in BEST_EFFORT:
            return name
    return None


def next_step(steps):
    """The step to run next, or None when the pipeline is over."""
    stopped = failed_step(steps) is not None
    for name in steps:
        if steps[name] != StepStatus.PENDING:
            continue
        if stopped and name not in ALWAYS_RUNS:
            continue
        return name
    return None


def steps_cut_short(steps):
    """Pending steps that will never run because an earlier step failed."""
    failed = failed_step(steps)
    if failed is None:
        return []
    return [
        name for name in steps
        if steps[name] == StepStatus.PENDING and name not in ALWAYS_RUNS
    ]


def final_status(steps):
    """The deployment's terminal status once next_step() is None."""
    return DeploymentStatus.FAILED if failed_step(steps) else DeploymentStatus.DEPLOYED


def recovery_options(steps, has_snapshot):
    """What the user can do after the pipeline ended, per the seed's table."""
    failed = failed_step(steps)
    return {
        "restore_snapshot": failed == "migrate" and has_snapshot,
        "rollback": failed == "deploy",
        "retry": failed is not None,
    }

