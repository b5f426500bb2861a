"""The pipeline: run one deployment's seven steps on this worker.

`execute(deployment_id)` claims the deployment (a second delivery of the same
task finds it claimed and does nothing), runs the steps the transition rules
in deployments/states.py call for, keeps a heartbeat so crash recovery can
tell a live owner from a dead one, and hands the app to its next queued
deployment when done.
"""

import importlib
import logging
import shutil
import signal
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection

from apps_registry import infraspec
from apps_registry.spec import Spec
from deployments import (
    appdb, containers, deferred, events, gitauth, notifications, queue, residents, retention, rollback, runner,
    states, transitions,
)
from deployments.models import Deployment
from deployments.outcomes import Outcome, Skip, StepFailed, cancel_message
from deployments.outputwriter import OutputWriter
from deployments.steps import Context
from deployments.steps import snapshot as snapshot_step
from deployments.workdirs import make as make_workdir

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 2.0
CANCEL_POLL_INTERVAL = 0.5


def step_module(name: str):
    # One module per step, so "what does the Build step do" is found by file
    # name (deployments/steps/build.py).
    return importlib.import_module(f"deployments.steps.{name}")


class Heartbeat:
    """Refreshes heartbeat_at and watches for a cancel request, from a
    resident thread of the worker (deployments/residents.py)."""

    def __init__(self, deployment_id, owner):
        self.deployment_id = deployment_id
        self.owner = owner
        self.cancel_by = None
        self._stopping = threading.Event()
        self._job = None

    def start(self):
        self._job = residents.run(self.run, name=f"heartbeat-{self.deployment_id}")

    def run(self):
        beat_due = 0.0
        waited = 0.0
        while not self._stopping.is_set():
            try:
                if waited >= beat_due:
                    by = transitions.heartbeat(self.deployment_id, self.owner)
                    beat_due = waited + HEARTBEAT_INTERVAL
                else:
                    by = Deployment.objects.filter(pk=self.deployment_id).values_list(
                        "cancel_requested_by", flat=True
                    ).first()
            except DatabaseError:
                # A database blip must not silence the heartbeat for good
                # (recovery would then fail a deployment that is fine):
                # reconnect on the next beat.
                log.warning("heartbeat for deployment %s missed a beat", self.deployment_id, exc_info=True)
                connection.close()
                by = None
            if by:
                self.cancel_by = by
            self._stopping.wait(CANCEL_POLL_INTERVAL)
            waited += CANCEL_POLL_INTERVAL

    def stop(self):
        self._stopping.set()
        if self._job is not None:
            self._job.join(timeout=5)


def execute(deployment_id: int) -> bool:
    """Run the deployment if this call claims it; False when it was not ours to run.

    Whatever goes wrong once it is claimed (an infraspec that broke after it
    was queued, a step's bookkeeping raising, the database refusing a write)
    fails it at once with that reason, and the app's next queued deployment
    starts: a claimed deployment is never left in flight for crash recovery
    to find minutes later.
    """
    owner = transitions.owner_id()
    if not transitions.claim(deployment_id, owner):
        log.info("deployment %s not claimed (already claimed, cancelled, or not its turn)", deployment_id)
        return False
    heartbeat = Heartbeat(deployment_id, owner)
    heartbeat.start()
    progress = Progress()
    try:
        _run(deployment_id, owner, heartbeat, progress)
    except Exception as exc:
        log.exception("deployment %s crashed %s", deployment_id, progress.where())
        _fail_crashed(deployment_id, owner, progress, exc)
    finally:
        heartbeat.stop()
        deferred.start(deployment_id, progress.deferred, progress.redact)
        _dispatch_next(deployment_id, progress.app_id)
        # Its end (or crash) is committed: queue who is told of it (never raises).
        notifications.deployment_ended(deployment_id)
        # Live listeners get the last events before this worker goes idle.
        events.publisher.flush()
    return True


