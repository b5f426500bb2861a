"""Test: run build.test with `sh -c` in a throwaway container of the image just
built, the checked-out tree mounted as its working directory; skipped without one.
"""

import os
from pathlib import Path

from deployments import appenv
from deployments.steps import Context, Skip


def open_to_any_user(tree: Path) -> None:
    """Let the image's user, whoever it is, write in the checked-out tree.

    The container runs as the image's user with no capabilities, so even its
    root cannot write into a tree owned by Norn's user without the "other"
    bits. Nobody else on the host gets in: the work directory above is 0700.
    """
    for directory, dirnames, filenames in os.walk(tree):
        os.chmod(directory, 0o777)
        for name in filenames:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o666)


def run(ctx: Context) -> None:
    command = ctx.spec.build.test if ctx.spec.build else None
    if not command:
        raise Skip("no build.test in infraspec.yaml")
    # The infraspec's own command is a shell command by definition; it is
    # passed as one argument to sh, never spliced into a string of ours. It
    # gets the app's environment but not its database: tests must not touch
    # the live data.
    open_to_any_user(ctx.workdir / "src")
    ctx.run_in_container(
        "test", command,
        env=appenv.container_env(ctx, database=False, port=False),
        setting="build.test",
        workspace=ctx.workdir / "src",
    )
