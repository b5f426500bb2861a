"""Least-privilege app databases: a role per app that owns its database and
nothing else, a password that is derived and never kept, the admin connection
for Norn alone, and snapshot files only Norn can read."""

import logging
import os
import stat
import subprocess

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connection

from apps_registry.spec import Spec
from deployments import appdb, appenv
from deployments.models import Event, Snapshot, Step
from deployments.steps import StepFailed, verify
from deployments.steps import snapshot as snapshot_step
from norn_project import checks
from tests.support.contexts import parse_spec, step_context

pytestmark = pytest.mark.django_db(transaction=True)

DOCKERFILE = "FROM norn-busybox:1\nCMD [\"sh\", \"-c\", \"sleep 3600\"]\n"


def admin(db, *statements):
    with psycopg.connect(appdb.database_url(db), autocommit=True) as conn:
        result = None
        for statement in statements:
            result = conn.execute(statement)
        return result.fetchall() if result is not None and result.description else None


def as_app(app, db, **overrides):
    """A connection as the app's role, from this host (containers use
    NORN_APP_DATABASES_HOST; the apps server listens here too)."""
    env = appdb.container_env(app, db, host=appdb._admin()["host"])
    params = {"host": env["PGHOST"], "port": env["PGPORT"], "user": env["PGUSER"],
              "password": env["PGPASSWORD"], "dbname": env["PGDATABASE"], **overrides}
    return psycopg.connect(**params, autocommit=True, connect_timeout=10)


def spec(name, database):
    return parse_spec(f"app: {name}\nrole: worker\nservices:\n  postgres:\n    database: {database}\n")


# --- names and passwords ------------------------------------------------------------


def test_role_names_are_plain_unique_identifiers_within_63_bytes():
    assert appdb.role_name("shop") == "norn_app_shop"
    dashed, underscored = appdb.role_name("a-b"), appdb.role_name("a_b")
    assert dashed != underscored and dashed.startswith("norn_app_a_b_")
    long_one, long_two = appdb.role_name("x" * 62 + "1"), appdb.role_name("x" * 62 + "2")
    assert long_one != long_two and len(long_one) <= 63 and len(long_two) <= 63
    for name in (dashed, long_one):
        assert name.replace("_", "").isalnum() and name == name.lower()


def test_password_is_derived_from_the_key_and_differs_per_app(settings):
    first = appdb.password("shop")
    assert first == appdb.password("shop") and first != appdb.password("blog")
    settings.NORN_APP_DATABASES_KEY = "rotated"
    assert appdb.password("shop") != first


def test_database_env_is_the_apps_own_role_at_the_containers_host(settings):
    settings.NORN_APP_DATABASES_HOST = "host.docker.internal"
    env = appenv.database_env(spec("shop", "shop_db"))
    admin_password = settings.NORN_APP_DATABASES.get("PASSWORD")
    assert env["PGUSER"] == "norn_app_shop" and env["PGDATABASE"] == "shop_db"
    assert env["PGHOST"] == "host.docker.internal"
    assert env["PGPORT"] == str(settings.NORN_APP_DATABASES["PORT"])
    assert env["PGPASSWORD"] == appdb.password("shop")
    assert env["DATABASE_URL"] == (
        f"postgres://norn_app_shop:{appdb.password('shop')}@host.docker.internal:"
        f"{settings.NORN_APP_DATABASES['PORT']}/shop_db"
    )
    assert not admin_password or all(admin_password not in v for v in env.values())
    assert appdb.password("shop") in appdb.secrets(Spec.from_dict({"app": "shop", "services": {"postgres": {"database": "x"}}}))
    assert appenv.database_env(parse_spec("app: plain\nrole: worker\n")) == {}


# --- the role and what it may do ----------------------------------------------------


