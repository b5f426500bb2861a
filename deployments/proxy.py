"""Norn's TCP proxy: each app's public port, forwarded to its current container.

The Docker runtime starts a new container on a private backend port, checks
it, and only then points the app's route at it, so the public port never goes
unanswered. Routes live in a JSON file in the proxy directory that the
runtime writes and the proxy (`manage.py proxy`) polls; the proxy answers in a
status file with the version it applied and a heartbeat.

Files in the directory (NORN_PROXY_DIR):
  routes.json  {"version": 7, "routes": {"shop": {"port": 8000, "backend": 41234}}}
               written by the runtime, under routes.lock
  status.json  {"pid", "version", "heartbeat", "listening": {port: backend},
               "errors": {port: why}, "connections": {backend: open}}
               written by the proxy every HEARTBEAT_INTERVAL and after each change
  proxy.pid, proxy.lock (held while a proxy runs: there is only ever one),
  start.lock, proxy.log (its output when the runtime started it)
"""

import asyncio
import collections
import contextlib
import fcntl
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
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
# Starting means loading Django in a new interpreter: a second or two.
START_TIMEOUT = 20.0
# Waiting for the proxy to apply a route: a few polls, with room for a busy host.
ACK_TIMEOUT = 10.0
# A backend that does not accept within this long gets the client's
# connection closed rather than held open forever.
CONNECT_TIMEOUT = 5.0
BUFFER_SIZE = 64 * 1024

ROUTES = "routes.json"
STATUS = "status.json"
PID_FILE = "proxy.pid"
LOG_FILE = "proxy.log"


class ProxyError(Exception):
    """The proxy could not be started, did not answer, or refused a route."""