class Progress:
    """Where a deployment's run has got to, for the error if it crashes."""

    def __init__(self):
        self.app_id = None
        self.public_id = ""
        self.workdir = None
        self.pgid = None  # process group of the step's command, while one runs
        self.redact = runner.Redactor([])
        self.running = None  # the step started and not yet recorded as finished
        self.finished = None  # the last step recorded as finished
        self.deferred = []  # the steps' ctx.defer() work, run once the deployment ended

    def where(self):
        if self.running:
            return f"in the {self.running} step"
        if self.finished:
            return f"after the {self.finished} step"
        return "before the first step"


def _run(deployment_id, owner, heartbeat, progress):
    # Until the context knows the app's own secrets, the git tokens at least.
    progress.redact = runner.Redactor(gitauth.secrets())
    deployment = Deployment.objects.select_related("app", "rollback_to", "snapshot").get(pk=deployment_id)
    progress.app_id = deployment.app_id
    progress.public_id = str(deployment.public_id)
    _run_steps(deployment, owner, heartbeat, progress)


# Writes of the failure are retried this often, this far apart: a database
# that restarted under the worker is back within seconds, or recovery (which
# needs no word from this worker) fails the deployment later.
FAIL_ATTEMPTS = 3
FAIL_RETRY_DELAY = 1.0


def crash_reason(exc: BaseException, progress: Progress) -> str:
    """The deployment's error when its run raised `exc`: what broke, and where."""
    if isinstance(exc, (SpecMissing, StepFailed)):
        text = str(exc)  # already says what is wrong, for the user
    elif isinstance(exc, DatabaseError):
        # PostgreSQL's own message says it; Django's class names do not help.
        text = f"database error {progress.where()}: {exc}".strip()
    else:
        text = f"internal error {progress.where()}: {exc.__class__.__name__}: {exc}".strip()
    # PostgreSQL text cannot hold NUL, and an exception's text may.
    return progress.redact(text.replace("\x00", "\ufffd"))


def _fail_crashed(deployment_id, owner, progress, exc):
    error = crash_reason(exc, progress)
    for attempt in range(FAIL_ATTEMPTS):
        if isinstance(exc, DatabaseError) or attempt:
            # A broken connection raises on every use until it is reopened;
            # here no transaction is open, so closing loses nothing.
            connection.close()
        try:
            failed = transitions.fail_crashed(deployment_id, owner, error)
        except DatabaseError:
            log.warning("could not record the failure of deployment %s (attempt %d of %d)",
                        deployment_id, attempt + 1, FAIL_ATTEMPTS, exc_info=True)
            if attempt + 1 < FAIL_ATTEMPTS:
                time.sleep(FAIL_RETRY_DELAY)
            continue
        if not failed:
            log.warning("deployment %s had already finished when its worker hit: %s", deployment_id, error)
            return
        break
    else:
        return  # the database stayed away: crash recovery fails it once the heartbeat is stale
    # A step's command whose output could not be recorded is still running
    # (the runner stops only for a timeout or a cancel).
    if progress.pgid:
        runner.kill_tree(progress.pgid, signal.SIGKILL)
    # What the cleanup step would have removed: the clone (0700, it may hold
    # secrets) and any throwaway container of this deployment still running.
    if progress.workdir:
        shutil.rmtree(progress.workdir, ignore_errors=True)
    if progress.public_id:
        try:
            containers.remove_for_deployment(progress.public_id)
        except Exception:
            log.exception("could not remove the containers of deployment %s", deployment_id)


def _dispatch_next(deployment_id, app_id):
    """Hand the app to its next queued deployment. Errors only log: with the
    database away, the periodic recover_and_dispatch starts it later."""
    try:
        if app_id is None:
            app_id = Deployment.objects.filter(pk=deployment_id).values_list("app_id", flat=True).first()
        if app_id is not None:
            queue.dispatch_next(app_id)
    except Exception:
        log.exception("could not start the next deployment after %s", deployment_id)