def test_the_apps_role_owns_its_database_and_can_do_nothing_else(app_database):
    mine, theirs = app_database("mine"), app_database("theirs")
    assert appdb.ensure_database("dbt-mine", mine) is True
    assert appdb.ensure_database("dbt-theirs", theirs) is True
    assert appdb.ensure_database("dbt-mine", mine) is False  # every deploy: idempotent

    with as_app("dbt-mine", mine) as conn:
        conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes (body) VALUES ('hello')")
        assert conn.execute("SELECT body FROM notes").fetchone() == ("hello",)
        attributes = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolinherit, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert attributes == (False, False, False, False, False, False)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE DATABASE dbt_mine_escape")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE ROLE dbt_mine_escape")

    # Another app's database, and the two every cluster has: no CONNECT.
    for other in (theirs, "postgres", "template1"):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            as_app("dbt-mine", other, dbname=other).close()
        with pytest.raises(psycopg.OperationalError):
            as_app("dbt-mine", other, dbname=other, user=appdb.role_name("dbt-theirs")).close()

    # Norn's own server does not know the role, whatever the database.
    own = django_settings.DATABASES["default"]
    with pytest.raises(psycopg.OperationalError):
        as_app("dbt-mine", mine, host=own.get("HOST") or "localhost", port=own.get("PORT") or 5432,
               dbname=connection.settings_dict["NAME"]).close()

    # A wrong password is refused: password auth, not trust.
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        as_app("dbt-mine", mine, password="not-it").close()


def test_a_database_the_admin_made_earlier_is_handed_to_the_role(app_database):
    db = app_database("legacy")
    admin("postgres", f'CREATE DATABASE "{db}"')
    admin(db,
          "CREATE TABLE customers (id serial PRIMARY KEY, name text)",
          "INSERT INTO customers (name) VALUES ('old')",
          "CREATE VIEW names AS SELECT name FROM customers",
          "CREATE SCHEMA billing",
          "CREATE TABLE billing.invoices (id bigint GENERATED ALWAYS AS IDENTITY)",
          "CREATE SEQUENCE counter",
          "CREATE TYPE mood AS ENUM ('ok')",
          "CREATE FUNCTION one() RETURNS int LANGUAGE sql AS 'SELECT 1'")

    appdb.ensure_database("dbt-legacy", db)

    role = appdb.role_name("dbt-legacy")
    assert {r[0] for r in admin(db, "SELECT tableowner FROM pg_tables WHERE schemaname IN ('public', 'billing')")} == {role}
    with as_app("dbt-legacy", db) as conn:
        conn.execute("INSERT INTO customers (name) VALUES ('new')")
        conn.execute("INSERT INTO billing.invoices DEFAULT VALUES")
        conn.execute("SELECT nextval('counter')")
        conn.execute("ALTER TYPE mood ADD VALUE 'great'")
        conn.execute("DROP VIEW names")
        conn.execute("DROP FUNCTION one()")
        conn.execute("CREATE TABLE added (id int)")
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (2,)


def test_a_database_of_another_apps_role_is_refused(app_database):
    db = app_database("taken")
    appdb.ensure_database("dbt-owner", db)
    with pytest.raises(appdb.DatabaseProblem, match=f"belongs to another app's role {appdb.role_name('dbt-owner')}"):
        appdb.ensure_database("dbt-intruder", db)
    with as_app("dbt-owner", db) as conn:  # and the owner's login still works
        conn.execute("SELECT 1")


# --- no password anywhere -----------------------------------------------------------


def test_the_apps_password_is_in_no_table_event_output_or_log(make_app, deploy_now, busybox_image, app_database, caplog):
    db = app_database("quiet")
    password = appdb.password("dbt-quiet")
    migrate = "echo PGPASSWORD=$PGPASSWORD; env"
    make_app("dbt-quiet", f"app: dbt-quiet\nrole: worker\nbuild:\n  dockerfile: Dockerfile\n"
             f"services:\n  postgres:\n    database: {db}\nmigrations:\n  command: {migrate!r}\n",
             {"Dockerfile": DOCKERFILE})
    caplog.set_level(logging.DEBUG)

    deployment = deploy_now("dbt-quiet")

    assert deployment.steps.get(name="snapshot").status == "succeeded", deployment.error
    with as_app("dbt-quiet", db) as conn:  # the role was made, with that password
        conn.execute("SELECT 1")
    assert password not in "".join(Step.objects.values_list("output", flat=True))
    assert not any(password in str(e.payload) for e in Event.objects.all())
    assert password not in caplog.text
    # The whole of Norn's database, as pg_dump sees it.
    own = connection.settings_dict
    dump = subprocess.run(
        ["pg_dump", "--data-only", "-d", own["NAME"]],
        env={**os.environ, "PGHOST": own.get("HOST") or "localhost", "PGPORT": str(own.get("PORT") or 5432),
             "PGUSER": own.get("USER") or "postgres", "PGPASSWORD": own.get("PASSWORD") or ""},
        capture_output=True, text=True, check=True,
    ).stdout
    assert "dbt-quiet" in dump and password not in dump
    # The role's verifier is stored by PostgreSQL, never the password itself.
    stored = admin("postgres", f"SELECT rolpassword FROM pg_authid WHERE rolname = '{appdb.role_name('dbt-quiet')}'")
    assert stored[0][0].startswith("SCRAM-SHA-256$") and password not in stored[0][0]


