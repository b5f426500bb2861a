"""`manage.py proxy`, the process: listens on every app's public port and forwards each
new connection to the backend port its route names (deployments/proxy.py writes the
routes; this runs as a service of its own, norn-proxy.service). A switch changes where new connections go, never an
open one; a route's removal closes its port but lets open connections finish.
"""

import asyncio
import collections
import contextlib
import fcntl
import functools
import logging
import os
import signal
import time
from pathlib import Path

from deployments.proxy import (
    BACKEND_HOST,
    HEARTBEAT_INTERVAL,
    LISTEN_HOST,
    PID_FILE,
    POLL_INTERVAL,
    ROUTES,
    STATUS,
    ProxyError,
    read_json,
    write_json,
)

# The name the proxy has always logged under (its log lines in proxy.log show it).
log = logging.getLogger("deployments.proxy")

# A backend that does not accept within this long gets the client's
# connection closed rather than held open forever.
CONNECT_TIMEOUT = 5.0
BUFFER_SIZE = 64 * 1024


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
        data = read_json(path) if signature else {"version": 0, "routes": {}}
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
        write_json(self.directory / STATUS, {
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


async def serve(directory: Path | str, stop_event: asyncio.Event) -> None:
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


def run(directory: Path | str) -> None:
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
