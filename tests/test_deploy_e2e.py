"""End to end: `manage.py deploy` against a real qcluster worker, real git,
Docker, PostgreSQL and registry; the CLI's output and exit codes; parallelism
and FIFO; and no secret anywhere after a deploy."""

import json
import os
import socket
import stat
import subprocess
import sys
import urllib.request

import pytest
from django.db import connection
from django_q.models import Schedule

from deployments import appdb
from deployments.models import CronJob, Deployment
from deployments.runtimes import docker as docker_runtime
from tests.support.cluster import REPO_ROOT, Cluster, wait_for
from tests.support.git_servers import GitHttpServer, make_repo

pytestmark = pytest.mark.django_db(transaction=True)

SERVE = 'CMD trap "exit 0" TERM; mkdir -p /tmp/www && cp -r /www/. /tmp/www/ && echo ok > /tmp/www/healthz && httpd -f -p "$PORT" -h /tmp/www & wait\n'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def web_files(page):
    return {
        "Dockerfile": "FROM norn-psql:1\nCOPY www/ /www/\nCOPY migrations/ /migrations/\n" + SERVE,
        "www/index.html": page,
        "migrations/001.sql": "CREATE TABLE IF NOT EXISTS visits (id serial primary key);\n",
    }


def web_spec(name, repo_url, port, database, migrate="psql -v ON_ERROR_STOP=1 -f migrations/001.sql", extra=""):
    return (
        f"app: {name}\nrole: webserver\nrepo:\n  url: {repo_url}\n"
        f"build:\n  test: test -f www/index.html\n"
        f"services:\n  postgres:\n    database: {database}\n"
        f"migrations:\n  command: {migrate!r}\n"
        f"port: {port}\nhealthcheck: /healthz\n{extra}"
    )


@pytest.fixture
def cluster(tmp_path, norn_dirs, apps_dir, busybox_image):
    with Cluster(tmp_path / "qcluster.log") as running:
        yield running


@pytest.fixture
def containers():
    """Names of apps whose containers must be removed after the test."""
    names = []
    yield names
    for name in names:
        docker_runtime.remove(name)


def manage(cluster, *args, timeout=180, env=None):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT, env={**cluster.env, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )


def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def test_cli_deploys_through_a_worker_and_streams_every_step(cluster, make_app, app_database, tmp_path, containers):
    repo = make_repo(tmp_path / "repos", "web", web_files("version one\n"))
    first = repo.head()
    second = repo.commit({"www/index.html": "version two\n"}, "v2")
    port = free_port()
    make_app("web", web_spec("web", repo.file_url, port, app_database("web")))
    containers.append("web")

    result = manage(cluster, "deploy", "web")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for step in ("clone", "build", "test", "snapshot", "migrate", "deploy", "cleanup"):
        assert f"  {step:<9} … running" in out
        assert f"  {step:<9} ✓ succeeded in " in out
    assert f"Deployed web {second[:12]} as web:{second}" in out
    assert get(f"http://127.0.0.1:{port}/") == "version two\n"

    # The requested commit is what gets deployed, not the branch tip.
    result = manage(cluster, "deploy", "web", first[:10])
    assert result.returncode == 0, result.stdout + result.stderr
    assert get(f"http://127.0.0.1:{port}/") == "version one\n"
    deployment = Deployment.objects.latest("pk")
    assert (deployment.commit_sha, deployment.image) == (first, f"web:{first}")
    assert deployment.requested_by_label.endswith("via cli")
    # The worker retires the previous container once the deployment ended.
    deploy_step = deployment.steps.get(name="deploy")
    wait_for(lambda: "Stopped and removed the previous container norn-web.retiring"
             in type(deploy_step).objects.get(pk=deploy_step.pk).output, message="the old container's retirement")
    assert docker_runtime.status("web")["deployment"] == str(deployment.public_id)
    assert subprocess.run(["docker", "inspect", "norn-web.retiring"], capture_output=True).returncode != 0

    listing = manage(cluster, "deployments", "--app", "web")
    assert listing.returncode == 0
    assert listing.stdout.count("deployed") == 2 and first[:12] in listing.stdout


