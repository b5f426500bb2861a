"""The apps' own PostgreSQL databases (infraspec services.postgres).

Each app's database lives on the server NORN_APP_DATABASES_URL names and is
owned by a role of the app's own (norn_app_<app>) that can do nothing else.
Norn keeps the admin connection for itself (snapshot, restore, the roles);
containers get only the app's role, whose password is derived when needed and
never stored. Commands get a connection through PG* environment variables,
never their arguments.
"""

import hashlib
import ipaddress
import re
from urllib.parse import quote

import psycopg
from django.conf import settings
from django.utils.crypto import salted_hmac
from psycopg import sql

# The group every app role belongs to: the apps server's pg_hba.conf lets its
# members (and only them, besides the admin on 127.0.0.1) log in over TCP.
APPS_GROUP = "norn_apps"
ROLE_PREFIX = "norn_app_"
# PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes.
MAX_IDENTIFIER = 63


class DatabaseProblem(Exception):
    """The app's database cannot be used; the message is safe to show."""


class ServerUnreachable(DatabaseProblem):
    """No connection to the apps' server (down, wrong address, refused login)."""


def _server():
    server = settings.NORN_APP_DATABASES
    if not server:
        raise DatabaseProblem(
            "NORN_APP_DATABASES_URL is not set, so Norn has no server for the apps' databases; "
            "set it to an admin connection of a PostgreSQL server of their own (scripts/services "
            "writes one to /var/lib/norn-services/apps-database-url)"
        )
    return server


def _admin():
    server = _server()
    return {
        "host": str(server.get("HOST") or "localhost"),
        "port": str(server.get("PORT") or 5432),
        "user": str(server.get("USER") or "postgres"),
        "password": server.get("PASSWORD") or "",
    }


# --- the app's role -------------------------------------------------------------


def role_name(app: str) -> str:
    """norn_app_<app>: a plain identifier (no quoting needed), unique per app.

    App names may hold '-', which an unquoted identifier may not; such names,
    and ones too long for PostgreSQL, get a hash of the real name appended so
    that "a-b" and "a_b" never share a role.
    """
    base = ROLE_PREFIX + re.sub(r"[^a-z0-9_]", "_", app.lower())
    if base == ROLE_PREFIX + app and len(base) <= MAX_IDENTIFIER:
        return base
    suffix = "_" + hashlib.sha256(app.encode()).hexdigest()[:8]
    return base[: MAX_IDENTIFIER - len(suffix)] + suffix


def password(app: str) -> str:
    """The app role's password: derived from NORN_APP_DATABASES_KEY (default
    SECRET_KEY), so Norn can hand it to every container it starts without
    keeping it anywhere. Changing the key changes every app's password at its
    next deploy (README, NORN_APP_DATABASES_KEY).

    One per role, not per database: a restore of a snapshot of the app's
    earlier database must not change the password its running containers use.
    """
    secret = settings.NORN_APP_DATABASES_KEY or settings.SECRET_KEY
    return salted_hmac("norn.appdb.password", f"norn-appdb:{app}", secret=secret, algorithm="sha256").hexdigest()


def container_env(app: str, database: str, *, host: str | None = None) -> dict[str, str]:
    """The app's own connection, for use inside its containers and Jobs:
    PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE and DATABASE_URL.

    The host is NORN_APP_DATABASES_HOST (host.docker.internal: the Docker
    runtime maps it to the host's gateway), the port the admin URL's.
    """
    host = host or settings.NORN_APP_DATABASES_HOST
    port = _admin()["port"]
    user = role_name(app)
    secret = password(app)
    return {
        "PGHOST": host,
        "PGPORT": port,
        "PGUSER": user,
        "PGPASSWORD": secret,
        "PGDATABASE": database,
        "DATABASE_URL": f"postgres://{user}:{quote(secret, safe='')}@{host}:{port}/{quote(database, safe='')}",
    }


# Host names that mean "this machine": inside a pod, the pod itself.
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def is_loopback(host: str) -> bool:
    """True for localhost names, 127.0.0.0/8, ::1 and a socket directory (a path)."""
    host = host.strip().strip("[]").lower().rstrip(".")
    if not host or host.startswith("/") or host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def kubernetes_host() -> str:
    """Where pods reach the apps' server: NORN_KUBE_APP_DATABASES_HOST, else the admin
    URL's host. Raises DatabaseProblem, naming the setting, when that is a loopback
    address: a pod would connect to itself, and fail only once the app runs."""
    configured = settings.NORN_KUBE_APP_DATABASES_HOST
    host = configured or _admin()["host"]
    if is_loopback(host):
        where = (f"NORN_KUBE_APP_DATABASES_HOST is {host}" if configured
                 else f"NORN_KUBE_APP_DATABASES_HOST is not set and NORN_APP_DATABASES_URL's host is {host}")
        raise DatabaseProblem(
            f"{where}, a loopback address: inside a pod that is the pod itself, so the app could not reach "
            "its database. Set NORN_KUBE_APP_DATABASES_HOST to an address the cluster's pods reach the "
            "apps' PostgreSQL server at (e.g. a Service name such as postgres.databases.svc.cluster.local, "
            "or the server's IP address on the nodes' network)"
        )
    return host


