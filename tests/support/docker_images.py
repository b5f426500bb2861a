"""Local Docker base images for Norn's tests — no Docker Hub needed.

This machine (and CI) cannot pull from Docker Hub, so tests build their images
``FROM`` a tiny base made here from Debian's statically linked busybox
(package ``busybox-static``): a ``FROM scratch`` image holding
``/bin/busybox``, a symlink for every applet (``/bin/sh``, ``httpd``,
``wget``, ``nc``, ...), ``/tmp``, ``/etc/passwd`` and ``/etc/group``.
Dockerfiles can then use ``FROM norn-busybox:1`` with shell-form
``RUN``/``CMD``.

* :func:`docker_available` — is a Docker engine reachable from the ``docker``
  client on PATH?  (``scripts/services`` starts one.)
* :func:`ensure_busybox_base_image` — build the base image once, return its tag.
* :func:`docker_build` — classic-builder (``DOCKER_BUILDKIT=0``) build helper.

Every command runs as an argv list (never through a shell).  Nothing here
depends on Django.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

__all__ = [
    "BUSYBOX_BASE_TAG",
    "DockerError",
    "docker",
    "docker_available",
    "docker_build",
    "ensure_busybox_base_image",
    "find_static_busybox",
    "image_exists",
]

BUSYBOX_BASE_TAG = "norn-busybox:1"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
_LABEL = "org.norn.test-image=busybox-base"


class DockerError(RuntimeError):
    """A docker command failed; the message carries its argv and output."""


def _docker_exe() -> str:
    exe = shutil.which("docker")
    if exe is None:
        raise DockerError("no `docker` client on PATH (run scripts/services)")
    return exe


def docker(
    args: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``docker *args`` and return the completed process (text output).

    With ``check`` (the default) a non-zero exit raises :class:`DockerError`
    with the command and its output.
    """
    argv = [_docker_exe(), *args]
    full_env = None if env is None else {**os.environ, **env}
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )
    if check and proc.returncode != 0:
        raise DockerError(
            f"{' '.join(argv)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc


def docker_available() -> bool:
    """True when the ``docker`` client on PATH can talk to a running engine."""
    if shutil.which("docker") is None:
        return False
    try:
        return docker(["info", "--format", "{{.ServerVersion}}"], check=False, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def image_exists(ref: str) -> bool:
    """True when the local engine has an image called ``ref``."""
    return docker(["image", "inspect", ref], check=False, timeout=60).returncode == 0


def docker_build(context: str | os.PathLike[str], tag: str, *, timeout: float = 600) -> str:
    """Build ``context`` (which holds a ``Dockerfile``) as ``tag`` with the
    classic builder (this client has no buildx) and return ``tag``."""
    docker(
        ["build", "--quiet", "--tag", tag, os.fspath(context)],
        env={"DOCKER_BUILDKIT": "0"},
        timeout=timeout,
    )
    return tag


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a program interpreter (PT_INTERP),
    i.e. one that runs in an empty ``FROM scratch`` image."""
    with path.open("rb") as f:
        header = f.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF":
            return False
        is64 = header[4] == 2
        endian = "<" if header[5] == 1 else ">"
        if is64:
            phoff, = struct.unpack_from(endian + "Q", header, 0x20)
            phentsize, phnum = struct.unpack_from(endian + "HH", header, 0x36)
        else:
            phoff, = struct.unpack_from(endian + "I", header, 0x1C)
            phentsize, phnum = struct.unpack_from(endian + "HH", header, 0x2A)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, = struct.unpack_from(endian + "I", table, i * phentsize)
        if p_type == 3:  # PT_INTERP: needs a dynamic loader
            return False
    return True


def find_static_busybox() -> Path:
    """Path of a statically linked busybox on this machine (Debian package
    ``busybox-static`` installs ``/bin/busybox``)."""
    seen = []
    for candidate in (*BUSYBOX_CANDIDATES, shutil.which("busybox")):
        if not candidate:
            continue
        path = Path(candidate).resolve()
        if path in seen or not path.is_file():
            continue
        seen.append(path)
        if _is_static_elf(path):
            return path
    raise DockerError(
        "no statically linked busybox found "
        f"(looked at {', '.join(map(str, seen)) or ', '.join(BUSYBOX_CANDIDATES)}); "
        "install the Debian package busybox-static (scripts/services does)"
    )


def _applet_paths(busybox: Path) -> list[str]:
    """Where each applet goes, relative to /, e.g. ``bin/sh``, ``usr/bin/env``.

    ``busybox --list-full`` gives the usual locations; builds without it fall
    back to ``busybox --list`` with everything in /bin."""
    for flag, prefix in (("--list-full", ""), ("--list", "bin/")):
        proc = subprocess.run(
            [os.fspath(busybox), flag], capture_output=True, text=True, check=False, timeout=30
        )
        names = [line.strip().strip("/") for line in proc.stdout.splitlines() if line.strip()]
        if proc.returncode == 0 and names:
            return [prefix + name for name in names]
    raise DockerError(f"{busybox} --list-full / --list printed no applets")


def _write_base_context(directory: Path, busybox: Path) -> None:
    rootfs = directory / "rootfs"
    for sub in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "var/tmp"):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox, rootfs / "bin" / "busybox")
    (rootfs / "bin" / "busybox").chmod(0o755)
    for rel in _applet_paths(busybox):
        # Skip busybox itself and odd entries such as "linuxrc" (a directory
        # path in some builds); each link points at the absolute /bin/busybox.
        if rel in ("bin/busybox",) or "/" not in rel or rel.endswith("/"):
            continue
        link = rootfs / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/bin/busybox")
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "var" / "tmp").chmod(0o1777)
    (rootfs / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (directory / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY rootfs/ /\n"
        "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"LABEL {_LABEL}\n"
        # Proves /bin/sh and the applets work before anyone builds on top.
        'RUN ["/bin/sh", "-c", "test -x /bin/sh && test -d /tmp && echo ok > /tmp/.norn-base-check && rm /tmp/.norn-base-check"]\n'
        'CMD ["/bin/sh"]\n'
    )


def ensure_busybox_base_image(tag: str = BUSYBOX_BASE_TAG) -> str:
    """Make sure the local engine has the busybox base image ``tag``; build it
    (classic builder) only when ``docker image inspect`` doesn't find it.

    Returns ``tag``, for ``FROM {tag}`` in test Dockerfiles.  The image is a
    shared cache and is left in place after the tests.
    """
    if image_exists(tag):
        return tag
    busybox = find_static_busybox()
    with tempfile.TemporaryDirectory(prefix="norn-busybox-") as tmp:
        _write_base_context(Path(tmp), busybox)
        docker_build(tmp, tag)
    if not image_exists(tag):
        raise DockerError(f"built {tag} but `docker image inspect {tag}` does not find it")
    return tag
