"""Test: run build.test with `sh -c` in the checked-out tree; skipped without one."""

from deployments.steps import Context, Skip


def run(ctx: Context) -> None:
    command = ctx.spec.build.test if ctx.spec.build else None
    if not command:
        raise Skip("no build.test in infraspec.yaml")
    # The infraspec's own command is a shell command by definition; it is
    # passed as one argument to sh, never spliced into a string of ours.
    ctx.run(["sh", "-c", command], cwd=ctx.workdir / "src", env=ctx.app_env())
