"""Cron apps: register points one django-q2 schedule at the new image, and
run_job runs the command in it on the real Docker engine, recording the run."""

import ast
import secrets
import uuid

import pytest
from django.utils import timezone
from django_q.models import Schedule

from apps_registry import infraspec
from apps_registry.models import App
from deployments import appdb, dockerapi, scheduler
from deployments.models import CronJob, CronRun, Deployment
from deployments.steps import StepFailed
from tests.support.contexts import step_context
from tests.support.docker_images import docker, docker_build
from tests.support.networks import remove_app_network

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def images(busybox_image, tmp_path_factory):
    """A cron image under two tags (two "deploys"); removed afterwards."""
    token = secrets.token_hex(4)
    directory = tmp_path_factory.mktemp("cron")
    (directory / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo {token} > /stamp\n")
    first = docker_build(directory, f"norn-test-cron-{token}:1")
    second = f"norn-test-cron-{token}:2"
    docker(["tag", first, second])
    yield first, second
    docker(["rmi", "--force", first, second], check=False)


@pytest.fixture
def cron_app(tmp_path):
    """make(command, schedule=...) -> an App row (role cron) and a Deployment of it."""
    name = f"cr-{secrets.token_hex(4)}"

    def make(command='echo "hello $GREETING"; echo to-stderr >&2', schedule="*/5 * * * *", extra=""):
        text = (
            f"app: {name}\nrole: cron\nschedule: {schedule!r}\ncommand: {command!r}\n"
            "env:\n  GREETING: from norn\n" + extra
        )
        result = infraspec.parse(text, "infraspec.yaml")
        assert result.ok, result.errors
        app, _ = App.objects.update_or_create(
            name=name,
            defaults={"directory": str(tmp_path), "status": App.Status.VALID, "role": "cron", "spec": result.data},
        )
        return app, Deployment.objects.create(app=app)

    yield make
    # Containers of runs that went wrong (run_job removes its own).
    ids = docker(["ps", "--all", "--quiet", "--filter", f"label=norn.app={name}"]).stdout.split()
    if ids:
        docker(["rm", "--force", *ids], check=False)
    remove_app_network(name)


def make_ctx(app, deployment, image):
    return step_context(
        app.spec, deployment_id=deployment.pk, public_id=str(deployment.public_id), image=image, timeout=60
    )


def register(cron_app, image, **spec):
    app, deployment = cron_app(**spec)
    return scheduler.register(make_ctx(app, deployment, image))


def test_register_creates_one_schedule_with_the_cron_and_func(cron_app, images):
    before = timezone.now()
    job = register(cron_app, images[0], schedule="*/5 * * * *")

    entry = Schedule.objects.get(name=f"norn-cron:{job.app.name}")
    assert entry.func == "deployments.tasks.run_cron_job"
    assert entry.schedule_type == Schedule.CRON
    assert entry.cron == "*/5 * * * *"
    assert entry.repeats == -1
    assert ast.literal_eval(entry.args) == (job.pk,)
    assert before < entry.next_run <= before + timezone.timedelta(minutes=5)
    assert entry.next_run.minute % 5 == 0 and entry.next_run.second == 0

    job.refresh_from_db()
    assert job.image == images[0]
    assert job.command == ["sh", "-c", 'echo "hello $GREETING"; echo to-stderr >&2']
    assert job.env["GREETING"] == "from norn"
    assert job.env["NORN_APP"] == job.app.name
    assert "PATH" not in job.env  # the host's PATH is not the container's


def test_registering_again_updates_the_image_without_duplicating(cron_app, images):
    first = register(cron_app, images[0], schedule="*/5 * * * *")
    second = register(cron_app, images[1], schedule="0 3 * * *")

    assert second.pk == first.pk
    assert CronJob.objects.filter(app__name=first.app.name).count() == 1
    assert CronJob.objects.get(pk=first.pk).image == images[1]
    entries = Schedule.objects.filter(name=f"norn-cron:{first.app.name}")
    assert entries.count() == 1
    assert entries[0].cron == "0 3 * * *"
    assert (entries[0].next_run.astimezone(timezone.get_current_timezone()).hour, entries[0].next_run.minute) == (3, 0)


def test_register_asks_the_docker_cli_when_the_engine_has_no_socket(cron_app, images, monkeypatch):
    monkeypatch.setattr(dockerapi, "socket_path", lambda: None)
    job = register(cron_app, images[0])
    assert CronJob.objects.get(pk=job.pk).image == images[0]


@pytest.mark.parametrize("asked_of", ["engine API", "docker CLI"])
def test_register_with_a_missing_image_fails_the_step(cron_app, monkeypatch, asked_of):
    if asked_of == "docker CLI":
        # As when the engine is reached over TCP, ssh or TLS: no socket to ask.
        monkeypatch.setattr(dockerapi, "socket_path", lambda: None)
    app, deployment = cron_app()
    missing = f"norn-test-missing-{uuid.uuid4().hex[:8]}:nope"
    with pytest.raises(StepFailed, match=f"image {missing} is not on the local Docker engine"):
        scheduler.register(make_ctx(app, deployment, missing))
    assert not CronJob.objects.filter(app=app).exists()
    assert not Schedule.objects.filter(name=f"norn-cron:{app.name}").exists()


def test_run_job_records_exit_code_zero_and_the_output(cron_app, images):
    job = register(cron_app, images[0])

    run = scheduler.run_job(job.pk)

    assert run.exit_code == 0
    assert "hello from norn\n" in run.output
    assert "to-stderr\n" in run.output
    assert run.image == images[0]
    assert run.started_at <= run.finished_at
    assert CronRun.objects.get(pk=run.pk).output == run.output
    # --rm: nothing of the run is left on the engine.
    assert docker(["ps", "--all", "--quiet", "--filter", f"label=norn.app={job.app.name}"]).stdout == ""


def test_failing_command_is_a_recorded_run_with_its_exit_code(cron_app, images):
    job = register(cron_app, images[0], command=["sh", "-c", "echo partial work; exit 7"])

    run = scheduler.run_job(job.pk)

    assert run.exit_code == 7
    assert run.output == "partial work\n"
    assert run.finished_at is not None


def test_run_that_times_out_is_stopped_and_recorded(cron_app, images, settings):
    settings.NORN_CRON_TIMEOUT = 2
    job = register(cron_app, images[0], command="echo started; sleep 60")

    run = scheduler.run_job(job.pk)

    assert run.exit_code is None
    assert run.output.startswith("started\n")
    assert "timed out after 2 s" in run.output
    assert (run.finished_at - run.started_at).total_seconds() < 30
    # Killing `docker run` alone would leave the container sleeping.
    assert docker(["ps", "--all", "--quiet", "--filter", f"label=norn.app={job.app.name}"]).stdout == ""


def test_output_keeps_the_last_megabyte(cron_app, images):
    # ~1.5 MB of numbered lines; the end must survive.
    job = register(cron_app, images[0], command="seq 1 200000; echo the-end")

    run = scheduler.run_job(job.pk)

    assert run.exit_code == 0
    assert len(run.output) <= scheduler.OUTPUT_LIMIT
    assert run.output.startswith("[output truncated: the first ")
    assert run.output.endswith("199999\n200000\nthe-end\n")
    assert "\n1\n2\n3\n" not in run.output


def test_database_connection_is_given_at_run_time_and_not_stored(cron_app, images, settings):
    job = register(
        cron_app, images[0],
        command='echo "url=$DATABASE_URL db=$PGDATABASE"',
        extra="services:\n  postgres:\n    database: reports\n",
    )
    job.refresh_from_db()
    password = appdb.password(job.app.name)  # the app's own role's, never the admin's
    assert not {"DATABASE_URL", "PGPASSWORD"} & set(job.env)
    assert password not in str(job.env)

    run = scheduler.run_job(job.pk)

    assert run.exit_code == 0
    port = settings.NORN_APP_DATABASES["PORT"]
    assert f"url=postgres://{appdb.role_name(job.app.name)}:***@host.docker.internal:{port}/reports db=reports" in run.output
    assert ":***@" in run.output  # the password reached the job, redacted in its output
    assert password not in run.output


def test_unregister_removes_the_schedule_and_keeps_the_history(cron_app, images):
    job = register(cron_app, images[0], command="true")
    scheduler.run_job(job.pk)

    assert scheduler.unregister(job.app.name) is True
    assert not Schedule.objects.filter(name=f"norn-cron:{job.app.name}").exists()
    assert CronRun.objects.filter(job=job).count() == 1
    assert scheduler.unregister(job.app.name) is False


def test_run_job_of_a_deleted_job_does_nothing(cron_app, images):
    job = register(cron_app, images[0])
    job.delete()
    assert scheduler.run_job(job.pk) is None


def test_the_schedule_runs_the_job_through_django_q(cron_app, images, monkeypatch):
    from django_q.brokers import get_broker
    from django_q.conf import Conf
    from django_q.models import Success
    from django_q.scheduler import scheduler as django_q_scheduler

    job = register(cron_app, images[0])
    name = f"norn-cron:{job.app.name}"
    past = timezone.now() - timezone.timedelta(minutes=1)
    Schedule.objects.filter(name=name).update(next_run=past)
    # Only this schedule is due (the migrations add Norn's own).
    Schedule.objects.exclude(name=name).update(next_run=timezone.now() + timezone.timedelta(days=1))
    # sync: the cluster's worker runs the task here, in this transaction.
    monkeypatch.setattr(Conf, "SYNC", True)

    django_q_scheduler(broker=get_broker())

    run = CronRun.objects.get(job=job)
    assert run.exit_code == 0
    assert "hello from norn" in run.output
    assert Schedule.objects.get(name=name).next_run > timezone.now()
    success = Success.objects.get(group=name)
    assert success.func == "deployments.tasks.run_cron_job"
    assert success.result == 0


def test_a_run_that_cannot_be_set_up_ends_with_the_reason(cron_app, images):
    # The app's stored spec cannot be read (a shape no Norn wrote): the run
    # is recorded as ended, saying why, instead of "running" for ever.
    job = register(cron_app, images[0])
    App.objects.filter(pk=job.app_id).update(spec={"app": job.app.name, "role": "cron", "repo": {"branch": "x"}})

    run = scheduler.run_job(job.pk)

    assert run.exit_code is None
    assert run.finished_at is not None
    assert "[norn] the run failed: internal error: KeyError: 'url'" in run.output
    assert CronRun.objects.get(pk=run.pk).finished_at is not None
