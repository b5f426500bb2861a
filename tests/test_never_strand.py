"""Deployments never strand: whatever raises once a worker has claimed a
deployment (an infraspec that broke after it was queued, a stored spec the
worker cannot read, the database refusing a step's write) fails it at once
with that reason, through the real worker (`manage.py qcluster`), and the
app's next queued deployment then runs. Before, the worker raised and the
deployment sat in "cloning" until crash recovery failed it minutes later
with "norn restarted during deployment"."""

import pytest
from django.db import connection

from apps_registry.models import App
from deployments import pipeline
from deployments.models import Deployment
from deployments.requests import request_deployment
from tests.support.cluster import Cluster, execute_in_thread, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

DOCKERFILE = "FROM norn-busybox:1\nCMD [\"sh\", \"-c\", \"echo run\"]\n"
# A cron app: its deploy step registers a schedule, so a deployment that
# succeeds leaves no container behind.
SPEC = "app: {name}\nrole: cron\nbuild: {{}}\nschedule: '0 1 * * *'\ncommand: echo run\n"
# Recovery must not be what fails them: its timeout is far beyond the waits here.
ENV = {"NORN_HEARTBEAT_TIMEOUT": "600"}
FAIL_WITHIN = 30  # seconds; recovery would take NORN_HEARTBEAT_TIMEOUT


def make_cron_app(make_app, name):
    make_app(name, SPEC.format(name=name), {"Dockerfile": DOCKERFILE})
    return App.objects.get(name=name)


def assert_failed_at_once(deployment, error_start):
    deployment.refresh_from_db()
    assert deployment.status == "failed", deployment.status
    assert deployment.error.startswith(error_start), deployment.error
    assert "norn restarted during deployment" not in deployment.error
    assert (deployment.finished_at - deployment.started_at).total_seconds() < FAIL_WITHIN
    # Nothing left running or waiting, and listeners were told.
    assert not deployment.steps.filter(status__in=["running", "pending"]).exists(), list(
        deployment.steps.values_list("name", "status")
    )
    assert deployment.events.filter(kind="deploy.failed").exists()
    assert not Deployment.objects.in_flight().filter(pk=deployment.pk).exists()


def run_two(tmp_path, app_name, break_it, *, env=None):
    """Queue two deployments of the app, break something, then start a real
    worker: returns (first, second) once both have ended, and the worker's log."""
    first = request_deployment(app_name)
    second = request_deployment(app_name)
    break_it(first)
    with Cluster(tmp_path / "qcluster.log", extra_env={**ENV, **(env or {})}) as cluster:
        wait_for(lambda: Deployment.objects.get(pk=first.pk).is_terminal, timeout=FAIL_WITHIN,
                 message=f"the first deployment to fail:\n{cluster.output()[-3000:]}")
        # Started by the first one's end (queue.dispatch_next), not by the
        # periodic dispatcher a minute later.
        wait_for(lambda: Deployment.objects.get(pk=second.pk).is_terminal, timeout=120,
                 message=f"the second deployment to run:\n{cluster.output()[-3000:]}")
        log = cluster.output()
    first.refresh_from_db()
    second.refresh_from_db()
    assert second.started_at is not None and second.started_at >= first.finished_at
    return first, second, log


def infraspec_path(deployment):
    return pipeline.Path(deployment.app.directory) / "infraspec.yaml"