def load_spec(app, kind):
    """(spec, error) for a run of `app`: the infraspec is re-read at run time,
    since it may have changed or gone since the deployment was queued.

    A broken file stops a deploy (error is "infraspec.yaml is invalid: <first
    error>", then the others; its first step fails with it and only cleanup
    runs), but never the way back: a rollback or restore runs with the app's
    last valid spec.
    """
    path = Path(app.directory) / infraspec.FILENAME
    try:
        result = infraspec.load(path, directory_name=app.name)
        problems = [str(e) for e in result.errors]
        spec = result.spec
    except Exception as exc:  # the validator's own bug must not strand the deploy
        log.exception("validating %s raised", path)
        problems = [f"{path}: could not be validated ({exc.__class__.__name__}: {exc})"]
        spec = None
    if spec is not None:
        return spec, ""
    error = "infraspec.yaml is invalid: " + "\n".join(problems or [f"{path}: no valid content"])
    if kind != Deployment.Kind.DEPLOY:
        if not app.spec:
            raise SpecMissing(f"{error}\nand {app.name} has no earlier valid infraspec to run with")
        return app.infraspec, ""
    try:
        return app.infraspec, error
    except Exception:
        # Only the failed first step and cleanup run, and neither reads the
        # spec: the app's name is all the context needs.
        log.exception("the stored infraspec of %s cannot be read", app.name)
        return Spec(app=app.name, role=""), error


def _context(deployment, heartbeat, spec):
    app = deployment.app
    workdir = Path(settings.NORN_WORK_DIR) / str(deployment.public_id)
    secrets = [*gitauth.secrets(), *(appdb.secrets(spec) if spec else [])]
    ctx = Context(
        deployment_id=deployment.pk,
        public_id=str(deployment.public_id),
        app_name=app.name,
        spec=spec,
        ref=deployment.ref,
        workdir=workdir,
        app_dir=Path(app.directory),
        kind=deployment.kind,
        # Recorded when it was queued; rows from before the column was filled
        # fall back to the setting.
        runtime=deployment.runtime or settings.NORN_RUNTIME,
        restore_snapshot=deployment.snapshot,
        redact=runner.Redactor(secrets),
    )
    if deployment.kind == Deployment.Kind.ROLLBACK:
        if deployment.rollback_to is None:
            raise StepFailed("the deployment to roll back to no longer exists")
        # The image and commit being put back come from the earlier deployment.
        ctx.image = deployment.rollback_to.image
        ctx.commit_sha = deployment.rollback_to.commit_sha
    # A worker that is stopping (deployments/workerstop.py) stops the step as
    # a cancel would once its grace period is over; the step fails with why.
    ctx.cancel_reason = lambda: (cancel_message(heartbeat.cancel_by) if heartbeat.cancel_by else None) or runner.stop_reason()
    return ctx


def _run_steps(deployment, owner, heartbeat, progress):
    spec, spec_error = load_spec(deployment.app, deployment.kind)
    ctx = _context(deployment, heartbeat, spec)

    progress.redact = ctx.redact
    progress.workdir = ctx.workdir
    progress.deferred = ctx.deferred
    # Output is written behind the steps; each state change below waits for
    # it. So are the step's process group and the work directory, for crash
    # recovery (OutputWriter.set_fields).
    output = OutputWriter(deployment.pk)

    def record_pgid(pgid):
        progress.pgid = pgid  # for this worker's own crash handling
        output.set_fields(step_pgid=pgid)

    ctx.record_pgid = record_pgid
    ctx.record_workdir = lambda: output.set_fields(workdir=str(ctx.workdir))
    try:
        _run_each_step(deployment, owner, heartbeat, progress, spec_error, ctx, output)
    except BaseException:
        output.close(quietly=True)  # what went wrong is the deployment's error, not this
        raise
    output.close()


