"""Cron apps: one django-q2 schedule per app that runs the app's image with its command.

`register(ctx)` is the deploy step for `role: cron` (it points the app's
schedule at the new image); `run_job(job_id)` is what every tick executes.
"""

import logging
import time
from datetime import datetime

from croniter import croniter
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.models import Schedule

from apps_registry.models import App
from deployments import appdb, appenv, containers, dockerapi, runner
from deployments.appenv import StepContext
from deployments.models import CronJob, CronRun
from deployments.outcomes import StepFailed

log = logging.getLogger(__name__)

SCHEDULE_FUNC = "deployments.tasks.run_cron_job"
DEFAULT_TIMEOUT = 3600
# A run keeps the end of its output, where the errors are.
OUTPUT_LIMIT = 1024 * 1024
# How often a running job's output so far is written to its CronRun row.
OUTPUT_SAVE_INTERVAL = 2.0


def schedule_name(app_name: str) -> str:
    return f"norn-cron:{app_name}"


def command_argv(command: str | list[str] | tuple[str, ...]) -> list[str]:
    """The infraspec `command` as argv: a string is a shell command, run with sh -c."""
    return ["sh", "-c", command] if isinstance(command, str) else [str(a) for a in command]


def next_run(expression: str) -> datetime:
    """When `expression` fires next, computed the way django-q2's scheduler does
    (in local time, TIME_ZONE), so the first run and later ones agree."""
    return croniter(expression, timezone.localtime()).get_next(datetime)


def register(ctx: StepContext) -> CronJob:
    """Point the app's cron job and its schedule at ctx.image; returns the CronJob.

    Safe to repeat: one CronJob and one Schedule per app, updated in place.
    """
    schedule, command = ctx.spec.schedule, ctx.spec.command
    if not schedule or not command:
        raise StepFailed("a cron app needs schedule and command in infraspec.yaml")
    if not ctx.image:
        raise StepFailed("there is no image to schedule: the build step did not produce one")
    # Every tick runs the image from the local engine; find out now, not at
    # the first tick, when nobody is watching.
    _check_image_is_local(ctx)
    # Stored without the database connection: run_job adds it at run time,
    # so the password is not kept in this table.
    database = appenv.database_env(ctx.spec)
    env = {k: v for k, v in appenv.container_env(ctx).items() if k not in database}
    problem = appenv.env_problem(env)
    if problem:
        raise StepFailed(problem)
    argv = command_argv(command)

    with transaction.atomic():
        app = App.objects.get(name=ctx.app_name)
        # update_or_create locks the job row until commit, so two registers of
        # one app take turns and cannot both create a Schedule below.
        job, _ = CronJob.objects.update_or_create(
            app=app,
            defaults={
                "deployment_id": ctx.deployment_id,
                "image": ctx.image,
                "schedule": schedule,
                "command": argv,
                "env": env,
            },
        )
        entry = _upsert_schedule(job, app.name)
    ctx.log(
        f"Scheduled {app.name}: {schedule!r} runs {argv} in {ctx.image}; "
        f"next run {timezone.localtime(entry.next_run):%Y-%m-%d %H:%M %Z}"
    )
    return job


def _check_image_is_local(ctx: StepContext) -> None:
    """StepFailed unless the local engine has ctx.image: asked of its API on
    the unix socket (~2 ms), else of the docker CLI (a process, ~50 ms)."""
    try:
        local = dockerapi.image_exists(ctx.image)
    except dockerapi.Unreachable as exc:
        raise StepFailed(f"could not check that image {ctx.image} is on the local Docker engine: {exc}") from None
    if local is None:
        result = ctx.run(["docker", "image", "inspect", "--format", "{{.Id}}", ctx.image], check=False, timeout=60)
        local, detail = result.returncode == 0, ":\n" + runner.tail_lines(result.tail, 5)
    else:
        detail = ""
    if not local:
        raise StepFailed(f"image {ctx.image} is not on the local Docker engine, so the schedule could not run it{detail}")