def secrets(spec=None) -> list[str]:
    """What must never be shown: the admin password and the app password of
    `spec` (an apps_registry Spec)."""
    found = set()
    server = settings.NORN_APP_DATABASES
    if server and server.get("PASSWORD"):
        found.add(server["PASSWORD"])
    if spec is not None and spec.postgres:
        found.add(password(spec.app))
    return sorted(found)


# --- Norn's own (admin) connection ----------------------------------------------


def pg_env(database: str) -> dict[str, str]:
    """libpq environment of the ADMIN connection to `database`, for Norn's own
    pg_dump/pg_restore/psql. Never for app code: that gets container_env()."""
    admin = _admin()
    env = {"PGHOST": admin["host"], "PGPORT": admin["port"], "PGUSER": admin["user"], "PGDATABASE": database}
    if admin["password"]:
        env["PGPASSWORD"] = admin["password"]
    return env


def database_url(database: str, *, redact: bool = False) -> str:
    """The ADMIN connection's URL for `database` (Norn's own use, and tests)."""
    admin = _admin()
    user = quote(admin["user"], safe="")
    secret = admin["password"]
    auth = user + (":" + ("***" if redact else quote(secret, safe="")) if secret else "")
    return f"postgres://{auth}@{admin['host']}:{admin['port']}/{quote(database, safe='')}"


def _connect(database: str):
    admin = _admin()
    return psycopg.connect(
        host=admin["host"], port=admin["port"], user=admin["user"], password=admin["password"] or None,
        dbname=database, autocommit=True, connect_timeout=10,
    )


def restore_command(database: str, path: str, app: str | None = None) -> str:
    """The command a user runs to restore a snapshot (no password in it): as
    the admin, with what it restores owned by `app`'s role (the role is left
    out when the caller does not know the app: the next deploy hands the
    tables over then). Without NORN_APP_DATABASES_URL here (a snapshot taken
    before it was unset), the server is left to libpq's PGHOST, PGPORT and
    PGUSER."""
    role = f"--role={role_name(app)} " if app else ""
    try:
        admin = _admin()
    except DatabaseProblem:
        server = ""
    else:
        server = f"-h {admin['host']} -p {admin['port']} -U {admin['user']} "
    return f"pg_restore --clean --if-exists --single-transaction --no-owner {role}{server}-d {database} {path}"


# --- ensuring the database and its role -----------------------------------------


def ensure_database(app: str, database: str) -> bool:
    """Make `database` exist, owned by the app's role with its current password,
    and reachable by no other role; True if it was created.

    Safe to run at every deploy: a database made by an earlier Norn (owned by
    the admin, tables and all) is handed over to the role. One already owned
    by another app's role is refused. Raises DatabaseProblem.
    """
    role = role_name(app)
    try:
        created = None
        try:
            # As a rule the database exists: one connection does it all
            # (roles and grants are the server's, reachable from any database).
            conn = _connect(database)
        except psycopg.OperationalError:
            # It does not exist (or the server is away: said below, the same way).
            with _connect("postgres") as server:
                created = _ensure_on_server(server, app, database, role)
            conn = _connect(database)
        with conn:
            if created is None:
                created = _ensure_on_server(conn, app, database, role)
            _adopt_objects(conn, role)
    except psycopg.Error as exc:
        # The server's message only: str(exc) can quote the statement, and
        # one of them carries the password's verifier.
        message = exc.diag.message_primary
        if message is None:  # no server reply: the connection itself failed
            raise ServerUnreachable(str(exc).strip()) from None
        raise DatabaseProblem(message) from None
    return created


