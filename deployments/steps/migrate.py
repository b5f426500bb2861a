"""Migrate: run migrations.command with the app database's URL in its environment.

On failure the pipeline stops, and the error names the snapshot taken just
before and the command that restores it.
"""

from deployments import appdb
from deployments.steps import Context, Skip, StepFailed


def run(ctx: Context) -> None:
    if not ctx.spec.migrations:
        raise Skip("no migrations.command in infraspec.yaml")
    env = ctx.app_env()
    if ctx.spec.postgres:
        env.update(appdb.pg_env(ctx.spec.postgres.database))
        env["DATABASE_URL"] = appdb.database_url(ctx.spec.postgres.database)
    try:
        ctx.run(["sh", "-c", ctx.spec.migrations.command], cwd=ctx.workdir / "src", env=env)
    except StepFailed as exc:
        raise StepFailed(f"{exc}\n{restore_advice(ctx)}") from None


def restore_advice(ctx: Context) -> str:
    snapshot = ctx.snapshot
    if snapshot is None:
        return "No snapshot was taken before this migration, so there is nothing to restore."
    return (
        f"The database may be partly migrated. Restore snapshot {snapshot.pk} "
        f"({snapshot.path}, taken just before) with:\n"
        f"  {appdb.restore_command(snapshot.database, snapshot.path)}"
    )