# --- configuration ------------------------------------------------------------------


def test_without_an_apps_server_the_snapshot_says_what_to_set(make_app, deploy_now, busybox_image, settings):
    settings.NORN_APP_DATABASES = None
    make_app("dbt-unset", f"app: dbt-unset\nrole: worker\nbuild:\n  dockerfile: Dockerfile\n"
             "services:\n  postgres:\n    database: dbt_unset\n", {"Dockerfile": DOCKERFILE})
    deployment = deploy_now("dbt-unset")
    assert deployment.error.startswith("snapshot failed: cannot prepare the app database dbt_unset: "
                                       "NORN_APP_DATABASES_URL is not set")
    assert [w.id for w in checks.check_app_databases()] == ["norn.W004"]


def test_check_warns_when_the_apps_server_is_norns_own(settings):
    assert checks.check_app_databases() == []
    settings.NORN_APP_DATABASES = {**settings.DATABASES["default"]}
    assert [w.id for w in checks.check_app_databases()] == ["norn.W005"]


# --- snapshot files -----------------------------------------------------------------


def test_snapshots_are_private_whatever_the_umask(app_database, tmp_path, settings, make_app):
    db = app_database("private")
    make_app("dbt-private", f"app: dbt-private\nrole: worker\nservices:\n  postgres:\n    database: {db}\n")
    settings.NORN_SNAPSHOT_DIR = tmp_path / "deep" / "snapshots"
    from deployments import transitions
    from apps_registry.models import App

    deployment = transitions.create(App.objects.get(name="dbt-private"), "HEAD")
    ctx = step_context(spec("dbt-private", db), deployment_id=deployment.pk, commit_sha="a" * 40, timeout=120)
    old = os.umask(0)
    try:
        snapshot_step.run(ctx)
        snapshot_step.run(ctx)  # a second one in the existing directory
    finally:
        os.umask(old)
    assert stat.S_IMODE(settings.NORN_SNAPSHOT_DIR.stat().st_mode) == 0o700
    files = sorted(settings.NORN_SNAPSHOT_DIR.iterdir())
    assert len(files) == 2 and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert {s.path for s in Snapshot.objects.filter(database=db)} == {str(f) for f in files}
    assert f"owned by the app's role {appdb.role_name('dbt-private')}" in ctx.text()


def test_verify_makes_an_old_world_readable_snapshot_private(app_database, tmp_path, settings, make_app):
    db = app_database("old")
    make_app("dbt-old", f"app: dbt-old\nrole: worker\nservices:\n  postgres:\n    database: {db}\n")
    settings.NORN_SNAPSHOT_DIR = tmp_path / "snapshots"
    from deployments import transitions
    from apps_registry.models import App

    deployment = transitions.create(App.objects.get(name="dbt-old"), "HEAD")
    ctx = step_context(spec("dbt-old", db), deployment_id=deployment.pk, commit_sha="b" * 40, timeout=120)
    snapshot_step.run(ctx)
    path = ctx.snapshot.path
    os.chmod(path, 0o644)
    ctx.restore_snapshot = ctx.snapshot
    verify.run(ctx)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "made it 0600" in ctx.text()
    os.unlink(path)
    with pytest.raises(StepFailed, match="is missing"):
        verify.run(ctx)
