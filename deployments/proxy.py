"""Norn's TCP proxy as the Docker runtime drives it: each app's public port, forwarded
to its current container.

The Docker runtime starts a new container on a private backend port, checks
it, and only then points the app's route at it, so the public port never goes
unanswered. Routes live in a JSON file in the proxy directory that the
runtime writes (this module) and the proxy (`manage.py proxy`, proxyserver.py)
polls; the proxy answers in a status file with the version it applied and a
heartbeat.

The proxy is a service of its own (norn-proxy.service, or a process of
scripts/quickstart): Norn's workers never start it, so nothing a worker
started outlives the worker, and a deploy that finds it down fails at once
saying how to start it (NOT_RUNNING).

Files in the directory (NORN_PROXY_DIR):
  routes.json  {"version": 7, "routes": {"shop": {"port": 8000, "backend": 41234}}}
               written by the runtime, under routes.lock
  status.json  {"pid", "version", "heartbeat", "listening": {port: backend},
               "errors": {port: why}, "connections": {backend: open}}
               written by the proxy every HEARTBEAT_INTERVAL and after each change
  proxy.pid, proxy.lock (held while a proxy runs: there is only ever one)
"""

import contextlib
import fcntl
import json
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from deployments.runner import pid_alive

log = logging.getLogger(__name__)

# Public ports and backends are on this host's loopback: the containers run
# with --network host, and the proxy is the only thing that should be reached
# on an app's public port.
LISTEN_HOST = "127.0.0.1"
BACKEND_HOST = "127.0.0.1"

# How often the proxy looks at routes.json (and retries ports it could not
# bind): a route switch is live within about this long.
POLL_INTERVAL = 0.1
HEARTBEAT_INTERVAL = 0.5
# A status older than this means the proxy is hung or gone, even if its pid
# still exists (pids are reused).
STALE_AFTER = 5.0
# Waiting for the proxy to apply a route: a few polls, with room for a busy host.
ACK_TIMEOUT = 10.0

ROUTES = "routes.json"
STATUS = "status.json"
PID_FILE = "proxy.pid"

NOT_RUNNING = "the Norn proxy is not running: start `manage.py proxy` (systemd: norn-proxy.service)"


class ProxyError(Exception):
    """The proxy could not be started, did not answer, or refused a route."""


def state_dir() -> Path:
    """The proxy directory (created if needed)."""
    directory = Path(getattr(settings, "NORN_PROXY_DIR", settings.BASE_DIR / "var" / "proxy"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def write_json(path: Path, data: dict, durable: bool = False) -> None:
    """Replace `path` with `data` atomically: readers see the old file or the
    new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, sort_keys=True)
            if durable:
                # Routes must survive a power cut: after a reboot the proxy
                # starts from this file, and an empty one would lose them all.
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> dict | None:
    """The file's JSON, or None when it does not exist (or is not JSON)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive flock on `path` for the block (blocking: holders are quick)."""
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# --- routes: written by the runtime --------------------------------------------


def read_routes(directory: Path | None = None) -> tuple[int, dict[str, dict]]:
    """(version, {app: {"port": public, "backend": backend}})."""
    data = read_json((directory or state_dir()) / ROUTES) or {}
    return int(data.get("version", 0)), dict(data.get("routes") or {})


def route(app_name: str, directory: Path | None = None) -> dict | None:
    """The app's route ({"port", "backend"}), or None."""
    return read_routes(directory)[1].get(app_name)


def set_route(app_name: str, port: int, backend: int, directory: Path | None = None) -> int:
    """Send new connections to the app's public `port` to 127.0.0.1:`backend`.

    Returns the routes version to wait for (wait_applied). An unchanged route
    keeps the version. Raises ProxyError when another app has the port.
    """
    directory = directory or state_dir()
    # Two workers deploying two apps at once both read-modify-write the file;
    # without the lock one of the switches would be lost.
    with _locked(directory / "routes.lock"):
        version, routes = read_routes(directory)
        for other, r in routes.items():
            if other != app_name and r.get("port") == port:
                raise ProxyError(f"port {port} is already routed to the app {other}")
        wanted = {"port": int(port), "backend": int(backend)}
        if routes.get(app_name) == wanted:
            return version
        routes[app_name] = wanted
        return _write_routes(directory, version, routes)


def drop_route(app_name: str, directory: Path | None = None) -> int:
    """Stop serving the app's public port. Returns the version to wait for."""
    directory = directory or state_dir()
    with _locked(directory / "routes.lock"):
        version, routes = read_routes(directory)
        if routes.pop(app_name, None) is None:
            return version
        return _write_routes(directory, version, routes)


def _write_routes(directory: Path, version: int, routes: dict) -> int:
    """Write the routes under a new version (the caller holds routes.lock); returns it."""
    # Past what the proxy last applied too: if routes.json was lost or
    # damaged, counting from 1 again would make wait_applied() take the
    # proxy's older version for an acknowledgement of this one.
    applied = (read_json(directory / STATUS) or {}).get("version", 0)
    version = max(version, int(applied)) + 1
    write_json(directory / ROUTES, {"version": version, "routes": routes}, durable=True)
    return version


# --- status: written by the proxy ----------------------------------------------


def read_status(directory: Path | None = None) -> dict | None:
    """The running proxy's status when it is alive (fresh heartbeat, live
    pid), else None."""
    status = read_json((directory or state_dir()) / STATUS)
    if not status:
        return None
    if time.time() - status.get("heartbeat", 0) > STALE_AFTER or not pid_alive(status.get("pid", 0)):
        return None
    return status


def alive(directory: Path | None = None) -> bool:
    return read_status(directory) is not None


def wait_status(predicate: Callable[[dict], bool], what: str, timeout: float = ACK_TIMEOUT,
                directory: Path | None = None) -> dict:
    """Return the first live status for which predicate(status) is true.

    Raises ProxyError naming `what` when the proxy dies or `timeout` passes.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = read_status(directory)
        if status is None:
            raise ProxyError(f"the Norn proxy stopped while waiting for {what}")
        if predicate(status):
            return status
        if time.monotonic() >= deadline:
            raise ProxyError(f"the Norn proxy did not report {what} within {timeout:g} s")
        time.sleep(POLL_INTERVAL / 2)


def wait_applied(version: int, timeout: float = ACK_TIMEOUT, directory: Path | None = None) -> dict:
    """Wait until the proxy has applied routes `version`; returns its status."""
    return wait_status(lambda s: s.get("version", 0) >= version, f"routes version {version} as applied", timeout, directory)


def listening(status: dict, port: int) -> int | None:
    """The backend the proxy forwards `port` to, or None (see errors)."""
    return status.get("listening", {}).get(str(port))


def open_connections(status: dict, backend: int) -> int:
    return status.get("connections", {}).get(str(backend), 0)


# --- the process ------------------------------------------------------------------


def stop(directory: Path | None = None, timeout: float = 10.0) -> int | None:
    """SIGTERM the running proxy and wait for it to exit; returns its pid or None."""
    directory = directory or state_dir()
    try:
        pid = int((directory / PID_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            raise ProxyError(f"the Norn proxy (pid {pid}) did not stop within {timeout:g} s of SIGTERM")
        time.sleep(POLL_INTERVAL / 2)
    return pid