@pytest.mark.parametrize("how, text, error", [
    ("made invalid", "app: broken\nrole: nope\n", "infraspec.yaml:2: role: 'nope' is not a role"),
    ("not YAML any more", "app: [\n", "YAML syntax error"),
    ("deleted", None, "cannot be read: No such file or directory"),
])
def test_an_infraspec_broken_after_queueing_fails_the_deploy_at_once(how, text, error, make_app, norn_dirs,
                                                                     busybox_image, tmp_path):
    make_cron_app(make_app, "broken")

    def break_it(deployment):
        path = infraspec_path(deployment)
        if text is None:
            path.unlink()
        else:
            path.write_text(text)

    first, second, log = run_two(tmp_path, "broken", break_it)
    assert_failed_at_once(first, "infraspec.yaml is invalid: ")
    assert error in first.error
    # The file, not the clone, is what failed it; the step shows the reason too.
    clone = first.steps.get(name="clone")
    assert clone.status == "failed" and clone.error == first.error
    # The second deployment ran too, with the same broken file, and says so.
    assert_failed_at_once(second, "infraspec.yaml is invalid: ")
    # A bad file is the user's error, not Norn's: no traceback for it.
    assert "Traceback" not in log, log[-3000:]


def test_a_validator_that_raises_still_fails_the_deploy_with_the_file_named(make_app, norn_dirs, busybox_image,
                                                                           tmp_path):
    make_cron_app(make_app, "oddport")
    bad = SPEC.format(name="oddport") + "repo:\n  url: https://user:pw@git.example.com:99999/x.git\n"
    first, second, _ = run_two(tmp_path, "oddport", lambda d: infraspec_path(d).write_text(bad))
    assert_failed_at_once(first, f"infraspec.yaml is invalid: {infraspec_path(first)}")
    assert_failed_at_once(second, "infraspec.yaml is invalid: ")
    assert "pw" not in first.error.replace("pw@", "")  # no password, whatever the validator said


def test_a_stored_spec_the_worker_cannot_read_fails_the_rollback_at_once(make_app, norn_dirs, busybox_image,
                                                                         tmp_path):
    # A rollback runs with the app's last valid spec when the file is broken;
    # here that stored spec cannot be read either (a shape no Norn wrote).
    app = make_cron_app(make_app, "oldrow")
    from deployments import transitions

    def break_it(first):
        infraspec_path(first).unlink()
        App.objects.filter(pk=app.pk).update(spec={"app": "oldrow", "role": "cron", "repo": {"branch": "main"}})

    # The first is a rollback; the second a deploy of the same app.
    previous = request_deployment("oldrow")
    Deployment.objects.filter(pk=previous.pk).update(status="deployed", image="oldrow:1", finished_at=previous.queued_at)
    first = transitions.create(app, "HEAD", kind="rollback", rollback_to=previous, runtime="cron")
    second = request_deployment("oldrow")
    Deployment.objects.filter(pk=first.pk).update(priority=0)
    pipeline.queue.enqueue(first.pk)
    break_it(first)
    with Cluster(tmp_path / "qcluster.log", extra_env=ENV) as cluster:
        wait_for(lambda: Deployment.objects.get(pk=first.pk).is_terminal, timeout=FAIL_WITHIN,
                 message=f"the rollback to fail:\n{cluster.output()[-3000:]}")
        wait_for(lambda: Deployment.objects.get(pk=second.pk).is_terminal, timeout=120,
                 message=f"the deploy after it:\n{cluster.output()[-3000:]}")
    assert_failed_at_once(first, "internal error before the first step: KeyError: 'url'")
    assert first.steps.get(name="deploy").status == "skipped"
    assert_failed_at_once(second, "infraspec.yaml is invalid: ")


@pytest.fixture
def refuse_step_write():
    """refuse_step_write(deployment, step): PostgreSQL refuses to record that
    step of that deployment as succeeded (a trigger), as a database error
    while recording a step would."""
    made = []

    def refuse(deployment, step):
        name = f"refuse_{deployment.pk}_{step}"
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN RAISE EXCEPTION 'the test refuses to record {step}'; END $$"
            )
            cursor.execute(
                f"CREATE TRIGGER {name} BEFORE UPDATE ON deployments_step FOR EACH ROW "
                f"WHEN (NEW.deployment_id = {int(deployment.pk)} AND NEW.name = '{step}' "
                f"AND NEW.status = 'succeeded') EXECUTE FUNCTION {name}()"
            )
        made.append(name)

    yield refuse
    with connection.cursor() as cursor:
        for name in made:
            cursor.execute(f"DROP TRIGGER IF EXISTS {name} ON deployments_step")
            cursor.execute(f"DROP FUNCTION IF EXISTS {name}()")