def _upsert_schedule(job, app_name):
    name = schedule_name(app_name)
    existing = list(Schedule.objects.filter(name=name).order_by("id"))
    entry = existing[0] if existing else Schedule(name=name)
    # More than one can only come from edits in the admin; each would run
    # every tick again.
    Schedule.objects.filter(pk__in=[s.pk for s in existing[1:]]).delete()
    # An unchanged expression keeps its next_run: recomputing it would skip a
    # tick that is due but not yet picked up by the cluster.
    if entry.pk is None or entry.cron != job.schedule or entry.next_run is None:
        entry.next_run = next_run(job.schedule)
    entry.func = SCHEDULE_FUNC
    # django-q2 reads args with ast.literal_eval; tasks get primary keys only.
    entry.args = repr((job.pk,))
    entry.kwargs = None
    entry.schedule_type = Schedule.CRON
    entry.cron = job.schedule
    entry.repeats = -1
    entry.save()
    return entry


def unregister(app_name: str) -> bool:
    """Stop scheduling the app. Its CronJob and past runs stay (history is
    data); registering again reuses them. True if a schedule was removed."""
    deleted, _ = Schedule.objects.filter(name=schedule_name(app_name)).delete()
    return deleted > 0


class _Tail:
    """The last `limit` characters of a command's output."""

    def __init__(self, limit):
        self.limit = limit
        self.data = ""
        self.total = 0

    def append(self, text):
        # PostgreSQL text cannot hold NUL, and a program may well print one.
        text = text.replace("\x00", "\ufffd")
        self.total += len(text)
        self.data = (self.data + text)[-self.limit:]

    def text(self):
        if self.total <= self.limit:
            return self.data
        # The note's room (under 100 characters) comes out of the kept
        # output, so the whole stays within the limit.
        kept = self.data[-(self.limit - 100):]
        return f"[output truncated: the first {self.total - len(kept):,} characters are not kept]\n" + kept


def run_job(job_id: int) -> CronRun | None:
    """Run cron job `job_id` once, now, and return its CronRun.

    A failing command is a recorded run with its exit code, not an exception.
    exit_code stays None when the run timed out (NORN_CRON_TIMEOUT) or could
    not be started. Returns None when the job no longer exists (its app was
    deleted after this tick was queued).
    """
    try:
        job = CronJob.objects.select_related("app").get(pk=job_id)
    except CronJob.DoesNotExist:
        log.warning("cron job %s no longer exists; nothing to run", job_id)
        return None
    run = CronRun.objects.create(job=job, image=job.image)
    # Named, so a run whose `docker run` client is killed can still be found
    # and stopped: killing the client does not stop the container.
    container = f"norn-cron-{job.app.name}-{run.pk}"
    timeout = getattr(settings, "NORN_CRON_TIMEOUT", DEFAULT_TIMEOUT)
    output = _Tail(OUTPUT_LIMIT)
    last_save = time.monotonic()

    def on_output(text):
        nonlocal last_save
        output.append(text)
        if time.monotonic() - last_save >= OUTPUT_SAVE_INTERVAL:
            # Narrow write, so the dashboard can show a long run's progress.
            CronRun.objects.filter(pk=run.pk).update(output=output.text())
            last_save = time.monotonic()

    exit_code = None
    redact = runner.Redactor([])
    try:
        # Inside the try: whatever fails here (an app's stored spec that
        # cannot be read) ends this run with the reason, never leaves it
        # "running" for ever.
        spec = job.app.infraspec
        env = {**job.env, **appenv.database_env(spec)}
        # The output is shown on the dashboard; as in the pipeline, the
        # database password never is.
        redact = runner.Redactor(appdb.secrets(spec))
        result = containers.run(
            lambda argv, timeout: runner.run(
                argv,
                env=runner.host_env(),
                timeout=timeout,
                on_output=on_output,
                redact=redact,
            ),
            name=container,
            app_name=job.app.name,
            purpose="cron",
            deployment=None,
            image=job.image,
            command=job.command,
            env=env,
            timeout=timeout,
            labels={"norn.cron-run": run.pk},
        )
        exit_code = result.returncode
    except runner.TimedOut as exc:
        output.append(f"\n[norn] the run {exc} and was stopped\n")
    except (OSError, ValueError, runner.CommandError) as exc:
        output.append(redact(f"\n[norn] the run could not be started: {exc}\n"))
    except Exception as exc:
        log.exception("cron run %s of %s failed", run.pk, job.app.name)
        output.append(redact(f"\n[norn] the run failed: internal error: {exc.__class__.__name__}: {exc}\n"))
    finally:
        if exit_code is None:
            # Killing the docker client does not stop the container.
            containers.remove(container)
        run.exit_code = exit_code
        run.output = output.text()
        run.finished_at = timezone.now()
        run.save(update_fields=["exit_code", "output", "finished_at"])
    return run
