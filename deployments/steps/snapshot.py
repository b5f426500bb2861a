"""Snapshot: `pg_dump -Fc` of the app's database before migrations touch it.

Only for apps with services.postgres. The dump is recorded as a Snapshot row
(path, size, sha256) so it can be found and verified before a restore. The
step also makes sure the database exists and is owned by the app's own role
(appdb.ensure_database); the dump itself runs on Norn's admin connection.
Snapshot files are 0600 and their directory 0700, whatever the umask.
"""

import hashlib
import os
import threading
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from deployments import appdb
from deployments.models import Deployment, Snapshot
from deployments.steps import Context, Skip, StepFailed


def prepare_ahead(ctx: Context) -> None:
    """Start appdb.ensure_database for this deploy's snapshot in a thread, so
    that the step finds it done (it is ~50 ms of connections and commits).
    The pipeline calls it as the test step starts: by then the build
    succeeded, and the tests never touch the app's database."""
    if ctx.kind != "deploy" or not (ctx.spec and ctx.spec.postgres) or ctx.database_ready is not None:
        return
    ctx.database_ready = _Ensuring(ctx.app_name, ctx.spec.postgres.database)


class _Ensuring(threading.Thread):
    """appdb.ensure_database(app, database) in a thread; result() is its return or raise."""

    def __init__(self, app: str, database: str) -> None:
        super().__init__(name=f"ensure-{database}", daemon=True)
        self.app, self.database = app, database
        self._created, self._error = None, None
        self.start()

    def run(self) -> None:
        try:
            self._created = appdb.ensure_database(self.app, self.database)
        except Exception as exc:  # raised again in the step's thread by result()
            self._error = exc

    def result(self) -> bool:
        self.join()
        if self._error is not None:
            raise self._error
        return self._created


def prepare_database(ctx: Context, database: str) -> None:
    """Make the app's database and its role ready (appdb.ensure_database), or fail the step."""
    ahead = ctx.database_ready
    try:
        if ahead is not None and ahead.database == database:
            created = ahead.result()
        else:
            created = appdb.ensure_database(ctx.app_name, database)
    except appdb.ServerUnreachable as exc:
        raise StepFailed(f"cannot reach the app database {database}: {ctx.redact(str(exc))}") from None
    except appdb.DatabaseProblem as exc:
        raise StepFailed(f"cannot prepare the app database {database}: {ctx.redact(str(exc))}") from None
    if created:
        ctx.log(f"Database {database} did not exist; created it empty")
    ctx.log(f"Database {database} is owned by the app's role {appdb.role_name(ctx.app_name)}")


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
    # Before anything else touches it: the database and the app's own role
    # (owner of it and of nothing else) with its current password, which the
    # migration and the app's containers then log in with.
    prepare_database(ctx, database)
    directory = private_directory(settings.NORN_SNAPSHOT_DIR)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%S.%fZ")
    label = ctx.commit_sha[:12] if ctx.kind == "deploy" else "pre-restore"
    path = new_private_file(directory, f"{database}_{label}_{stamp}")
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


def private_directory(directory: Path) -> Path:
    """The snapshot directory, created 0700 whatever the umask: the dumps hold
    every app's data."""
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    return directory


def new_private_file(directory: Path, stem: str) -> Path:
    """A new, empty file of mode 0600 for pg_dump -f to fill: pg_dump would
    create it with the umask's mode, and overwrite an existing snapshot (for
    instance the one a restore is about to read). O_EXCL claims the name."""
    counter = 0
    while True:
        path = directory / (f"{stem}.dump" if counter == 0 else f"{stem}-{counter}.dump")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            counter += 1
            continue
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        return path