def test_a_database_error_recording_a_step_fails_the_deploy_at_once(make_app, norn_dirs, busybox_image, tmp_path,
                                                                    refuse_step_write):
    make_cron_app(make_app, "dberr")
    first, second, _ = run_two(tmp_path, "dberr", lambda d: refuse_step_write(d, "build"))
    assert_failed_at_once(first, "database error in the build step: the test refuses to record build")
    steps = dict(first.steps.values_list("name", "status"))
    assert steps["clone"] == "succeeded" and steps["build"] == "failed"
    assert {steps[s] for s in ("test", "snapshot", "migrate", "deploy", "cleanup")} == {"skipped"}
    # The clone it made is gone, as the cleanup step would have removed it.
    assert first.workdir and not pipeline.Path(first.workdir).exists()
    # The next deployment of the app runs, and this one is fine.
    assert second.status == "deployed", second.error


def test_a_runtime_that_cannot_be_built_fails_the_deploy_step(make_app, norn_dirs, busybox_image, tmp_path):
    # Recorded for Kubernetes, with a kubeconfig that is not one: the runtime
    # cannot even be set up. The deploy step fails with why.
    make_app("kubeless", "app: kubeless\nrole: worker\nbuild: {}\n", {"Dockerfile": DOCKERFILE})
    bad_config = tmp_path / "kubeconfig"
    bad_config.write_text("this: [is not a kubeconfig\n")

    def break_it(deployment):
        Deployment.objects.filter(app=deployment.app).update(runtime="kubernetes")

    # With a registry the build pushes there, so the deploy step is the first
    # to need the cluster (without one the build step fails at once, with the
    # same reason: tests/test_kubernetes_images.py).
    first, second, _ = run_two(tmp_path, "kubeless", break_it,
                               env={"NORN_KUBECONFIG": str(bad_config), "KUBECONFIG": str(bad_config),
                                    "NORN_REGISTRY_URL": "127.0.0.1:5000"})
    assert_failed_at_once(first, "deploy failed: ")
    assert "kubeconfig" in first.error.lower() or "NORN_KUBECONFIG" in first.error
    assert first.steps.get(name="deploy").status == "failed"
    assert_failed_at_once(second, "deploy failed: ")


def test_a_connection_lost_mid_step_fails_the_deploy_with_the_database_error(make_app, norn_dirs, busybox_image):
    # The worker's database connections are cut while its test step runs:
    # recording the step's end fails, and the worker reconnects to record
    # the failure with that reason, at once (no wait for crash recovery).
    import time

    make_app("cut", SPEC.format(name="cut").replace("build: {}", "build:\n  test: sleep 4"), {"Dockerfile": DOCKERFILE})
    deployment = request_deployment("cut")
    later = request_deployment("cut")

    worker = execute_in_thread(deployment.pk)
    wait_for(lambda: deployment.steps.filter(name="test", status="running").exists(), timeout=60, message="test step")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1
    started = time.monotonic()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert time.monotonic() - started < FAIL_WITHIN
    assert_failed_at_once(deployment, "database error in the test step: terminating connection due to administrator command")
    # What the step had running went with it: its container and the clone.
    from tests.support.docker_images import docker

    assert docker(["ps", "--all", "--quiet", "--filter", f"label=norn.deployment={deployment.public_id}"]).stdout == ""
    deployment.refresh_from_db()
    assert deployment.workdir and not pipeline.Path(deployment.workdir).exists()
    # The app's next deployment was handed to the queue.
    from django_q.models import OrmQ

    assert any(later.pk in task.task["args"] for task in OrmQ.objects.all())
