"""The Docker Engine API on its unix socket, for Norn's quick questions (is
there such a container, such a network): a `docker inspect` costs a process
start, ~60 ms, this ~2 ms, and a deploy asks several; and for the steps'
throwaway containers (deployments/enginerun.py).

The commands of an app's own container (`$ docker create ...`, start, stop)
stay docker CLI runs, shown in the step's output. Where the docker client
would reach the engine some other way (DOCKER_HOST over TCP or ssh, a
context, TLS), socket_path() is None and callers ask the CLI instead.
"""

import http.client
import json
from urllib.parse import quote

from norn_project import services

TIMEOUT = 10.0


class Unreachable(Exception):
    """The engine's socket could not be used."""


def socket_path() -> str | None:
    """The engine's unix socket when the docker client would use it as is
    (no context, TLS or remote host: norn_project/services.py decides as for
    the start-up check), else None."""
    address = services.plain_docker_address()
    return address if isinstance(address, str) else None


def get(path: str, timeout: float = TIMEOUT) -> tuple[int, object] | None:
    """GET `path` from the engine: (status, decoded JSON), or None when the
    engine is not on a unix socket. Raises Unreachable when it does not answer."""
    return request("GET", path, timeout=timeout)


def request(method: str, path: str, body: dict | None = None,
            timeout: float = TIMEOUT) -> tuple[int, object] | None:
    """`method` `path` with a JSON `body`: (status, decoded JSON), or None when
    the engine is not on a unix socket. Raises Unreachable when it does not answer."""
    sock = socket_path()
    if sock is None:
        return None
    conn = services.SocketHTTPConnection(sock, timeout)
    try:
        if body is None:
            conn.request(method, path)
        else:
            conn.request(method, path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(f"cannot reach the Docker engine at unix://{sock}: {exc}") from None
    finally:
        conn.close()
    try:
        decoded = json.loads(data) if data.strip() else None
    except ValueError:
        decoded = {"message": data.decode(errors="replace")[:500]}
    return response.status, decoded


def name(value: str) -> str:
    """A container or network name for a URL path."""
    return quote(value, safe="")


def image_exists(ref: str) -> bool | None:
    """Whether the engine has the image `ref` (a name:tag or an id), or None
    when the engine is not on a unix socket. Raises Unreachable."""
    answer = get(f"/images/{name(ref)}/json")
    if answer is None:
        return None
    status, data = answer
    if status in (200, 404):
        return status == 200
    message = data.get("message") if isinstance(data, dict) else data
    raise Unreachable(f"the Docker engine could not say whether it has {ref}: {message}")
