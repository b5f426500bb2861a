"""App code runs in throwaway containers, never as Norn (issue 9): a hostile
build.test and migrations.command try to read Norn's environment and files and
reach its services or other apps, on the real Docker engine, and every attempt
fails; cancel, timeouts and crash recovery leave no container behind."""

import os
import secrets
import socket
import threading
import time

import pytest

from deployments import containers, recovery, runner, transitions
from deployments.outcomes import StepFailed
from deployments.requests import request_deployment
from deployments.steps import cleanup as cleanup_step
from deployments.steps import migrate as migrate_step
from deployments.steps import test as test_step
from tests.support.contexts import parse_spec, step_context
from tests.support.docker_images import docker, docker_build
from tests.support.networks import remove_app_network

# Where each probe prints "open" or "closed": busybox nc exits non-zero when
# it cannot connect.
PROBE = 'if echo | nc -w 2 {host} {port} >/dev/null 2>&1; then echo "{label} open"; else echo "{label} closed"; fi'


@pytest.fixture
def app():
    """A unique app name; its containers and network are removed afterwards."""
    name = f"ctr-{secrets.token_hex(4)}"
    yield name
    ids = docker(["ps", "--all", "--quiet", "--filter", f"label=norn.app={name}"]).stdout.split()
    if ids:
        docker(["rm", "--force", *ids], check=False)
    remove_app_network(name)


def make_ctx(tmp_path, app, image, *, test=None, migrate=None, env=None, timeout=60, cancel_reason=None):
    text = f"app: {app}\nrole: worker\nbuild:\n  dockerfile: Dockerfile\n"
    if test:
        text += f"  test: {test!r}\n"
    if migrate:
        text += f"migrations:\n  command: {migrate!r}\n"
    if env:
        text += "env:\n" + "".join(f"  {k}: {v!r}\n" for k, v in env.items())
    (tmp_path / "src").mkdir(parents=True, exist_ok=True)
    return step_context(parse_spec(text), workdir=tmp_path, app_dir=tmp_path, image=image,
                        commit_sha="c0ffee", timeout=timeout, cancel_reason=cancel_reason)


def own_containers(public_id):
    return docker(["ps", "--all", "--quiet", "--filter", f"label=norn.deployment={public_id}"]).stdout.split()


def removed(public_id, within=10.0):
    """Are the deployment's throwaway containers gone? One that exited by
    itself is removed by the engine (auto-remove) moments after its end."""
    deadline = time.monotonic() + within
    while own_containers(public_id):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture
