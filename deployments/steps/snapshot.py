"""Snapshot: `pg_dump -Fc` of the app's database before migrations touch it.

Only for apps with services.postgres. The dump is recorded as a Snapshot row
(path, size, sha256) so it can be found and verified before a restore.
"""

import hashlib
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from deployments import appdb
from deployments.models import Deployment, Snapshot
from deployments.steps import Context, Skip, StepFailed


def run(ctx: Context) -> None:
    if ctx.kind == "restore":
        # Before a restore: the current state, so the restore can be undone.
        database = ctx.restore_snapshot.database
        kind = Snapshot.Kind.PRE_RESTORE
    else:
        if not ctx.spec.postgres:
            raise Skip("no services.postgres in infraspec.yaml")
        database = ctx.spec.postgres.database
        kind = Snapshot.Kind.PRE_MIGRATION
    try:
        created = appdb.ensure_database(database)
    except Exception as exc:
        raise StepFailed(f"cannot reach the app database {database}: {ctx.redact(str(exc))}") from None
    if created:
        ctx.log(f"Database {database} did not exist; created it empty")
    directory = settings.NORN_SNAPSHOT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%S.%fZ")
    label = ctx.commit_sha[:12] if ctx.kind == "deploy" else "pre-restore"
    path = unused_path(directory, f"{database}_{label}_{stamp}")
    env = ctx.base_env(**appdb.pg_env(database))
    try:
        ctx.run(["pg_dump", "-Fc", "-d", database, "-f", path], env=env)
    except BaseException:
        path.unlink(missing_ok=True)  # a partial dump must never look restorable
        raise
    digest = hashlib.sha256()
    with path.open("rb") as dump:
        for block in iter(lambda: dump.read(1 << 20), b""):
            digest.update(block)
    deployment = Deployment.objects.select_related("app").get(pk=ctx.deployment_id)
    ctx.snapshot = Snapshot.objects.create(
        deployment=deployment,
        app=deployment.app,
        database=database,
        path=str(path),
        size=path.stat().st_size,
        sha256=digest.hexdigest(),
        kind=kind,
    )
    ctx.log(f"Snapshot {path} ({ctx.snapshot.size} bytes, sha256 {ctx.snapshot.sha256[:12]}…)")


def unused_path(directory: Path, stem: str) -> Path:
    """A new file name: pg_dump -f would overwrite an existing snapshot (for
    instance the one a restore is about to read)."""
    path = directory / f"{stem}.dump"
    counter = 1
    while path.exists():
        path = directory / f"{stem}-{counter}.dump"
        counter += 1
    return path
