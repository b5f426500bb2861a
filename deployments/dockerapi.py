"""The Docker Engine API on its unix socket, for Norn's quick read-only
questions (is there such a container, such a network): a `docker inspect`
costs a process start, ~60 ms, this ~2 ms, and a deploy asks several.

Commands a deploy shows (`$ docker create ...`, start, stop) stay docker CLI
runs. With DOCKER_HOST naming anything but a unix socket, socket_path() is
None and callers ask the CLI instead.
"""

import http.client
import json
import os
import socket
from urllib.parse import quote

DEFAULT_SOCKET = "/var/run/docker.sock"
TIMEOUT = 10.0


class Unreachable(Exception):
    """The engine's socket could not be used."""


def socket_path() -> str | None:
    host = os.environ.get("DOCKER_HOST", "")
    if not host:
        return DEFAULT_SOCKET
    if host.startswith("unix://"):
        return host[len("unix://"):]
    return None


class _Connection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("docker", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def get(path: str, timeout: float = TIMEOUT) -> tuple[int, object] | None:
    """GET `path` from the engine: (status, decoded JSON), or None when the
    engine is not on a unix socket. Raises Unreachable when it does not answer."""
    sock = socket_path()
    if sock is None:
        return None
    conn = _Connection(sock, timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(f"cannot reach the Docker engine at unix://{sock}: {exc}") from None
    finally:
        conn.close()
    try:
        data = json.loads(body) if body.strip() else None
    except ValueError:
        data = {"message": body.decode(errors="replace")[:500]}
    return response.status, data


def name(value: str) -> str:
    """A container or network name for a URL path."""
    return quote(value, safe="")
