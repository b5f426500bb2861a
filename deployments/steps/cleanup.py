"""Cleanup: remove the work directory. Best-effort: it runs after failures too,
and its own failure is recorded but never fails the deployment."""

import shutil

from deployments.steps import Context, StepFailed


def run(ctx: Context) -> None:
    if not ctx.workdir.exists():
        ctx.log(f"{ctx.workdir} is already gone")
        return
    errors = []
    shutil.rmtree(ctx.workdir, onerror=lambda func, path, exc_info: errors.append(f"{path}: {exc_info[1]}"))
    if errors:
        raise StepFailed("could not remove all of the work directory: " + "; ".join(errors[:5]))
    ctx.log(f"Removed {ctx.workdir}")
