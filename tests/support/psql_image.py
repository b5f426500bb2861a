"""A local test image with psql, for migrations that now run in the app's image.

``norn-psql:1`` is ``norn-busybox:1`` plus this machine's own psql binary and
the shared libraries it links (found with ldd), so no registry is needed.
Tests whose migrations.command uses psql build their app ``FROM norn-psql:1``.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.docker_images import docker_build, ensure_busybox_base_image, image_exists

PSQL_TAG = "norn-psql:1"


def _psql_binary() -> Path:
    # Debian's /usr/bin/psql is a Perl wrapper; the real one is versioned.
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))
    if not found:
        raise RuntimeError("no psql under /usr/lib/postgresql/*/bin (install postgresql-client)")
    return Path(found[-1])


def _libraries(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            libs.append(Path(path))
    return libs


def ensure_psql_image() -> str:
    """Build norn-psql:1 once; returns its tag."""
    if image_exists(PSQL_TAG):
        return PSQL_TAG
    base = ensure_busybox_base_image()
    binary = _psql_binary()
    with tempfile.TemporaryDirectory(prefix="norn-psql-") as tmp:
        context = Path(tmp)
        lines = [f"FROM {base}", "COPY psql /usr/bin/psql"]
        for i, lib in enumerate(_libraries(binary)):
            shutil.copy(lib.resolve(), context / f"lib{i}")
            lines.append(f"COPY lib{i} {lib}")
        shutil.copy(binary, context / "psql")
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
        return docker_build(context, PSQL_TAG)