def test_failed_migration_exits_nonzero_and_prints_the_restore_command(cluster, make_app, app_database, tmp_path):
    repo = make_repo(tmp_path / "repos", "mig", web_files("x\n"))
    db = app_database("mig")
    make_app("mig", web_spec("mig", repo.file_url, free_port(), db, migrate="psql -v ON_ERROR_STOP=1 -c 'SELECT broken('"))
    result = manage(cluster, "deploy", "mig")
    assert result.returncode == 1
    assert "  migrate   ✗ failed" in result.stdout
    assert "syntax error" in result.stdout  # the tail of the failing output
    assert appdb.restore_command(db, "", app="mig") in result.stdout
    assert "  deploy    – skipped: migrate failed" in result.stdout
    assert "  cleanup   ✓ succeeded" in result.stdout


def test_no_wait_and_json(cluster, make_app):
    make_app("quick", "app: quick\nrole: worker\nbuild:\n  test: exit 4\n", {"Dockerfile": "FROM norn-busybox:1\n"})
    queued = manage(cluster, "deploy", "quick", "--no-wait")
    assert queued.returncode == 0
    public_id = queued.stdout.strip()
    deployment = Deployment.objects.get(public_id=public_id)
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).is_terminal, message="deployment to end")

    result = manage(cluster, "deploy", "quick", "--json")
    assert result.returncode == 1
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["event"] == "deploy.queued"
    assert events[-1]["event"] == "deploy.failed"
    assert "test failed: sh exited with status 4" in events[-1]["payload"]["error"]
    assert {"step": "test", "status": "failed"}.items() <= next(
        e["payload"] for e in events if e["event"] == "deploy.step" and e["payload"]["status"] == "failed"
    ).items()


@pytest.mark.parametrize(
    "args, message",
    [
        (["ghost"], "unknown app 'ghost'"),
        (["good", "-x"], "unrecognized arguments: -x"),
        (["good", "--", "-x"], "'-x' is not a valid git ref: it starts with '-'"),
        (["good", "--", "--upload-pack=touch /tmp/x"], "is not a valid git ref: it starts with '-'"),
        (["bad"], "app 'bad' has an invalid infraspec.yaml"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(cluster, make_app, args, message):
    make_app("good", "app: good\nrole: worker\n")
    make_app("bad", "app: bad\nrole: worker\nrepo:\n  url: ext::sh -c id\n")
    result = manage(cluster, "deploy", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert Deployment.objects.count() == 0


def test_cancel_command_stops_a_running_deploy(cluster, make_app):
    make_app("slow", "app: slow\nrole: worker\nbuild:\n  test: sleep 300\n", {"Dockerfile": "FROM norn-busybox:1\n"})
    queued = manage(cluster, "deploy", "slow", "--no-wait")
    deployment = Deployment.objects.get(public_id=queued.stdout.strip())
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).status == "testing", timeout=60, message="test step")
    result = manage(cluster, "cancel", str(deployment.public_id)[:8])
    assert result.returncode == 0, result.stderr
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).is_terminal, timeout=20, message="cancel")
    deployment.refresh_from_db()
    assert (deployment.status, deployment.failed_step) == ("cancelled", "test")
    assert deployment.error.startswith("cancelled by ") and deployment.error.endswith(" (cli)")
    assert deployment.steps.get(name="cleanup").status == "succeeded"
    again = manage(cluster, "cancel", str(deployment.public_id))
    assert again.returncode == 1 and "already ended: cancelled" in again.stderr


