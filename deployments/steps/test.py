"""Test: run build.test with `sh -c` in a throwaway container of the image just
built, the checked-out tree mounted as its working directory; skipped without one.
"""

from deployments import appenv, containers
from deployments.steps import Context, Skip


def run(ctx: Context) -> None:
    command = ctx.spec.build.test if ctx.spec.build else None
    if not command:
        raise Skip("no build.test in infraspec.yaml")
    # The infraspec's own command is a shell command by definition; it is
    # passed as one argument to sh, never spliced into a string of ours. It
    # gets the app's environment but not its database: tests must not touch
    # the live data.
    ctx.log(f"Working directory {containers.WORKSPACE}: the checked-out tree, mounted read-write")
    ctx.run_in_container(
        "test", command,
        env=appenv.container_env(ctx, database=False, port=False),
        setting="build.test",
        workspace=ctx.workdir / "src",
    )
