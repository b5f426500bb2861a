"""Probes for the services Norn depends on (PostgreSQL, Redis, Docker).

Used by the system checks (at start) and by the health endpoint (at run time);
each returns None when the service answers, or a one-line reason when not.
"""

import shutil
import subprocess

import redis
from django.conf import settings
from django.db import DatabaseError, connection


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
    client = redis.Redis.from_url(
        url or settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        return str(exc) or exc.__class__.__name__
    finally:
        client.close()
    return None


def docker_problem():
    docker = shutil.which("docker")
    if docker is None:
        return "the docker client is not installed"
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
    from urllib.parse import urlsplit

    parts = urlsplit(settings.REDIS_URL)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}{parts.path}"