def listener():
    """Something of Norn's listening on the host's 127.0.0.1 (like its web server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_test_step_sees_only_the_apps_environment_and_its_own_processes(tmp_path, app, busybox_image, monkeypatch):
    token = f"tok-{secrets.token_hex(6)}"
    monkeypatch.setenv("NORN_GIT_TOKEN", token)
    monkeypatch.setenv("SECRET_KEY", token)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "checked-out.txt").write_text("tree\n")
    command = (
        f"cat /proc/*/environ | tr '\\000' '\\n'; echo; cat /proc/{os.getpid()}/environ 2>&1; "
        "echo pwd=$(pwd); ls; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status"
    )
    ctx = make_ctx(tmp_path, app, busybox_image, test=command, env={"GREETING": "hi"})
    test_step.run(ctx)
    out = ctx.text()
    assert token not in out
    assert "GREETING=hi" in out and f"NORN_APP={app}" in out and f"NORN_DEPLOYMENT={ctx.public_id}" in out
    assert "NORN_COMMIT=c0ffee" in out
    # No database for tests, nor anything of the host's environment.
    assert "DATABASE_URL" not in out and "PGPASSWORD" not in out and "DOCKER_HOST" not in out
    assert "pwd=/workspace" in out and "checked-out.txt" in out
    # Every capability dropped, no privilege escalation.
    assert "CapEff:\t0000000000000000" in out and "NoNewPrivs:\t1" in out
    assert removed(ctx.public_id)


def test_hostile_code_reaches_the_apps_database_server_and_nothing_else_of_norns(tmp_path, app, busybox_image, listener):
    probes = [
        ("host.docker.internal", 5433, "apps-db"),
        ("host.docker.internal", 5432, "norn-db"),
        ("host.docker.internal", 6379, "redis"),
        ("host.docker.internal", listener, "web"),
        ("127.0.0.1", 5432, "loopback-db"),
        ("127.0.0.1", 6379, "loopback-redis"),
    ]
    command = "; ".join(PROBE.format(host=h, port=p, label=label) for h, p, label in probes)
    ctx = make_ctx(tmp_path, app, busybox_image, migrate=command)
    migrate_step.run(ctx)
    out = ctx.text()
    assert "apps-db open" in out
    for label in ("norn-db", "redis", "web", "loopback-db", "loopback-redis"):
        assert f"{label} closed" in out, out


def test_hostile_code_cannot_read_norns_files_or_write_outside_its_tree(tmp_path, app, busybox_image, settings):
    snapshot = tmp_path / "snapshots" / "db.dump"
    snapshot.parent.mkdir()
    snapshot.write_text("secret rows\n")
    other = tmp_path / "work-of-another-deployment"
    other.mkdir()
    (other / "secret.txt").write_text("other app\n")
    escape = f"/tmp/norn-escape-{secrets.token_hex(4)}"
    command = (
        f"cat {snapshot} 2>&1; cat {other}/secret.txt 2>&1; cat /etc/shadow 2>&1 | head -1; "
        f"echo escaped > {escape}; echo mine > written-here"
    )
    ctx = make_ctx(tmp_path / "deployment", app, busybox_image, test=command)
    test_step.run(ctx)
    out = ctx.text()
    assert "secret rows" not in out and "other app" not in out
    assert not os.path.exists(escape)  # the container's own /tmp, gone with it
    assert (tmp_path / "deployment" / "src" / "written-here").read_text() == "mine\n"


def test_an_image_whose_user_is_not_root_can_write_in_its_tree(tmp_path, app, busybox_image):
    # Norn's own user owns the checkout; the image runs as another user with
    # no capabilities, so only the tree's "other" bits can let it write.
    context = tmp_path / "image"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_image}\nUSER 4321:4321\n")
    image = docker_build(context, f"norn-test-uid-{app}:1")
    ctx = make_ctx(tmp_path / "deployment", app, image, test="id -u; mkdir -p cache && echo built > cache/out")
    (tmp_path / "deployment" / "src" / "existing.txt").write_text("from git\n")
    (tmp_path / "deployment" / "src" / "existing.txt").chmod(0o644)
    test_step.run(ctx)
    assert "4321" in ctx.text()
    assert (tmp_path / "deployment" / "src" / "cache" / "out").read_text() == "built\n"


def test_what_a_test_container_wrote_is_removed_by_a_container_of_its_image(tmp_path, app, busybox_image):
    # Norn's own user cannot remove what another user wrote into a directory
    # only that user may enter; the cleanup step then asks a container of the
    # same image, running as the same user, to empty the tree.
    context = tmp_path / "image"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_image}\nUSER 4321:4321\n")
    image = docker_build(context, f"norn-test-uid-{app}:1")
    ctx = make_ctx(tmp_path / "deployment", app, image,
                   test="mkdir -p deep/inner .hidden && echo x > deep/inner/f && echo y > .hidden/g && chmod 700 deep .hidden")
    test_step.run(ctx)
    src = tmp_path / "deployment" / "src"
    assert {p.name for p in src.iterdir()} == {"deep", ".hidden"} and (src / "deep").stat().st_uid == 4321
    cleanup_step.remove_tree_in_container(ctx, src)
    assert list(src.iterdir()) == []


def test_failed_migration_keeps_its_restore_advice(tmp_path, app, busybox_image):
    ctx = make_ctx(tmp_path, app, busybox_image, migrate="echo broken; exit 3")
    with pytest.raises(StepFailed) as failed:
        migrate_step.run(ctx)
    message = str(failed.value)
    assert message.startswith("sh exited with status 3:\nbroken")
    assert "No snapshot was taken before this migration" in message
    assert removed(ctx.public_id)


def test_image_without_a_shell_is_a_clear_error(tmp_path, app):
    context = tmp_path / "noshell"
    context.mkdir()
    (context / "app.txt").write_text("no shell here\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY app.txt /app.txt\n")
    image = docker_build(context, f"norn-test-noshell-{app}:1")
    try:
        ctx = make_ctx(tmp_path, app, image, test="true", migrate="true")
        with pytest.raises(StepFailed, match="build.test is a shell command.*needs /bin/sh"):
            test_step.run(ctx)
        with pytest.raises(StepFailed, match="migrations.command is a shell command.*needs /bin/sh"):
            migrate_step.run(ctx)
    finally:
        docker(["rmi", "--force", image], check=False)


def test_timeout_kills_and_removes_the_container(tmp_path, app, busybox_image):
    ctx = make_ctx(tmp_path, app, busybox_image, test="echo started; sleep 300", timeout=3)
    started = time.monotonic()
    with pytest.raises(runner.TimedOut):
        test_step.run(ctx)
    assert time.monotonic() - started < 20
    assert "started" in ctx.text()
    assert removed(ctx.public_id)


def test_cancel_kills_and_removes_the_container(tmp_path, app, busybox_image):
    cancel = threading.Event()
    ctx = make_ctx(tmp_path, app, busybox_image, test="touch begun; sleep 300",
                   cancel_reason=lambda: "cancelled by test" if cancel.is_set() else None)
    errors = []

    def work():
        try:
            test_step.run(ctx)
        except Exception as exc:
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    deadline = time.monotonic() + 60
    while not (tmp_path / "src" / "begun").exists():
        assert time.monotonic() < deadline, "the test command never started"
        time.sleep(0.1)
    assert len(own_containers(ctx.public_id)) == 1
    cancel.set()
    worker.join(timeout=30)
    assert [type(e) for e in errors] == [runner.Cancelled]
    assert removed(ctx.public_id)


def test_apps_cannot_reach_each_others_containers(app, busybox_image):
    other = f"{app}-b"
    try:
        server = docker([
            "run", "--detach", "--label", f"norn.app={other}", "--network", containers.ensure_network(other),
            busybox_image, "sh", "-c", "httpd -f -p 8080 -h /tmp",
        ]).stdout.strip()
        ip = docker(["inspect", "--format",
                     "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", server]).stdout.strip()
        assert ip

        def probe(from_app):
            result = containers.run(
                lambda argv, timeout: runner.run(argv, env=runner.host_env(), timeout=timeout, capture=True),
                name=f"norn-{from_app}-probe-{secrets.token_hex(3)}", app_name=from_app, purpose="test",
                deployment=None, image=busybox_image, timeout=30, env={},
                command=["sh", "-c", PROBE.format(host=ip, port=8080, label="other-app")],
            )
            return result.text

        assert "other-app closed" in probe(app)
        # Control: on its own network the same server answers.
        assert "other-app open" in probe(other)
    finally:
        ids = docker(["ps", "--all", "--quiet", "--filter", f"label=norn.app={other}"]).stdout.split()
        if ids:
            docker(["rm", "--force", *ids], check=False)
        remove_app_network(other)


def test_ensure_network_is_idempotent_and_labelled(app):
    assert containers.ensure_network(app) == f"norn-{app}"
    assert containers.ensure_network(app) == f"norn-{app}"
    labels = docker(["network", "inspect", "--format", "{{json .Labels}}", f"norn-{app}"]).stdout
    assert f'"norn.app":"{app}"' in labels


@pytest.mark.django_db(transaction=True)
def test_recovery_removes_a_dead_workers_containers_but_not_the_app(make_app, app, busybox_image):
    make_app(app, f"app: {app}\nrole: worker\n")
    deployment = request_deployment(app)
    assert transitions.claim(deployment.pk, "elsewhere:4242:abcd")
    labels = ["--label", f"norn.app={app}", "--label", f"norn.deployment={deployment.public_id}"]
    oneoff = docker(["run", "--detach", *labels, "--label", "norn.purpose=test", busybox_image, "sleep", "300"]).stdout.strip()
    # The app's own container carries the deployment that started it, but no purpose.
    serving = docker(["run", "--detach", *labels, busybox_image, "sleep", "300"]).stdout.strip()
    deployment.refresh_from_db()

    assert recovery.fail(deployment)

    assert docker(["ps", "--all", "--quiet", "--filter", f"id={oneoff}"]).stdout.strip() == ""
    assert docker(["ps", "--quiet", "--filter", f"id={serving}"]).stdout.strip() != ""


def test_a_network_removed_behind_norns_back_is_created_again(tmp_path, app, busybox_image):
    containers.ensure_network(app)  # now known to this process
    docker(["network", "rm", f"norn-{app}"])  # as manage.py undeploy elsewhere would
    ctx = make_ctx(tmp_path, app, busybox_image, test="echo still runs")
    test_step.run(ctx)
    assert "still runs" in ctx.text()
    assert docker(["network", "inspect", f"norn-{app}"], check=False).returncode == 0


@pytest.fixture
def app_role(settings):
    """A login role of group norn_apps owning a database of its own on the apps'
    server, as the databases part of issue 9 creates per app: (database, password)."""
    import psycopg
    from psycopg import sql

    server = settings.NORN_APP_DATABASES
    name = f"ctr_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    admin = dict(host=server["HOST"], port=server["PORT"], user=server["USER"], password=server.get("PASSWORD"),
                 dbname="postgres", autocommit=True)
    with psycopg.connect(**admin) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE norn_apps").format(
            sql.Identifier(name), sql.Literal(password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(name)))
    yield name, password
    with psycopg.connect(**admin) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_migration_reaches_its_own_database_and_not_norns(tmp_path, app, app_role, monkeypatch):
    from deployments import appenv
    from tests.support.psql_image import ensure_psql_image

    database, password = app_role
    own = {"PGHOST": containers.HOST_ALIAS, "PGPORT": "5433", "PGUSER": database, "PGPASSWORD": password,
           "PGDATABASE": database}
    # What appenv.database_env hands an app once it has a role of its own.
    monkeypatch.setattr(appenv, "database_env", lambda spec, runtime="docker": own)
    command = (
        'psql -v ON_ERROR_STOP=1 -c "CREATE TABLE migrated (i int)" && echo own-db ok; '
        'psql -h host.docker.internal -p 5432 -U postgres -c "SELECT 1" postgres >/dev/null 2>&1 '
        '&& echo norn-db reached || echo norn-db refused; '
        'psql -h 127.0.0.1 -p 5432 -U postgres -c "SELECT 1" postgres >/dev/null 2>&1 '
        '&& echo loopback-db reached || echo loopback-db refused'
    )
    ctx = make_ctx(tmp_path, app, ensure_psql_image(), migrate=command)
    migrate_step.run(ctx)
    out = ctx.text()
    assert "own-db ok" in out and "norn-db refused" in out and "loopback-db refused" in out, out
    assert password not in out  # neither in the echoed command nor anywhere in the output
