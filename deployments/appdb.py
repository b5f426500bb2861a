"""The apps' own PostgreSQL databases (infraspec services.postgres).

They live on the server NORN_APP_DATABASES_URL names. Commands get the
connection through PG* environment variables, so the password is never an
argument, and messages show it as ***.
"""

from urllib.parse import quote

import psycopg
from django.conf import settings
from psycopg import sql


def _server():
    return settings.NORN_APP_DATABASES


def pg_env(database):
    """libpq environment for pg_dump/pg_restore/psql against `database`."""
    server = _server()
    env = {
        "PGHOST": str(server.get("HOST") or "localhost"),
        "PGPORT": str(server.get("PORT") or 5432),
        "PGUSER": str(server.get("USER") or "postgres"),
        "PGDATABASE": database,
    }
    if server.get("PASSWORD"):
        env["PGPASSWORD"] = server["PASSWORD"]
    return env


def database_url(database, *, redact=False):
    server = _server()
    user = quote(str(server.get("USER") or "postgres"), safe="")
    password = server.get("PASSWORD") or ""
    auth = user + (":" + ("***" if redact else quote(password, safe="")) if password else "")
    host = server.get("HOST") or "localhost"
    port = server.get("PORT") or 5432
    return f"postgres://{auth}@{host}:{port}/{database}"


def secrets():
    password = _server().get("PASSWORD")
    return [password] if password else []


def ensure_database(database):
    """Create the app's database when it does not exist; True if created."""
    env = pg_env("postgres")
    with psycopg.connect(
        host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"],
        password=env.get("PGPASSWORD"), dbname="postgres", autocommit=True, connect_timeout=10,
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        return True


def restore_command(database, path):
    """The command a user runs to restore a snapshot (no password in it)."""
    server = _server()
    return (
        f"pg_restore --clean --if-exists --single-transaction --no-owner "
        f"-h {server.get('HOST') or 'localhost'} -p {server.get('PORT') or 5432} "
        f"-U {server.get('USER') or 'postgres'} -d {database} {path}"
    )
