"""Norn's work directories: NORN_WORK_DIR and one directory per deployment.

They hold clones, the askpass script and build contexts, so they are 0700
whatever the umask Norn was started with: another local user (or an app's
container running as one) must not read or change them.
"""

from pathlib import Path

from django.conf import settings

PRIVATE = 0o700


def make_root() -> Path:
    """NORN_WORK_DIR, created 0700 if it does not exist yet."""
    return _create_private(Path(settings.NORN_WORK_DIR))


def make(workdir: Path) -> Path:
    """A deployment's work directory (its parent is NORN_WORK_DIR), 0700."""
    _create_private(workdir.parent)
    workdir.mkdir(mode=PRIVATE, exist_ok=True)
    # mkdir's mode passes through the umask; chmod does not.
    workdir.chmod(PRIVATE)
    return workdir


def _create_private(path: Path) -> Path:
    """Create `path` 0700 unless it exists: an existing directory keeps the
    mode its operator gave it."""
    if path.is_dir():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE)
    except FileExistsError:
        return path  # another worker made it first
    path.chmod(PRIVATE)
    return path
