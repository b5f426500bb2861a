"""Probes for the services Norn depends on (PostgreSQL, Redis, Docker).

Used by the system checks (at start) and by the health endpoint (at run time);
each returns None when the service answers, or a one-line reason when not.
"""

import http.client
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.db import DatabaseError, connection

# The system checks run before every command: a Docker engine that does not
# answer within this long is reported as down rather than making us wait.
DOCKER_TIMEOUT = 1.0
DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"
REDIS_TIMEOUT = 1.0


def database_problem():
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        # psycopg's message names host, port and user, never the password.
        return str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    return None


def redis_problem(url=None):
    """PING Redis (after AUTH when the URL has a password).

    Spoken directly for the plain redis:// and unix:// URLs: this probe runs
    before every command, and importing the redis library (with the jwt and
    cryptography it pulls in) costs more than the whole exchange. Anything
    else (rediss://, options in the query) goes through the library.
    """
    url = url or settings.REDIS_URL
    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError:
        port = None
    if (parts.scheme not in ("redis", "unix") or parts.query or port is None
            or (parts.username and parts.password is None)):
        return _redis_library_problem(url)
    where = parts.path if parts.scheme == "unix" else f"{parts.hostname or 'localhost'}:{port}"
    commands = [([b"PING"], "+PONG")]
    if parts.password is not None:
        credentials = [unquote(parts.username)] if parts.username else []
        commands.insert(0, ([b"AUTH", *(c.encode() for c in credentials), unquote(parts.password).encode()], "+OK"))
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(REDIS_TIMEOUT)
            sock.connect(parts.path)
        else:
            sock = socket.create_connection((parts.hostname or "localhost", port), REDIS_TIMEOUT)
        with sock, sock.makefile("rb") as replies:
            sock.settimeout(REDIS_TIMEOUT)
            sock.sendall(b"".join(_resp(command) for command, _ in commands))
            for _, expected in commands:
                reply = replies.readline(512).rstrip(b"\r\n").decode(errors="replace")
                if not reply:
                    return f"the server at {where} closed the connection"
                if reply.startswith("-"):
                    # An error reply (wrong password, NOAUTH): its text, never our command.
                    return reply[1:]
                if reply != expected:
                    return f"{where} does not answer as Redis does: {reply[:100]!r}"
    except TimeoutError:
        return f"{where} did not answer within {REDIS_TIMEOUT:g} s"
    except OSError as exc:
        return f"Error connecting to {where}: {exc.strerror or exc}"
    return None


def _resp(command):
    """One command as a RESP array of bulk strings."""
    return b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in command)


def _redis_library_problem(url):
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT)
    except ValueError as exc:  # a malformed URL (settings refuse most of them)
        return str(exc)
    try:
        client.ping()
    except redis.RedisError as exc:
        return str(exc) or exc.__class__.__name__
    finally:
        client.close()
    return None


def docker_problem():
    """Asks the engine the docker client would talk to whether it is up.

    Straight over its socket (GET /_ping, a few ms) where that is a plain
    unix:// or tcp:// address; a `docker version` process (~100 ms) only where
    the client's own configuration decides (a context, TLS, ssh://).
    """
    docker = shutil.which("docker")
    if docker is None:
        return "the docker client is not installed"
    address = plain_docker_address()
    if address is None:
        return _docker_version_problem(docker)
    try:
        connection = SocketHTTPConnection(address, timeout=DOCKER_TIMEOUT)
        try:
            connection.request("GET", "/_ping")
            response = connection.getresponse()
            body = response.read(200).decode(errors="replace").strip()
        finally:
            connection.close()
    except TimeoutError:
        return f"the Docker engine did not answer within {DOCKER_TIMEOUT:g} s"
    except (OSError, http.client.HTTPException) as exc:
        where = f"unix://{address}" if isinstance(address, str) else "tcp://%s:%s" % address
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        return f"cannot connect to the Docker daemon at {where}: {reason}"
    if response.status != 200:
        return f"the Docker engine answered {response.status}: {body[:100]}"
    return None


def plain_docker_address():
    """The engine's socket path or (host, port) when the docker client would
    use it with no configuration of its own; else None."""
    host = os.environ.get("DOCKER_HOST", "")
    if os.environ.get("DOCKER_CONTEXT") or os.environ.get("DOCKER_TLS_VERIFY") or _docker_current_context():
        return None
    if not host:
        return DEFAULT_DOCKER_SOCKET
    parts = urlsplit(host)
    if parts.scheme == "unix" and parts.path:
        return parts.path
    if parts.scheme == "tcp" and parts.hostname:
        try:
            return (parts.hostname, parts.port or 2375)
        except ValueError:
            return None
    return None


def _docker_current_context():
    """A context chosen with `docker context use` (other than the default)."""
    config_dir = os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker"
    try:
        config = json.loads((Path(config_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    current = config.get("currentContext") if isinstance(config, dict) else None
    return current if current and current != "default" else None


class SocketHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (`address` a path) or TCP (a (host, port)):
    the Docker engine's API here, and Caddy's admin API (deployments/caddy.py)."""

    def __init__(self, address, timeout):
        self.address = address
        host = "localhost" if isinstance(address, str) else address[0]
        super().__init__(host, timeout=timeout)

    def connect(self):
        if isinstance(self.address, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(self.timeout)
            self.sock.connect(self.address)
        else:
            self.sock = socket.create_connection(self.address, self.timeout)


def _docker_version_problem(docker):
    try:
        result = subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer within 5 s"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return lines[-1] if lines else f"docker version exited {result.returncode}"
    return None


def safe_database_target():
    """host:port/name of the database, without user or password, for messages."""
    db = settings.DATABASES["default"]
    return f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}/{db['NAME']}"


def safe_redis_target():
    parts = urlsplit(settings.REDIS_URL)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}{parts.path}"