def _ensure_on_server(conn, app: str, database: str, role: str) -> bool:
    ident_role, ident_db = sql.Identifier(role), sql.Identifier(database)
    owner = _owner(conn, database)
    if owner is not None and owner != role and _is_app_role(conn, owner):
        raise DatabaseProblem(
            f"database {database} belongs to another app's role {owner}; choose another "
            "services.postgres.database for this app"
        )
    # The verifier is computed here (libpq's PQencryptPasswordConn), so the
    # statement, which the server may log, never holds the password itself.
    verifier = conn.pgconn.encrypt_password(
        password(app).encode(), role.encode(), b"scram-sha-256"
    ).decode()
    # One transaction, one commit to wait for, where autocommit made one each.
    with conn.transaction():
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
            try:
                with conn.transaction():  # a savepoint: the duplicate must not abort the rest
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident_role))
            except psycopg.errors.DuplicateObject:
                pass  # created meanwhile by a deploy of the same app on another worker
        conn.execute(
            sql.SQL(
                "ALTER ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION "
                "NOBYPASSRLS PASSWORD {}"
            ).format(ident_role, sql.Literal(verifier))
        )
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(APPS_GROUP), ident_role))
    created = False
    if owner is None:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(ident_db, ident_role))
            created = True
        except psycopg.errors.DuplicateDatabase:
            owner = _owner(conn, database)
            if owner != role and _is_app_role(conn, owner):
                raise DatabaseProblem(
                    f"database {database} belongs to another app's role {owner}; choose another "
                    "services.postgres.database for this app"
                ) from None
    with conn.transaction():
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident_db, ident_role))
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident_db))
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(ident_db, ident_role))
        # Every cluster has these two, open to PUBLIC by default; an app's role
        # has no business in either (the admin, a superuser, needs no grant).
        for shared in ("postgres", "template1"):
            conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(shared)))
    return created


def _owner(conn, database: str) -> str | None:
    row = conn.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [database]
    ).fetchone()
    return row[0] if row else None


def _is_app_role(conn, role: str) -> bool:
    """Another app's role: one of Norn's (by name), in the apps' group."""
    if not role.startswith(ROLE_PREFIX):
        return False
    row = conn.execute(
        "SELECT pg_has_role(oid, %s, 'MEMBER') FROM pg_roles WHERE rolname = %s", [APPS_GROUP, role]
    ).fetchone()
    return bool(row and row[0])


# The app's objects that are not the role's yet (made by the admin before apps
# had roles, or by a restore as the admin): schemas, relations, routines and
# types outside the system schemas and extensions; public too, even when
# pg_database_owner has it: the role is NOINHERIT, so owning the database
# alone would not let it create tables there. Indexes, sequences owned by
# a column, row and array types follow their table. Not REASSIGN OWNED: it
# would also hand the role every other database the admin owns.
OBJECTS_TO_ADOPT = """
WITH r AS (SELECT oid FROM pg_roles WHERE rolname = %(role)s),
objects(classid, objid, keyword) AS (
    SELECT 'pg_namespace'::regclass, n.oid, 'SCHEMA' FROM pg_namespace n, r
     WHERE n.nspowner <> r.oid
    UNION ALL
    SELECT 'pg_class'::regclass, c.oid,
           CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'TABLE' WHEN 'v' THEN 'VIEW'
                          WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                          WHEN 'S' THEN 'SEQUENCE' WHEN 'c' THEN 'TYPE' END
      FROM pg_class c, r
     WHERE c.relowner <> r.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c')
       AND NOT (c.relkind = 'S' AND EXISTS (
           SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
              AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
    UNION ALL
    SELECT 'pg_proc'::regclass, p.oid, CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END
      FROM pg_proc p, r WHERE p.proowner <> r.oid
    UNION ALL
    SELECT 'pg_type'::regclass, t.oid, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END
      FROM pg_type t, r WHERE t.typowner <> r.oid AND t.typtype IN ('e', 'd', 'r')
)
SELECT o.keyword, (pg_identify_object(o.classid, o.objid, 0)).identity
  FROM objects o
  JOIN pg_namespace ns ON ns.oid = CASE o.classid
       WHEN 'pg_namespace'::regclass THEN o.objid
       WHEN 'pg_class'::regclass THEN (SELECT relnamespace FROM pg_class WHERE oid = o.objid)
       WHEN 'pg_proc'::regclass THEN (SELECT pronamespace FROM pg_proc WHERE oid = o.objid)
       ELSE (SELECT typnamespace FROM pg_type WHERE oid = o.objid) END
 WHERE ns.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
   AND ns.nspname NOT LIKE 'pg\\_%%temp\\_%%'
   AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = o.classid AND e.objid = o.objid
                      AND e.deptype = 'e')
"""


def _adopt_objects(conn, role: str) -> None:
    rows = conn.execute(OBJECTS_TO_ADOPT, {"role": role}).fetchall()
    # Schemas first, so the log of a failure reads in the natural order.
    for keyword, identity in sorted(rows, key=lambda row: row[0] != "SCHEMA"):
        conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(
            sql.SQL(keyword), sql.SQL(identity), sql.Identifier(role)
        ))