def test_different_apps_in_parallel_same_app_in_fifo_order(tmp_path, norn_dirs, apps_dir, busybox_image, make_app):
    for name in ("alpha", "beta"):
        make_app(name, f"app: {name}\nrole: worker\nbuild:\n  test: sleep 6; exit 1\n", {"Dockerfile": "FROM norn-busybox:1\n"})
    with Cluster(tmp_path / "qcluster.log", workers=2) as cluster:
        ids = [manage(cluster, "deploy", name, "--no-wait").stdout.strip() for name in ("alpha", "beta", "alpha")]
        a1, b1, a2 = (Deployment.objects.get(public_id=i) for i in ids)
        wait_for(lambda: Deployment.objects.get(pk=a1.pk).status not in ("queued", "cloning", "building"),
                 timeout=60, message=f"alpha to reach its test step:\n{cluster.output()[-2000:]}")
        first = Deployment.objects.get(pk=a1.pk)
        assert first.status == "testing", first.error
        # The second alpha waits, queued, while the first is in flight.
        assert Deployment.objects.get(pk=a2.pk).status == "queued"
        wait_for(lambda: all(Deployment.objects.get(pk=d.pk).is_terminal for d in (a1, b1, a2)), timeout=120, message="all")
    a1, b1, a2 = (Deployment.objects.get(pk=d.pk) for d in (a1, b1, a2))
    # Different apps overlapped; the same app's ran one after the other.
    assert b1.started_at < a1.finished_at and a1.started_at < b1.finished_at
    assert a2.started_at >= a1.finished_at


def test_cron_app_is_registered_with_the_scheduler(cluster, make_app):
    make_app(
        "nightly",
        "app: nightly\nrole: cron\nbuild: {}\nschedule: '0 3 * * *'\ncommand: ['sh', '-c', 'echo ran in $NORN_APP']\n",
        {"Dockerfile": "FROM norn-busybox:1\nENV NORN_APP=nightly\n"},
    )
    result = manage(cluster, "deploy", "nightly")
    assert result.returncode == 0, result.stdout + result.stderr
    deployment = Deployment.objects.get()
    job = CronJob.objects.get(app__name="nightly")
    assert job.image == deployment.image == f"nightly:{deployment.commit_sha}"
    schedule = Schedule.objects.get(name="norn-cron:nightly")
    assert (schedule.cron, schedule.func) == ("0 3 * * *", "deployments.tasks.run_cron_job")
    from deployments import scheduler

    run = scheduler.run_job(job.pk)
    assert run.exit_code == 0 and "ran in nightly" in run.output


def test_registry_push(tmp_path, norn_dirs, apps_dir, busybox_image, make_app):
    make_app("pushed", "app: pushed\nrole: worker\nbuild:\n  test: exit 1\n", {"Dockerfile": "FROM norn-busybox:1\nRUN echo pushed > /pushed\n"})
    env = {"NORN_REGISTRY_URL": "127.0.0.1:5000/norn-e2e"}
    with Cluster(tmp_path / "qcluster.log", extra_env=env) as cluster:
        result = manage(cluster, "deploy", "pushed", env=env)
    deployment = Deployment.objects.get()
    assert deployment.image == f"127.0.0.1:5000/norn-e2e/pushed:{deployment.commit_sha}", result.stdout
    tags = json.loads(get("http://127.0.0.1:5000/v2/norn-e2e/pushed/tags/list"))["tags"]
    assert deployment.commit_sha in tags
    assert "$ docker push 127.0.0.1:5000/norn-e2e/pushed:" in deployment.steps.get(name="build").output


