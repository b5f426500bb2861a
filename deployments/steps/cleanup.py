"""Cleanup: remove the work directory. Best-effort: it runs after failures too,
and its own failure is recorded but never fails the deployment."""

import shutil
from pathlib import Path

from deployments.steps import Context, StepFailed


def run(ctx: Context) -> None:
    if not ctx.workdir.exists():
        ctx.log(f"{ctx.workdir} is already gone")
        return
    errors = _remove(ctx.workdir)
    if errors and ctx.image and (ctx.workdir / "src").is_dir():
        # What the test container wrote into the tree belongs to the image's
        # user, whom Norn's own user may not be allowed to remove it for: a
        # container of the same image, as the same user, removes it.
        ctx.log("Some files belong to the test container's user; removing them from a container of the image")
        try:
            remove_tree_in_container(ctx, ctx.workdir / "src")
        except StepFailed as exc:
            errors.append(str(exc))
        else:
            errors = _remove(ctx.workdir)
    if errors:
        raise StepFailed("could not remove all of the work directory: " + "; ".join(errors[:5]))
    ctx.log(f"Removed {ctx.workdir}")


def remove_tree_in_container(ctx: Context, tree: Path) -> None:
    """Empty `tree` from a throwaway container of ctx.image that mounts it."""
    ctx.run_in_container(
        "cleanup", "rm -rf /workspace/* /workspace/.[!.]* /workspace/..?*",
        env={}, setting="cleanup", workspace=tree,
    )


def _remove(path: Path) -> list[str]:
    errors = []
    shutil.rmtree(path, onerror=lambda func, failed, exc_info: errors.append(f"{failed}: {exc_info[1]}"))
    return errors
