"""Verify (restores): the snapshot file is there and is what was dumped.

Its size and sha256 were recorded at dump time; a missing, truncated or
altered file stops the restore before anything touches the database.
"""

import hashlib
import os
import stat
from pathlib import Path

from deployments.models import Snapshot
from deployments.steps import Context, StepFailed


def file_problem(snapshot: Snapshot) -> str | None:
    """Why the snapshot's file cannot be restored, or None."""
    path = Path(snapshot.path)
    if not path.is_file():
        return f"snapshot file {path} is missing"
    size = path.stat().st_size
    if size != snapshot.size:
        return f"snapshot file {path} is {size} bytes, but {snapshot.size} were written: it is corrupted"
    digest = hashlib.sha256()
    with path.open("rb") as dump:
        for block in iter(lambda: dump.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != snapshot.sha256:
        return (
            f"snapshot file {path} is corrupted: its sha256 is {digest.hexdigest()[:16]}…, "
            f"but {snapshot.sha256[:16]}… was recorded when it was taken"
        )
    return None


def run(ctx: Context) -> None:
    snapshot = ctx.restore_snapshot
    problem = file_problem(snapshot)
    if problem:
        raise StepFailed(problem + "; nothing was changed")
    path = Path(snapshot.path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Written before snapshots were private (0644): every user of the
        # machine could read the app's data in it.
        os.chmod(path, 0o600)
        ctx.log(f"Snapshot file was readable by others (mode {mode:o}); made it 0600")
    ctx.log(f"Snapshot {snapshot.pk}: {snapshot.path} ({snapshot.size} bytes) matches its sha256 {snapshot.sha256[:12]}…")
