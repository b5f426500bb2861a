"""Restore: `pg_restore --clean --if-exists --single-transaction` of a snapshot.

In one transaction, so a restore that fails part-way changes nothing. Every
table in the snapshot comes back exactly as dumped; tables created after the
snapshot (by a later migration) are not in it, so pg_restore leaves them, and
the output names them. The snapshot step before this one dumped the current
state, so a restore can itself be undone by restoring that one. It runs on
Norn's admin connection as the app's role (--role), so what it restores is
the app's, as if the app had made it.
"""

import re

from deployments import appdb
from deployments.steps import Context


def run(ctx: Context) -> None:
    snapshot = ctx.restore_snapshot
    env = ctx.base_env(**appdb.pg_env(snapshot.database))
    in_dump = tables_in_dump(ctx, snapshot.path, env)
    ctx.run(
        ["pg_restore", "--clean", "--if-exists", "--single-transaction", "--no-owner",
         f"--role={appdb.role_name(ctx.app_name)}", "--exit-on-error", "-d", snapshot.database, snapshot.path],
        env=env,
    )
    ctx.log(f"Restored {snapshot.database} to snapshot {snapshot.pk} taken {snapshot.created_at:%Y-%m-%d %H:%M:%S} UTC")
    extra = sorted(tables_in_database(ctx, env) - in_dump)
    if extra:
        ctx.log(
            "Tables created after the snapshot are not in it and were left in place: "
            + ", ".join(extra) + ". Drop them if they belong to the undone migration."
        )


def tables_in_dump(ctx: Context, path: str, env: dict[str, str]) -> set[str]:
    """schema.table names of the tables a custom-format dump contains."""
    listing = ctx.run(["pg_restore", "--list", path], env=env, echo=False, output=False)
    # TOC lines look like: "215; 1259 16390 TABLE public customers postgres"
    return {
        f"{m.group(1)}.{m.group(2)}"
        for m in re.finditer(r"^\d+; \d+ \d+ TABLE (\S+) (\S+) ", listing.text, re.MULTILINE)
    }


def tables_in_database(ctx: Context, env: dict[str, str]) -> set[str]:
    result = ctx.run(
        ["psql", "--no-psqlrc", "--tuples-only", "--no-align", "-c",
         "SELECT schemaname || '.' || tablename FROM pg_tables "
         "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"],
        env=env, echo=False, output=False,
    )
    return {line.strip() for line in result.text.splitlines() if line.strip()}