def _run_each_step(deployment, owner, heartbeat, progress, spec_error, ctx, output):
    steps = states.initial(deployment.kind)
    first = name = next(iter(steps))
    error = ""
    cancelled = False  # the step that failed it was stopped by a cancel
    recorded = {"commit_sha": deployment.commit_sha, "image": deployment.image}
    if not transitions.start_step(deployment.pk, owner, first):
        log.warning("deployment %s was taken over (recovered?) before its first step", deployment.pk)
        return

    while name is not None:
        progress.running = ctx.step = name
        ctx.timeout = settings.NORN_STEP_TIMEOUTS[name]
        ctx.output = lambda text, name=name: output.append(name, text)
        if name == "test":
            # The snapshot step's database check runs meanwhile (the tests never touch it).
            snapshot_step.prepare_ahead(ctx)
        if name == first and spec_error:
            outcome = Outcome.failed(spec_error)
        else:
            outcome = _run_one(ctx, name, heartbeat)
            progress.pgid = None  # its commands are over: a pgid now may be another process's
        if name == "clone":
            make_workdir(ctx.workdir)  # cleanup's target exists either way
        output.flush()  # the step's output comes before its end
        cut = states.apply(steps, name, outcome)
        if states.failed_step(steps) == name:
            cancelled = outcome.is_cancel
            # An invalid infraspec is the reason, not the step it stopped.
            error = spec_error if name == first and spec_error else states.failure_error(name, outcome)
            if name == "deploy" and deployment.kind == Deployment.Kind.DEPLOY and not outcome.is_cancel:
                error += _auto_rollback(deployment, ctx.spec)
        then = states.next_step(steps)
        final = states.final_status(steps, cancelled=cancelled) if then is None else None
        # The step's end, the steps it cut short and the next one's start (or
        # the deployment's end): one transaction.
        fields = _learned(ctx, recorded)
        if not transitions.advance(deployment.pk, owner, name, outcome, cut=cut, then=then, final=final,
                                   error=error, failed_step=states.failed_step(steps) or "", **fields):
            log.warning("deployment %s was taken over (recovered?); stopping", deployment.pk)
            return
        progress.running, progress.finished = None, name
        recorded.update(fields)
        name = then
    # The end is committed: its events go out before the work that follows
    # (retention, the next deployment's dispatch) takes the interpreter from
    # the publisher's thread, so followers learn of the end first.
    events.publisher.flush()
    if final == Deployment.Status.DEPLOYED:
        rollback.after_success(deployment)
        if deployment.kind == Deployment.Kind.DEPLOY:
            retention.prune(deployment.app, ctx.spec)


class SpecMissing(Exception):
    """The app has no infraspec to run with; the argument says why."""


def _auto_rollback(deployment, spec):
    """rollback.after_failed_deploy, whose own failure only adds to the error:
    the deploy's failure stays the reason."""
    try:
        return rollback.after_failed_deploy(deployment, spec)
    except Exception as exc:
        log.exception("could not queue the automatic rollback of deployment %s", deployment.pk)
        return f"; the automatic rollback could not be queued ({exc.__class__.__name__}: {exc})"


def _run_one(ctx: Context, name: str, heartbeat: Heartbeat) -> Outcome:
    """Run one step and say how it ended."""
    if name not in states.ALWAYS_RUNS and heartbeat.cancel_by:
        return Outcome.cancelled(heartbeat.cancel_by)
    if name == "clone":
        make_workdir(ctx.workdir)  # 0700 whatever the umask: it holds the clone
        ctx.record_workdir()
    # The step's process group is cleared with its end (transitions.advance).
    return _step_outcome(ctx, name, heartbeat)


def _step_outcome(ctx: Context, name: str, heartbeat: Heartbeat) -> Outcome:
    try:
        step_module(name).run(ctx)
    except DatabaseError:
        raise
    except Skip as skip:
        return Outcome.skipped(str(skip))
    except runner.Cancelled as exc:
        # The runner stops a command when ctx.cancel_reason says so, which it
        # does only once the heartbeat saw the request.
        return Outcome.cancelled(heartbeat.cancel_by) if heartbeat.cancel_by else Outcome.failed(str(exc))
    except (StepFailed, runner.CommandError) as exc:
        return Outcome.failed(ctx.redact(str(exc)))
    except Exception as exc:
        log.exception("step %s of deployment %s crashed", name, ctx.deployment_id)
        return Outcome.failed(ctx.redact(f"internal error: {exc.__class__.__name__}: {exc}"))
    return Outcome.succeeded()


def _learned(ctx, recorded):
    """The commit and the image, once a step learned them (written with the
    step's end, not again after every step)."""
    learned = {
        name: value for name, value in (("commit_sha", ctx.commit_sha), ("image", ctx.image))
        if value and recorded.get(name) != value
    }
    if "commit_sha" in learned:
        # The commit's subject, author and time, in the same write as its SHA.
        learned.update(ctx.commit_context)
    return learned
