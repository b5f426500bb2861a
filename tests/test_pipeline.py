"""The pipeline end to end on this worker: steps, their rows and events, the
seed's "on failure" column, timeouts, cancel, and secrets kept out."""

import os
import shlex
import subprocess
import time

import psycopg
import pytest

from deployments import appdb, pipeline, states, transitions
from deployments.models import Deployment, Event, Snapshot
from deployments.requests import DeployRequestError, request_deployment
from tests.support.cluster import execute_in_thread
from tests.support.docker_images import docker
from tests.support.networks import remove_networks_of_apps_dir
from tests.support.psql_image import ensure_psql_image

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def remove_networks(apps_dir):
    # Test and migrate containers join their app's network, created on demand.
    yield
    remove_networks_of_apps_dir(apps_dir)

DOCKERFILE = "FROM norn-busybox:1\nCOPY . /app\nCMD [\"sh\", \"-c\", \"sleep 3600\"]\n"


def spec(name, test=None, migrations=None, database=None, extra=""):
    text = f"app: {name}\nrole: worker\nbuild:\n  dockerfile: Dockerfile\n"
    if test:
        text += f"  test: {test!r}\n"
    if database:
        text += f"services:\n  postgres:\n    database: {database}\n"
    if migrations:
        text += f"migrations:\n  command: {migrations!r}\n"
    return text + extra


def step_table(deployment):
    return {s.name: (s.status, s.skip_reason) for s in deployment.steps.all()}


def event_kinds(deployment):
    return [
        (e.kind, e.payload.get("step"), e.payload.get("status") if e.kind == "deploy.step" else None)
        for e in deployment.events.exclude(kind="deploy.log")
    ]


def test_failing_test_stops_the_pipeline_and_cleanup_still_runs(make_app, deploy_now, busybox_image):
    make_app("tfail", spec("tfail", test="echo testing; exit 3"), {"Dockerfile": DOCKERFILE})
    deployment = deploy_now("tfail")
    assert deployment.status == "failed"
    assert deployment.error.startswith("test failed: sh exited with status 3")
    assert "testing" in deployment.error  # the tail of the failing output
    # The history's "Why": the step and the first line of its error.
    assert deployment.failed_step == "test"
    assert deployment.failure_reason == "test: " + deployment.error.splitlines()[0].removeprefix("test failed: ")
    assert deployment.failure_reason.startswith("test: sh exited with status 3")
    assert step_table(deployment) == {
        "clone": ("succeeded", ""),
        "build": ("succeeded", ""),
        "test": ("failed", ""),
        "snapshot": ("skipped", "test failed"),
        "migrate": ("skipped", "test failed"),
        "deploy": ("skipped", "test failed"),
        "cleanup": ("succeeded", ""),
    }
    assert not (pipeline.Path(deployment.workdir)).exists()
    assert len(deployment.commit_sha) == 40
    assert deployment.image == f"tfail:{deployment.commit_sha}"
    assert deployment.started_at and deployment.finished_at


