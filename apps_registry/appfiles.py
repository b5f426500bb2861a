"""Read a file named inside NORN_APPS_DIR only if it really lies there, and
only up to a size.

An infraspec.yaml, or its app directory, may be a symlink. One that resolves
outside the apps directory (to /etc/passwd, to Norn's own settings) is refused
before it is opened: its content would otherwise come back to whoever can see
validation errors (the registry, the dashboard, validate_infraspec). A file
over the size limit is refused after reading at most limit + 1 bytes.
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


class TooLarge(Refused):
    """The file is over the size limit; it was not read past it."""

    def __init__(self, size, limit):
        super().__init__(
            f"is {_size_text(size)}; an infraspec may be at most {limit} bytes "
            "(NORN_INFRASPEC_MAX_BYTES), so it was not read"
        )


def read_bytes(path, apps_dir=None, limit=None) -> bytes:
    """The content of `path`. When `path` is named inside `apps_dir` (default
    NORN_APPS_DIR), its real path must lie inside too, else Refused. With a
    `limit`, a file longer than it raises TooLarge.

    A path named elsewhere (validate_infraspec given a file in an app's own
    checkout) is read as it is: the operator named it.
    """
    apps_dir = apps_dir or settings.NORN_APPS_DIR
    root = os.path.realpath(apps_dir)
    named = os.path.abspath(path)
    if not (_within(named, os.path.abspath(apps_dir)) or _within(named, root)):
        with open(named, "rb") as f:
            return _read(f, limit)
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
        return _read(f, limit)


def _read(f, limit):
    if limit is None:
        return f.read()
    # Never more than limit + 1 bytes in memory, whatever the file's size;
    # fstat only names the size in the message.
    data = f.read(limit + 1)
    if len(data) > limit:
        try:
            size = max(os.fstat(f.fileno()).st_size, len(data))
        except OSError:
            size = len(data)
        raise TooLarge(size, limit)
    return data


def _size_text(size):
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MiB ({size} bytes)"
    return f"{size} bytes"


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _outside(real: str, root: str) -> str:
    return f"resolves to {real}, outside NORN_APPS_DIR ({root}); Norn reads only files inside it, so it was not read"
