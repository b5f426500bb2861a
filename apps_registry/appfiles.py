"""Read a file named inside NORN_APPS_DIR only if it really lies there.

An infraspec.yaml, or its app directory, may be a symlink. One that resolves
outside the apps directory (to /etc/passwd, to Norn's own settings) is refused
before it is opened: its content would otherwise come back to whoever can see
validation errors (the registry, the dashboard, validate_infraspec).
"""

import errno
import os
import stat

from django.conf import settings


class Refused(OSError):
    """The file was not read; `strerror` says why. An OSError, so callers that
    already report unreadable files report this the same way."""

    def __init__(self, reason):
        super().__init__(errno.EACCES, reason)


def read_bytes(path, apps_dir=None) -> bytes:
    """The content of `path`. When `path` is named inside `apps_dir` (default
    NORN_APPS_DIR), its real path must lie inside too, else Refused.

    A path named elsewhere (validate_infraspec given a file in an app's own
    checkout) is read as it is: the operator named it.
    """
    apps_dir = apps_dir or settings.NORN_APPS_DIR
    root = os.path.realpath(apps_dir)
    named = os.path.abspath(path)
    if not (_within(named, os.path.abspath(apps_dir)) or _within(named, root)):
        with open(named, "rb") as f:
            return f.read()
    real = os.path.realpath(named)
    if not _within(real, root):
        raise Refused(_outside(real, root))
    # O_NOFOLLOW: the file cannot have become a symlink since realpath();
    # O_NONBLOCK: a FIFO planted there cannot hang the reader.
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Refused("is not a regular file")
        # What was really opened, even if a directory on the way was swapped
        # for a symlink after realpath() looked.
        try:
            opened = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            opened = real
        if not _within(opened, root):
            raise Refused(_outside(opened, root))
        return f.read()


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _outside(real: str, root: str) -> str:
    return f"resolves to {real}, outside NORN_APPS_DIR ({root}); Norn reads only files inside it, so it was not read"