def test_no_secret_anywhere_after_a_deploy(cluster, make_app, tmp_path, containers):
    token = "tok_" + "Zq8" * 12
    make_repo(tmp_path / "repos", "secret", web_files("secret app\n"))
    shims = tmp_path / "shims"
    shims.mkdir()
    argv_log = tmp_path / "argv.log"
    for tool in ("git", "docker", "pg_dump", "psql", "sh"):
        real = subprocess.run(["which", tool], capture_output=True, text=True, env={"PATH": "/usr/local/bin:/usr/bin:/bin"}).stdout.strip()
        (shims / tool).write_text(f'#!/bin/sh\nprintf "%s\\n" "{tool} $*" >> {argv_log}\nexec {real} "$@"\n')
        (shims / tool).chmod(stat.S_IRWXU)
    port = free_port()
    containers.append("secret")
    with GitHttpServer(tmp_path / "repos", token=token, tls=True) as server:
        make_app("secret", f"app: secret\nrole: webserver\nrepo:\n  url: {server.url_for('secret')}\nbuild:\n  test: env; echo $NORN_GIT_PASSWORD\nport: {port}\nhealthcheck: /healthz\n")
        env = {"NORN_GIT_CREDENTIALS": f"{server.host_port}={token}", "NORN_GIT_CA_FILE": str(server.ca_file), "PATH": f"{shims}:{os.environ['PATH']}"}
        # The worker needs the token too: restart it with the same environment.
        cluster.stop()
        with Cluster(tmp_path / "qcluster2.log", extra_env=env) as worker:
            result = manage(worker, "deploy", "secret", env=env)
            assert result.returncode == 0, result.stdout + result.stderr
            worker_log = worker.output()
    assert get(f"http://127.0.0.1:{port}/") == "secret app\n"
    assert token not in result.stdout + result.stderr
    assert token not in worker_log
    assert token not in argv_log.read_text()
    assert argv_log.read_text().count("git clone") == 1
    # Nothing in any table: dump the whole test database and search it.
    db = connection.settings_dict
    dump = subprocess.run(
        ["pg_dump", "--data-only", "-h", db["HOST"], "-U", db["USER"], db["NAME"]],
        capture_output=True, text=True, check=True,
    ).stdout
    assert token not in dump
    assert "Zq8Zq8" not in dump


def test_rollback_and_restore_snapshot_commands(cluster, make_app, app_database, tmp_path):
    db = app_database("cli")
    repo = make_repo(tmp_path / "repos", "clijob", {"Dockerfile": "FROM norn-psql:1\n"})
    make_app("clijob", (
        f"app: clijob\nrole: cron\nrepo:\n  url: {repo.file_url}\nbuild: {{}}\nschedule: '0 1 * * *'\ncommand: echo hi\n"
        f"services:\n  postgres:\n    database: {db}\nmigrations:\n  command: psql -c 'CREATE TABLE IF NOT EXISTS t (i int)'\n"
    ))
    assert manage(cluster, "deploy", "clijob").returncode == 0
    nothing = manage(cluster, "rollback", "clijob")
    assert nothing.returncode == 2 and "no earlier successful deployment" in nothing.stderr
    first = Deployment.objects.get()
    repo.commit({"Dockerfile": "FROM norn-psql:1\nENV V=2\n"}, "v2")
    assert manage(cluster, "deploy", "clijob").returncode == 0

    result = manage(cluster, "rollback", "clijob")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Rolling clijob back to {first.image}" in result.stdout
    assert "  deploy    ✓ succeeded" in result.stdout
    assert f"Rolled back clijob to {first.image}" in result.stdout

    from deployments.models import Snapshot

    snapshot = Snapshot.objects.filter(deployment=first).get()
    declined = subprocess.run(
        [sys.executable, "manage.py", "restore_snapshot", str(snapshot.pk)],
        cwd=REPO_ROOT, env=cluster.env, input="n\n", capture_output=True, text=True, timeout=60,
    )
    assert declined.returncode == 1 and f"Restore database {db} of clijob to snapshot {snapshot.pk}, taken" in declined.stdout
    restored = manage(cluster, "restore_snapshot", str(snapshot.pk), "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    for step in ("verify", "snapshot", "restore"):
        assert f"  {step:<9} ✓ succeeded" in restored.stdout
    assert f"Restored clijob's database from snapshot {snapshot.pk}" in restored.stdout
    missing = manage(cluster, "restore_snapshot", "999999", "--yes")
    assert missing.returncode == 2 and "no snapshot 999999" in missing.stderr
