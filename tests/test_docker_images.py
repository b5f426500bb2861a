"""The busybox base image and a real build → run → push → pull round trip.

Needs a Docker engine and the registry on 127.0.0.1:5000 (``scripts/services``
starts both).  Without them the tests skip, or fail when
``NORN_REQUIRE_DOCKER=1`` (CI sets it so a missing engine can't pass silently).
Plain pytest; runs with ``-p no:django``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

try:
    from tests.support.docker_images import (
        BUSYBOX_BASE_TAG,
        docker,
        docker_available,
        docker_build,
        ensure_busybox_base_image,
        image_exists,
    )
except ModuleNotFoundError:  # run via the `pytest` script, repo root not on sys.path
    from support.docker_images import (  # type: ignore[no-redef]
        BUSYBOX_BASE_TAG,
        docker,
        docker_available,
        docker_build,
        ensure_busybox_base_image,
        image_exists,
    )

REGISTRY = "127.0.0.1:5000"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def _unavailable(what: str) -> None:
    message = f"{what} (run scripts/services)"
    if os.environ.get("NORN_REQUIRE_DOCKER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _registry_up() -> bool:
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=3) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Created:
    """Containers, images and registry manifests a test made; removed at teardown."""

    def __init__(self) -> None:
        self.containers: list[str] = []
        self.images: list[str] = []
        self.manifests: list[tuple[str, str]] = []  # (repository, tag)

    def cleanup(self) -> None:
        for container in reversed(self.containers):
            docker(["rm", "--force", container], check=False, timeout=60)
        for image in reversed(self.images):
            docker(["rmi", "--force", image], check=False, timeout=60)
        for repository, tag in self.manifests:
            _delete_manifest(repository, tag)


def _delete_manifest(repository: str, tag: str) -> None:
    """Best effort: drop repository:tag from the registry (delete is enabled)."""
    url = f"http://{REGISTRY}/v2/{repository}/manifests/{tag}"
    try:
        head = urllib.request.Request(url, method="HEAD", headers={"Accept": MANIFEST_V2})
        with urllib.request.urlopen(head, timeout=5) as response:
            digest = response.headers["Docker-Content-Digest"]
        delete = urllib.request.Request(
            f"http://{REGISTRY}/v2/{repository}/manifests/{digest}", method="DELETE"
        )
        urllib.request.urlopen(delete, timeout=5).close()
    except (OSError, urllib.error.URLError, KeyError, TypeError):
        pass


@pytest.fixture
def created():
    record = Created()
    yield record
    record.cleanup()


@pytest.fixture(scope="module")
def base_image() -> str:
    if not docker_available():
        _unavailable("no Docker engine reachable with the `docker` client on PATH")
    return ensure_busybox_base_image()


def _build_app_image(base: str, directory: Path, token: str, created: Created) -> str:
    """A tiny web app: busybox httpd serving a COPYed file and a RUN-made one."""
    (directory / "site").mkdir()
    (directory / "site" / "index.html").write_text(f"hello from norn {token}\n")
    (directory / "Dockerfile").write_text(
        f"FROM {base}\n"
        "COPY site/ /www/\n"
        f"RUN echo \"built {token} by $(whoami) in $(pwd)\" > /www/built.txt && ls /www\n"
        "EXPOSE 8080\n"
        "CMD httpd -f -p 8080 -h /www\n"  # shell form: runs through /bin/sh -c
    )
    tag = f"norn-test-app-{token}:1"
    created.images.append(tag)
    return docker_build(directory, tag)


def _run_app(image: str, created: Created) -> tuple[str, int]:
    port = _free_port()
    name = f"norn-test-{secrets.token_hex(4)}"
    created.containers.append(name)
    docker(["run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:8080", image])
    return name, port


def _fetch(url: str, container: str, deadline_s: float = 20) -> str:
    deadline = time.monotonic() + deadline_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return response.read().decode()
        except (OSError, urllib.error.URLError) as exc:
            last_error = exc
            time.sleep(0.2)
    logs = docker(["logs", container], check=False)
    state = docker(["inspect", "--format", "{{json .State}}", container], check=False)
    pytest.fail(
        f"GET {url} failed for {deadline_s}s: {last_error}\n"
        f"container state: {state.stdout.strip()}\nlogs:\n{logs.stdout}{logs.stderr}"
    )


def test_base_image_is_built_once_and_has_a_working_shell(base_image):
    assert base_image == BUSYBOX_BASE_TAG
    image_id = docker(["image", "inspect", "--format", "{{.Id}}", base_image]).stdout.strip()
    # Second call finds the image and does not rebuild it.
    assert ensure_busybox_base_image() == base_image
    assert docker(["image", "inspect", "--format", "{{.Id}}", base_image]).stdout.strip() == image_id

    out = docker(
        [
            "run", "--rm", base_image,
            "sh", "-c",
            "echo $((6 * 7)); test -d /tmp && touch /tmp/x && echo tmp-ok; "
            "readlink /bin/sh; ls /usr/bin/wget /usr/sbin/httpd /usr/bin/env",
        ]
    ).stdout.split()
    assert out[:3] == ["42", "tmp-ok", "/bin/busybox"]
    assert out[3:] == ["/usr/bin/env", "/usr/bin/wget", "/usr/sbin/httpd"]


def test_app_image_serves_a_file_on_a_published_port(base_image, tmp_path, created):
    token = secrets.token_hex(4)
    image = _build_app_image(base_image, tmp_path, token, created)

    container, port = _run_app(image, created)

    assert _fetch(f"http://127.0.0.1:{port}/index.html", container) == f"hello from norn {token}\n"
    assert _fetch(f"http://127.0.0.1:{port}/built.txt", container) == f"built {token} by root in /\n"


def test_app_image_round_trips_through_the_local_registry(base_image, tmp_path, created):
    if not _registry_up():
        _unavailable(f"no registry answering http://{REGISTRY}/v2/")
    token = secrets.token_hex(4)
    image = _build_app_image(base_image, tmp_path, token, created)
    image_id = docker(["image", "inspect", "--format", "{{.Id}}", image]).stdout.strip()

    repository = "norn-tests/app"
    remote = f"{REGISTRY}/{repository}:{token}"
    created.images.append(remote)
    created.manifests.append((repository, token))
    docker(["tag", image, remote])
    docker(["push", remote])  # plain HTTP: 127.0.0.0/8 is an insecure registry by default

    with urllib.request.urlopen(f"http://{REGISTRY}/v2/{repository}/tags/list", timeout=5) as r:
        assert token in json.load(r)["tags"]

    # Forget the image locally, so the pull really has to download it.
    docker(["rmi", remote, image])
    assert not image_exists(image) and not image_exists(remote)

    docker(["pull", remote])
    assert docker(["image", "inspect", "--format", "{{.Id}}", remote]).stdout.strip() == image_id

    container, port = _run_app(remote, created)
    assert _fetch(f"http://127.0.0.1:{port}/index.html", container) == f"hello from norn {token}\n"