def state_dir():
    """The proxy directory (created if needed)."""
    directory = Path(getattr(settings, "NORN_PROXY_DIR", settings.BASE_DIR / "var" / "proxy"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _write_json(path, data, durable=False):
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


def _read_json(path):
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
def _locked(path):
    """An exclusive flock on `path` for the block (blocking: holders are quick)."""
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# --- routes: written by the runtime --------------------------------------------


def read_routes(directory=None):
    """(version, {app: {"port": public, "backend": backend}})."""
    data = _read_json((directory or state_dir()) / ROUTES) or {}
    return int(data.get("version", 0)), dict(data.get("routes") or {})


def route(app_name, directory=None):
    """The app's route ({"port", "backend"}), or None."""
    return read_routes(directory)[1].get(app_name)


def set_route(app_name, port, backend, directory=None):
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


def drop_route(app_name, directory=None):
    """Stop serving the app's public port. Returns the version to wait for."""
    directory = directory or state_dir()
    with _locked(directory / "routes.lock"):
        version, routes = read_routes(directory)
        if routes.pop(app_name, None) is None:
            return version
        return _write_routes(directory, version, routes)


def _write_routes(directory, version, routes):
    """Write the routes under a new version (the caller holds routes.lock); returns it."""
    # Past what the proxy last applied too: if routes.json was lost or
    # damaged, counting from 1 again would make wait_applied() take the
    # proxy's older version for an acknowledgement of this one.
    applied = (_read_json(directory / STATUS) or {}).get("version", 0)
    version = max(version, int(applied)) + 1
    _write_json(directory / ROUTES, {"version": version, "routes": routes}, durable=True)
    return version


# --- status: written by the proxy ----------------------------------------------


def read_status(directory=None):
    """The running proxy's status when it is alive (fresh heartbeat, live
    pid), else None."""
    status = _read_json((directory or state_dir()) / STATUS)
    if not status:
        return None
    if time.time() - status.get("heartbeat", 0) > STALE_AFTER or not pid_alive(status.get("pid", 0)):
        return None
    return status


def alive(directory=None):
    return read_status(directory) is not None


def wait_status(predicate, what, timeout=ACK_TIMEOUT, directory=None):
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


def wait_applied(version, timeout=ACK_TIMEOUT, directory=None):
    """Wait until the proxy has applied routes `version`; returns its status."""
    return wait_status(lambda s: s.get("version", 0) >= version, f"routes version {version} as applied", timeout, directory)


def listening(status, port):
    """The backend the proxy forwards `port` to, or None (see errors)."""
    return status.get("listening", {}).get(str(port))


def open_connections(status, backend):
    return status.get("connections", {}).get(str(backend), 0)


# --- starting and stopping the process -----------------------------------------


def ensure_running(directory=None, timeout=START_TIMEOUT):
    """Start `manage.py proxy` in the background unless one is alive.

    Returns the new process's pid, or None when one was already running.
    Raises ProxyError, with the end of its log, when it does not come up.
    """
    directory = directory or state_dir()
    if alive(directory):
        return None
    # Two deploys may find the proxy down at once; only one starts it.
    with _locked(directory / "start.lock"):
        if alive(directory):
            return None
        log_path = directory / LOG_FILE
        with open(log_path, "ab") as output:
            proc = subprocess.Popen(
                [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "proxy", "--dir", str(directory)],
                cwd=settings.BASE_DIR,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Its own session: it outlives this worker, and killing a
                # step's process group (cancel, timeout, crash recovery)
                # must never take every app's public port down with it.
                start_new_session=True,
            )
        # Reap it if it ever exits while this process lives, so it does not
        # linger as a zombie.
        threading.Thread(target=proc.wait, name=f"reap-proxy-{proc.pid}", daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = read_status(directory)
            if status and status.get("pid") == proc.pid:
                return proc.pid
            if proc.returncode is not None:
                raise ProxyError(
                    f"the Norn proxy exited with status {proc.returncode} as it started; "
                    f"the end of {log_path}:\n{_log_tail(log_path)}"
                )
            time.sleep(POLL_INTERVAL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        raise ProxyError(
            f"the Norn proxy did not report a heartbeat within {timeout:g} s of starting; "
            f"the end of {log_path}:\n{_log_tail(log_path)}"
        )


def _log_tail(path, lines=10):
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def stop(directory=None, timeout=10.0):
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


# --- the proxy itself ----------------------------------------------------------


class Proxy:
    """The listeners and the forwarding; one per process, driven by serve()."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.version = 0
        # Public port -> backend port, looked up once per accepted connection:
        # a switch changes where new connections go, never an open one.
        self.backends = {}
        self.servers = {}
        self.errors = {}
        self.connections = collections.Counter()
        self.tasks = set()
        self._signature = None
        self.dirty = True

    def routes_changed(self):
        """Re-read routes.json if it was replaced; (version, {port: backend}) or None."""
        path = self.directory / ROUTES
        try:
            st = path.stat()
            # os.replace gives a new inode: this catches two writes within
            # the file system's mtime granularity too.
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            signature = None
        if signature == self._signature:
            return None
        self._signature = signature
        data = _read_json(path) if signature else {"version": 0, "routes": {}}
        if data is None:
            # A file the runtime did not write (it writes atomically): keep
            # serving what we have rather than drop every route.
            return None
        wanted = {}
        for app, r in (data.get("routes") or {}).items():
            try:
                port, backend = int(r["port"]), int(r["backend"])
            except (KeyError, TypeError, ValueError):
                log.error("ignoring the malformed route of %s: %r", app, r)
                continue
            wanted[port] = backend
        return int(data.get("version", 0)), wanted

    async def apply(self, version, wanted):
        for port in set(self.servers) - set(wanted):
            log.info("closing port %s", port)
            # Stops accepting; connections already open keep going.
            self.servers.pop(port).close()
        for port in set(self.errors) - set(wanted):
            del self.errors[port]
        for port, backend in wanted.items():
            if self.backends.get(port) != backend:
                log.info("port %s -> %s:%s", port, BACKEND_HOST, backend)
        self.backends = dict(wanted)
        self.version = version
        await self.listen_all()
        self.dirty = True

    async def listen_all(self):
        """Open the listeners that are missing; a port something else holds is
        retried on every poll (it may be an old container letting go of it)."""
        for port in self.backends:
            if port in self.servers:
                continue
            try:
                self.servers[port] = await asyncio.start_server(
                    functools.partial(self.handle, port), LISTEN_HOST, port
                )
            except OSError as exc:
                # asyncio wraps the bind error in a long sentence; the errno says it.
                error = os.strerror(exc.errno) if exc.errno else str(exc)
                if self.errors.get(port) != error:
                    log.warning("cannot listen on %s:%s: %s", LISTEN_HOST, port, error)
                    self.errors[port] = error
                    self.dirty = True
                continue
            log.info("listening on %s:%s", LISTEN_HOST, port)
            if self.errors.pop(port, None):
                self.dirty = True

    async def handle(self, port, client_reader, client_writer):
        backend = self.backends.get(port)
        if backend is None:
            client_writer.close()
            return
        task = asyncio.current_task()
        self.tasks.add(task)
        self.connections[backend] += 1
        backend_writer = None
        try:
            try:
                backend_reader, backend_writer = await asyncio.wait_for(
                    asyncio.open_connection(BACKEND_HOST, backend), CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError) as exc:
                log.warning("port %s: cannot reach backend %s:%s: %s", port, BACKEND_HOST, backend, exc)
                return
            await asyncio.gather(
                _pipe(client_reader, backend_writer, client_writer),
                _pipe(backend_reader, client_writer, backend_writer),
            )
        finally:
            self.connections[backend] -= 1
            if not self.connections[backend]:
                del self.connections[backend]
            for writer in (client_writer, backend_writer):
                if writer is not None:
                    writer.close()
            self.tasks.discard(task)

    def write_status(self):
        _write_json(self.directory / STATUS, {
            "pid": os.getpid(),
            "version": self.version,
            "heartbeat": time.time(),
            "listening": {str(p): b for p, b in self.backends.items() if p in self.servers},
            "errors": {str(p): e for p, e in self.errors.items()},
            "connections": {str(b): n for b, n in self.connections.items()},
        })
        self.dirty = False

    async def close(self):
        for server in self.servers.values():
            server.close()
        self.servers.clear()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _pipe(reader, writer, other):
    """Copy reader to writer until EOF, then pass the EOF on (half-close).

    On a reset of either side both connections are closed: the other
    direction is waiting on a read that would otherwise never end.
    """
    try:
        while data := await reader.read(BUFFER_SIZE):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()
        other.close()


async def serve(directory, stop_event):
    """Run the proxy until stop_event is set."""
    proxy = Proxy(directory)
    last_heartbeat = 0.0
    try:
        while not stop_event.is_set():
            changed = proxy.routes_changed()
            if changed is not None:
                await proxy.apply(*changed)
            else:
                await proxy.listen_all()
            now = time.monotonic()
            if proxy.dirty or now - last_heartbeat >= HEARTBEAT_INTERVAL:
                proxy.write_status()
                last_heartbeat = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), POLL_INTERVAL)
    finally:
        await proxy.close()


def run(directory):
    """Run the proxy in the foreground until SIGTERM or SIGINT.

    Raises ProxyError when another proxy already runs on this directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = open(directory / "proxy.lock", "a")
    try:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProxyError(f"another Norn proxy is already running on {directory}") from None
        (directory / PID_FILE).write_text(f"{os.getpid()}\n")
        log.info("Norn proxy (pid %s) serving the routes in %s", os.getpid(), directory / ROUTES)

        async def main():
            stop_event = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop_event.set)
            await serve(directory, stop_event)

        try:
            asyncio.run(main())
        finally:
            # Gone at once rather than stale after STALE_AFTER: the runtime
            # starts a new proxy without waiting.
            for name in (STATUS, PID_FILE):
                with contextlib.suppress(FileNotFoundError):
                    (directory / name).unlink()
            log.info("Norn proxy stopped")
    finally:
        lock.close()
