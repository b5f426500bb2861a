"""Migrate: run migrations.command in the new image, with the app's own database
credentials (a throwaway container on Docker, a Job on Kubernetes).

On failure the pipeline stops, and the error names the snapshot taken just
before and the command that restores it.
"""

from deployments import appdb, appenv
from deployments.steps import Context, Skip, StepFailed


def run(ctx: Context) -> None:
    if not ctx.spec.migrations:
        raise Skip("no migrations.command in infraspec.yaml")
    command = ctx.spec.migrations.command
    try:
        if ctx.runtime == "kubernetes":
            # Imported here: a single-host Norn never loads the Kubernetes client.
            from deployments.runtimes import kubejobs

            kubejobs.run(ctx, purpose="migrate", command=command)
        else:
            # Like a release phase: the new image, not the checked-out tree,
            # and no working directory of Norn's.
            ctx.run_in_container(
                "migrate", command, env=appenv.container_env(ctx, port=False), setting="migrations.command"
            )
    except StepFailed as exc:
        raise StepFailed(f"{exc}\n{restore_advice(ctx)}") from None


def restore_advice(ctx: Context) -> str:
    snapshot = ctx.snapshot
    if snapshot is None:
        return "No snapshot was taken before this migration, so there is nothing to restore."
    return (
        f"The database may be partly migrated. Restore snapshot {snapshot.pk} "
        f"({snapshot.path}, taken just before) with:\n"
        f"  {appdb.restore_command(snapshot.database, snapshot.path, app=ctx.app_name)}"
    )