def test_every_transition_has_an_event_in_order(make_app, deploy_now, busybox_image):
    make_app("evts", spec("evts", test="exit 1"), {"Dockerfile": DOCKERFILE})
    deployment = deploy_now("evts")
    seqs = list(deployment.events.values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    assert deployment.last_event_seq == seqs[-1]
    assert event_kinds(deployment) == [
        ("deploy.queued", None, None),
        ("deploy.step", "clone", "running"),
        ("deploy.step", "clone", "succeeded"),
        ("deploy.step", "build", "running"),
        ("deploy.step", "build", "succeeded"),
        ("deploy.step", "test", "running"),
        ("deploy.step", "test", "failed"),
        ("deploy.step", "snapshot", "skipped"),
        ("deploy.step", "migrate", "skipped"),
        ("deploy.step", "deploy", "skipped"),
        ("deploy.step", "cleanup", "running"),
        ("deploy.step", "cleanup", "succeeded"),
        ("deploy.failed", None, None),
    ]
    failed = deployment.events.get(kind="deploy.failed").payload
    assert failed["status"] == "failed" and failed["error"] == deployment.error
    ended = deployment.events.get(kind="deploy.step", payload__step="test", payload__status="failed").payload
    assert ended["duration"] >= 0
    # Output was captured as it was produced, as log events too.
    assert deployment.events.filter(kind="deploy.log", payload__step="build").exists()


def test_build_failure_stops_the_pipeline(make_app, deploy_now, busybox_image):
    make_app("bfail", spec("bfail"), {"Dockerfile": "FROM norn-busybox:1\nRUN exit 7\n"})
    deployment = deploy_now("bfail")
    assert deployment.status == "failed"
    assert deployment.error.startswith("build failed: docker exited with status 7")
    assert "returned a non-zero code: 7" in deployment.error
    assert step_table(deployment)["test"] == ("skipped", "build failed")


def test_missing_dockerfile_is_a_clear_build_error(make_app, deploy_now):
    make_app("nodf", spec("nodf"))
    deployment = deploy_now("nodf")
    assert "Dockerfile (build.dockerfile) does not exist in the repository" in deployment.error


def test_snapshot_then_failed_migration_names_the_restore(make_app, deploy_now, busybox_image, app_database):
    db = app_database("mig")
    with psycopg.connect(appdb.database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    with psycopg.connect(appdb.database_url(db), autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int primary key, name text)")
        conn.execute("INSERT INTO items VALUES (1, 'kept'), (2, 'also kept')")
    migrate = 'psql -v ON_ERROR_STOP=1 -c "DELETE FROM items WHERE id = 2" -c "SELECT no_such_function()"'
    # The migration runs in the app's image, so the image brings its psql.
    dockerfile = DOCKERFILE.replace(busybox_image, ensure_psql_image())
    make_app("migfail", spec("migfail", migrations=migrate, database=db), {"Dockerfile": dockerfile})
    deployment = deploy_now("migfail")
    assert deployment.status == "failed"
    snapshot = Snapshot.objects.get(deployment=deployment)
    assert snapshot.database == db and snapshot.size > 0 and len(snapshot.sha256) == 64
    assert pipeline.Path(snapshot.path).name.startswith(f"{db}_{deployment.commit_sha[:12]}_")
    assert f"Restore snapshot {snapshot.pk} ({snapshot.path}" in deployment.error
    assert appdb.restore_command(db, snapshot.path, app="migfail") in deployment.error
    assert step_table(deployment)["deploy"] == ("skipped", "migrate failed")
    # The snapshot really restores the pre-migration state.
    def count():
        with psycopg.connect(appdb.database_url(db), autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM items").fetchone()[0]

    assert count() == 1  # the migration's first statement ran before it failed
    # The command a user is shown, as they would run it (the admin's password
    # from their environment, never the command line).
    subprocess.run(
        shlex.split(appdb.restore_command(db, snapshot.path, app="migfail")),
        check=True, capture_output=True, env={**os.environ, **appdb.pg_env(db)},
    )
    assert count() == 2
    with psycopg.connect(appdb.database_url(db), autocommit=True) as conn:
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'items'").fetchone()[0]
    assert owner == appdb.role_name("migfail")


def test_snapshot_creates_a_missing_database(make_app, deploy_now, busybox_image, app_database):
    db = app_database("new")
    make_app("newdb", spec("newdb", test="exit 0", migrations="exit 1", database=db), {"Dockerfile": DOCKERFILE})
    deployment = deploy_now("newdb")
    snapshot_step = deployment.steps.get(name="snapshot")
    assert snapshot_step.status == "succeeded"
    assert f"Database {db} did not exist; created it empty" in snapshot_step.output


# With a test step, the snapshot's database check starts as the tests do
# (snapshot.prepare_ahead) and its failure is the snapshot's all the same.
@pytest.mark.parametrize("test", [None, "exit 0"], ids=["checked-in-the-step", "checked-ahead"])
def test_unreachable_app_database_fails_the_snapshot(make_app, deploy_now, busybox_image, settings, test):
    settings.NORN_APP_DATABASES = {**settings.NORN_APP_DATABASES, "PORT": 1, "PASSWORD": "db-secret-pw"}
    make_app("nodb", spec("nodb", test=test, database="whatever"), {"Dockerfile": DOCKERFILE})
    deployment = deploy_now("nodb")
    assert deployment.error.startswith("snapshot failed: cannot reach the app database whatever")
    assert step_table(deployment)["migrate"] == ("skipped", "snapshot failed")
    assert "db-secret-pw" not in deployment.error


def test_step_timeout_kills_the_command(make_app, deploy_now, busybox_image, settings):
    settings.NORN_STEP_TIMEOUTS = {**settings.NORN_STEP_TIMEOUTS, "test": 1}
    make_app("slow", spec("slow", test="sleep 30"), {"Dockerfile": DOCKERFILE})
    started = time.monotonic()
    deployment = deploy_now("slow")
    assert time.monotonic() - started < 25
    assert deployment.error == "test failed: timed out after 1 s"
    assert step_table(deployment)["cleanup"] == ("succeeded", "")


def test_cancel_a_running_deployment(make_app, norn_dirs, busybox_image, tmp_path):
    # The test command runs in a container with the checked-out tree as its
    # working directory: the marker appears there, in the work directory.
    make_app("cancelme", spec("cancelme", test="sleep 300 & echo $! > child.pid; wait"), {"Dockerfile": DOCKERFILE})
    deployment = request_deployment("cancelme")
    marker = pipeline.Path(norn_dirs.NORN_WORK_DIR) / str(deployment.public_id) / "src" / "child.pid"
    worker = execute_in_thread(deployment.pk)
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text().strip():
        assert time.monotonic() < deadline, "test step never started"
        time.sleep(0.1)
    running = docker(["ps", "--quiet", "--filter", f"label=norn.deployment={deployment.public_id}"]).stdout.split()
    assert len(running) == 1
    cancelled_at = time.monotonic()
    transitions.request_cancel(deployment, "alice (cli)")
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert time.monotonic() - cancelled_at < 10
    deployment.refresh_from_db()
    # Cancelled, not failed: the step it stopped and why, from its own columns.
    assert (deployment.status, deployment.failed_step) == ("cancelled", "test")
    assert deployment.error == "cancelled by alice (cli)"
    assert deployment.failure_reason == "test: cancelled by alice (cli)"
    assert step_table(deployment)["cleanup"] == ("succeeded", "")
    assert deployment.events.order_by("-seq").first().payload["status"] == "cancelled"
    # The container is gone, not just the docker client that ran it.
    assert docker(["ps", "--all", "--quiet", "--filter", f"id={running[0]}"]).stdout.strip() == ""
    assert deployment.events.filter(kind="deploy.cancelled", payload__by="alice (cli)").exists()


def test_cancel_a_queued_deployment(make_app):
    make_app("queued", "app: queued\nrole: worker\n")
    deployment = request_deployment("queued")
    assert transitions.request_cancel(deployment, "bob (admin)") == "cancelled"
    deployment.refresh_from_db()
    assert (deployment.status, deployment.error, deployment.failed_step) == ("cancelled", "cancelled by bob (admin)", "")
    assert deployment.failure_reason == "cancelled by bob (admin)" and deployment.finished_at is not None
    assert set(deployment.steps.values_list("status", flat=True)) == {"skipped"}
    # Its task, delivered later, finds nothing to do.
    assert pipeline.execute(deployment.pk) is False


def test_second_delivery_is_harmless(make_app, deploy_now, busybox_image):
    make_app("twice", spec("twice", test="exit 1"), {"Dockerfile": DOCKERFILE})
    deployment = deploy_now("twice")
    events_before = deployment.events.count()
    assert pipeline.execute(deployment.pk) is False
    assert deployment.events.count() == events_before


def test_one_deployment_in_flight_per_app_fifo(make_app):
    make_app("busy", "app: busy\nrole: worker\n")
    make_app("other", "app: other\nrole: worker\n")
    first, second, third = (request_deployment("busy") for _ in range(3))
    # FIFO: the third cannot jump the second.
    assert transitions.claim(third.pk, "host:1:a") is False
    assert transitions.claim(first.pk, "host:1:a") is True
    # The database refuses a second in-flight deployment of the same app...
    assert transitions.claim(second.pk, "host:2:b") is False
    # ...but another app deploys in parallel.
    assert transitions.claim(request_deployment("other").pk, "host:2:b") is True
    assert Deployment.objects.get(pk=second.pk).status == "queued"
    transitions.finish(first.pk, "failed", "test")
    assert transitions.claim(second.pk, "host:2:b") is True
    assert transitions.next_queued(first.app_id) == third.pk


@pytest.mark.parametrize(
    "app, ref, message",
    [
        ("ghost", "HEAD", "unknown app 'ghost'; known apps: bad, good"),
        ("bad", "HEAD", "app 'bad' has an invalid infraspec.yaml; fix it first"),
        ("good", "-x", "'-x' is not a valid git ref: it starts with '-'"),
        ("good", "a..b", "'a..b' is not a valid git ref"),
        ("good", "ext::sh -c id", "'ext::sh -c id' is not a valid git ref"),
        ("good", "main", "app 'good' has no repo in infraspec.yaml, so there is no branch 'main'"),
    ],
)
def test_bad_requests_are_refused_before_anything_runs(make_app, app, ref, message):
    make_app("good", "app: good\nrole: worker\n")
    make_app("bad", "app: bad\nrole: nope\n")
    with pytest.raises(DeployRequestError) as excinfo:
        request_deployment(app, ref)
    assert message in str(excinfo.value)
    assert Deployment.objects.count() == 0
    assert Event.objects.count() == 0


def test_deferred_work_runs_once_the_deployment_ended_and_logs_to_its_step(make_app, deploy_now, busybox_image,
                                                                          monkeypatch):
    from deployments.outcomes import StepFailed
    from deployments.steps import test as test_step

    seen = {}

    def work(log):
        deployment = Deployment.objects.get(app__name="later")
        seen["status"] = deployment.status
        seen["events"] = deployment.last_event_seq
        log("retired the old one")

    def broken(log):
        raise RuntimeError("docker went away")

    def run(ctx):
        ctx.defer(work)
        ctx.defer(broken)  # logged; changes nothing
        raise StepFailed("tests failed")

    monkeypatch.setattr(test_step, "run", run)
    make_app("later", spec("later", test="exit 0"), {"Dockerfile": DOCKERFILE})
    deployment = deploy_now("later")
    # The end was recorded (and its event written) before the work began.
    assert seen["status"] == "failed"
    ended = deployment.events.get(kind="deploy.failed")
    assert ended.seq <= seen["events"]
    assert deployment.status == "failed" and deployment.error == "test failed: tests failed"
    output = deployment.steps.get(name="test").output
    assert output.endswith("retired the old one\nRuntimeError: docker went away\n")
    late = [e.payload["text"] for e in deployment.events.filter(kind="deploy.log", seq__gt=ended.seq)]
    assert late == ["retired the old one\n", "RuntimeError: docker went away\n"]


def test_a_boundary_is_written_only_by_the_owner_that_holds_the_deployment(make_app, monkeypatch):
    from deployments import events
    from deployments.outcomes import Outcome

    published = []
    monkeypatch.setattr(events.publisher, "send", lambda groups, body: published.append(body))
    make_app("held", spec("held"))
    deployment = request_deployment("held")
    assert transitions.claim(deployment.pk, "host:1:a")
    assert transitions.start_step(deployment.pk, "host:1:a", "clone")
    # Another owner (recovery took it and a worker restarted it, say) writes nothing.
    assert not transitions.advance(deployment.pk, "host:2:b", "clone", Outcome.succeeded(), cut=[], then="build",
                                   commit_sha="a" * 40)
    deployment.refresh_from_db()
    assert (deployment.commit_sha, step_table(deployment)["clone"]) == ("", ("running", ""))
    # The owner's boundary: the end, what it cut short, and the next start, in that order.
    assert transitions.advance(deployment.pk, "host:1:a", "clone", Outcome.failed("no such ref"),
                               cut=["build", "test", "snapshot", "migrate", "deploy"], then="cleanup",
                               commit_sha="a" * 40)
    deployment.refresh_from_db()
    assert deployment.commit_sha == "a" * 40 and deployment.status == "cleaning_up"
    assert event_kinds(deployment)[-7:] == [
        ("deploy.step", "clone", "failed"),
        *[("deploy.step", name, "skipped") for name in ("build", "test", "snapshot", "migrate", "deploy")],
        ("deploy.step", "cleanup", "running"),
    ]
    # Numbered without a gap, each payload what the step's row says (the
    # duration to the millisecond; a step that never ran has none).
    stored = list(deployment.events.order_by("seq").values_list("seq", "payload"))
    assert [seq for seq, _ in stored] == list(range(1, deployment.last_event_seq + 1))
    clone = deployment.steps.get(name="clone")
    assert stored[-7][1] == {"step": "clone", "status": "failed", "error": "no such ref",
                             "duration": round(clone.duration.total_seconds(), 3)}
    assert stored[-6][1] == {"step": "build", "status": "skipped", "reason": "clone failed"}
    assert stored[-1][1] == {"step": "cleanup", "status": "running"}
    # What viewers were told is what was stored.
    assert [(body["seq"], body["payload"]) for body in published[-7:]] == stored[-7:]
    assert step_table(deployment)["cleanup"] == ("running", "")
    assert transitions.advance(deployment.pk, "host:1:a", "cleanup", Outcome.succeeded(), cut=[], then=None,
                               final="failed", error="clone failed: no such ref")
    deployment.refresh_from_db()
    assert (deployment.status, deployment.error, deployment.step_pgid) == ("failed", "clone failed: no such ref", None)
    assert event_kinds(deployment)[-2:] == [("deploy.step", "cleanup", "succeeded"), ("deploy.failed", None, None)]


def test_a_boundary_over_a_missing_step_row_says_so_and_leaves_no_gap(make_app):
    from deployments.models import Step
    from deployments.outcomes import Outcome

    make_app("gapless", spec("gapless"))
    deployment = request_deployment("gapless")
    assert transitions.claim(deployment.pk, "host:1:a")
    assert transitions.start_step(deployment.pk, "host:1:a", "clone")
    deployment.steps.filter(name="test").delete()  # by hand, behind Norn's back
    with pytest.raises(Step.DoesNotExist, match=f"deployment {deployment.pk} has no step test"):
        transitions.advance(deployment.pk, "host:1:a", "clone", Outcome.failed("no such ref"),
                            cut=["build", "test", "snapshot", "migrate", "deploy"], then="cleanup")
    deployment.refresh_from_db()
    seqs = list(deployment.events.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, deployment.last_event_seq + 1))
    assert event_kinds(deployment)[-6:] == [
        ("deploy.step", "clone", "failed"),
        *[("deploy.step", name, "skipped") for name in ("build", "snapshot", "migrate", "deploy")],
        ("deploy.step", "cleanup", "running"),
    ]


def test_transition_rules():
    steps = states.initial()
    assert states.next_step(steps) == "clone"
    for name in ("clone", "build", "test", "snapshot"):
        steps[name] = "succeeded"
    steps["migrate"] = "failed"
    assert states.steps_cut_short(steps) == ["deploy"]
    assert states.next_step(steps) == "cleanup"
    assert states.recovery_options(steps, has_snapshot=True) == {"restore_snapshot": True, "rollback": False, "retry": True}
    steps["deploy"] = "skipped"
    steps["cleanup"] = "failed"  # best-effort: does not change the outcome
    assert states.final_status(steps) == "failed"
    # A step stopped by a cancel ends the deployment cancelled, not failed.
    assert states.final_status(steps, cancelled=True) == "cancelled"
    ok = {name: "succeeded" for name in states.STEPS}
    ok["cleanup"] = "failed"
    assert states.final_status(ok) == "deployed"
    assert states.final_status(ok, cancelled=True) == "deployed"  # a cancel that came too late changes nothing
    assert states.recovery_options({**ok, "deploy": "failed"}, False)["rollback"] is True


CRON_APP = "app: {name}\nrole: cron\nrepo:\n  url: {url}\n{build}schedule: '0 4 * * *'\ncommand: echo hi\n"


def test_steps_without_their_spec_are_skipped_with_the_reason(make_app, deploy_now, busybox_image, tmp_path):
    from tests.support.git_servers import make_repo

    repo = make_repo(tmp_path / "repos", "nobuild", {"README": "no Dockerfile needed\n"})
    sha = repo.head()
    # Without a build section the image must exist already: tag one.
    subprocess.run(["docker", "tag", busybox_image, f"nobuild:{sha}"], check=True)
    try:
        make_app("nobuild", CRON_APP.format(name="nobuild", url=repo.file_url, build=""))
        deployment = deploy_now("nobuild")
    finally:
        subprocess.run(["docker", "rmi", f"nobuild:{sha}"], capture_output=True)
    assert deployment.status == "deployed", deployment.error
    assert step_table(deployment) == {
        "clone": ("succeeded", ""),
        "build": ("skipped", "no build section in infraspec.yaml"),
        "test": ("skipped", "no build.test in infraspec.yaml"),
        "snapshot": ("skipped", "no services.postgres in infraspec.yaml"),
        "migrate": ("skipped", "no migrations.command in infraspec.yaml"),
        "deploy": ("succeeded", ""),
        "cleanup": ("succeeded", ""),
    }
    assert deployment.image == f"nobuild:{sha}"


def test_cleanup_failure_is_recorded_but_never_fails_the_deployment(make_app, norn_dirs, busybox_image, tmp_path):
    from tests.support.git_servers import make_repo

    repo = make_repo(tmp_path / "repos", "pinned", {"Dockerfile": DOCKERFILE})
    # The test container has no capabilities, so it cannot make a file
    # immutable itself: it waits while this test does, on the host.
    build = "build:\n  test: touch pinned; while [ ! -e go ]; do sleep 0.1; done\n"
    make_app("pinned", CRON_APP.format(name="pinned", url=repo.file_url, build=build))
    deployment = request_deployment("pinned")
    workdir = pipeline.Path(norn_dirs.NORN_WORK_DIR) / str(deployment.public_id)
    worker = execute_in_thread(deployment.pk)
    try:
        deadline = time.monotonic() + 60
        while not (workdir / "src" / "pinned").exists():
            assert time.monotonic() < deadline, "test step never started"
            time.sleep(0.1)
        subprocess.run(["chattr", "+i", str(workdir / "src" / "pinned")], check=True)
        (workdir / "src" / "go").touch()
        worker.join(timeout=60)
        deployment.refresh_from_db()
        assert deployment.status == "deployed", deployment.error
        cleanup = deployment.steps.get(name="cleanup")
        assert cleanup.status == "failed"
        assert "could not remove all of the work directory" in cleanup.error
        assert "pinned" in cleanup.error
        assert deployment.error == ""
    finally:
        subprocess.run(["chattr", "-i", str(workdir / "src" / "pinned")], capture_output=True)
        subprocess.run(["rm", "-rf", str(workdir)])


def test_commits_and_branches_the_repository_lacks_are_refused_at_request_time(make_app, tmp_path, norn_dirs):
    from tests.support.git_servers import make_repo

    repo = make_repo(tmp_path / "repos", "gitapp", {"README": "x\n"})
    older = repo.head()
    repo.commit({"README": "y\n"}, "second")
    make_app("gitapp", f"app: gitapp\nrole: worker\nrepo:\n  url: {repo.file_url}\n")
    for ref, message in [
        ("deadbeef", f"commit deadbeef does not exist in {repo.file_url}"),
        ("d" * 40, f"commit {'d' * 40} does not exist in {repo.file_url}"),
        ("no-such-branch", f"branch 'no-such-branch' does not exist in {repo.file_url}"),
    ]:
        with pytest.raises(DeployRequestError, match=message):
            request_deployment("gitapp", ref)
    assert Deployment.objects.count() == 0
    # Nothing left behind in the work directory either.
    assert list(norn_dirs.NORN_WORK_DIR.iterdir()) == []
    # What exists is accepted: an abbreviated older commit, and the branch.
    assert request_deployment("gitapp", older[:7]).ref == older[:7]
    assert request_deployment("gitapp", "main").ref == "main"


def test_unreachable_repository_does_not_block_the_request(make_app, norn_dirs):
    make_app("offline", "app: offline\nrole: worker\nrepo:\n  url: http://127.0.0.1:9/offline.git\n")
    # The clone step will retry it and may fall back to the local copy.
    assert request_deployment("offline", "main").status == "queued"


def test_deploys_run_while_redis_is_down_and_events_stay_in_the_database(make_app, deploy_now, busybox_image, settings, caplog):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}
    }
    make_app("noredis", spec("noredis", test="echo still running; exit 2"), {"Dockerfile": DOCKERFILE})
    started = time.monotonic()
    deployment = deploy_now("noredis")
    assert time.monotonic() - started < 30  # publishing never blocks the pipeline
    assert deployment.status == "failed" and deployment.error.startswith("test failed")
    # Every event is in the database, numbered without gaps, for clients to catch up.
    seqs = list(deployment.events.values_list("seq", flat=True))
    assert seqs == list(range(1, deployment.last_event_seq + 1))
    from deployments import events

    events.publisher.flush()
    assert "could not publish" in caplog.text
