"""The pipeline: run one deployment's seven steps on this worker.

`execute(deployment_id)` claims the deployment (a second delivery of the same
task finds it claimed and does nothing), runs the steps the transition rules
in deployments/states.py call for, keeps a heartbeat so crash recovery can
tell a live owner from a dead one, and hands the app to its next queued
deployment when done.
"""

import importlib
import logging
import threading
from pathlib import Path

from django.conf import settings
from django.db import connection

from apps_registry import infraspec
from deployments import appdb, events, gitauth, queue, retention, rollback, runner, states, transitions
from deployments.models import Deployment
from deployments.outcomes import Outcome, Skip, StepFailed, cancel_message
from deployments.steps import Context
from deployments.workdirs import make as make_workdir

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 2.0
CANCEL_POLL_INTERVAL = 0.5


def step_module(name: str):
    # One module per step, so "what does the Build step do" is found by file
    # name (deployments/steps/build.py).
    return importlib.import_module(f"deployments.steps.{name}")


class Heartbeat(threading.Thread):
    """Refreshes heartbeat_at and watches for a cancel request."""

    def __init__(self, deployment_id, owner):
        super().__init__(daemon=True, name=f"heartbeat-{deployment_id}")
        self.deployment_id = deployment_id
        self.owner = owner
        self.cancel_by = None
        self._stopping = threading.Event()

    def run(self):
        try:
            beat_due = 0.0
            waited = 0.0
            while not self._stopping.is_set():
                if waited >= beat_due:
                    by = transitions.heartbeat(self.deployment_id, self.owner)
                    beat_due = waited + HEARTBEAT_INTERVAL
                else:
                    by = Deployment.objects.filter(pk=self.deployment_id).values_list(
                        "cancel_requested_by", flat=True
                    ).first()
                if by:
                    self.cancel_by = by
                self._stopping.wait(CANCEL_POLL_INTERVAL)
                waited += CANCEL_POLL_INTERVAL
        except Exception:
            log.exception("heartbeat for deployment %s stopped", self.deployment_id)
        finally:
            connection.close()  # this thread's own connection

    def stop(self):
        self._stopping.set()
        self.join(timeout=5)


def execute(deployment_id: int) -> bool:
    """Run the deployment if this call claims it; False when it was not ours to run."""
    owner = transitions.owner_id()
    if not transitions.claim(deployment_id, owner):
        log.info("deployment %s not claimed (already claimed, cancelled, or not its turn)", deployment_id)
        return False
    deployment = Deployment.objects.select_related("app", "rollback_to", "snapshot").get(pk=deployment_id)
    heartbeat = Heartbeat(deployment_id, owner)
    heartbeat.start()
    try:
        _run_steps(deployment, owner, heartbeat)
    finally:
        heartbeat.stop()
        queue.dispatch_next(deployment.app_id)
        # Live listeners get the last events before this worker goes idle.
        events.publisher.flush()
    return True


def _context(deployment, heartbeat):
    app = deployment.app
    result = infraspec.load(Path(app.directory) / infraspec.FILENAME, directory_name=app.name)
    workdir = Path(settings.NORN_WORK_DIR) / str(deployment.public_id)
    secrets = [*gitauth.secrets(), *appdb.secrets(result.spec or app.infraspec)]
    ctx = Context(
        deployment_id=deployment.pk,
        public_id=str(deployment.public_id),
        app_name=app.name,
        spec=result.spec or app.infraspec,
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
        # The image and commit being put back come from the earlier deployment.
        ctx.image = deployment.rollback_to.image
        ctx.commit_sha = deployment.rollback_to.commit_sha
    # A worker that is stopping (deployments/workerstop.py) stops the step as
    # a cancel would once its grace period is over; the step fails with why.
    ctx.cancel_reason = lambda: (cancel_message(heartbeat.cancel_by) if heartbeat.cancel_by else None) or runner.stop_reason()
    ctx.record_pgid = lambda pgid: transitions.set_fields(deployment.pk, step_pgid=pgid)
    return ctx, result


def _run_steps(deployment, owner, heartbeat):
    ctx, spec_result = _context(deployment, heartbeat)
    steps = states.initial(deployment.kind)
    first = next(iter(steps))
    error = ""
    # The spec is re-read at run time: it may have changed since queueing. A
    # broken spec blocks new code, but never the way back: a rollback uses the
    # last valid spec, and a restore needs only its snapshot.
    if not spec_result.ok and deployment.kind == Deployment.Kind.DEPLOY:
        error = "infraspec.yaml is invalid:\n" + "\n".join(str(e) for e in spec_result.errors)

    while (name := states.next_step(steps)) is not None:
        if not transitions.start_step(deployment.pk, owner, name):
            log.warning("deployment %s was taken over (recovered?); stopping", deployment.pk)
            return
        ctx.timeout = settings.NORN_STEP_TIMEOUTS[name]
        ctx.output = lambda text, name=name: transitions.append_output(deployment.pk, name, text)
        if name == first and error:
            outcome = Outcome.failed(error)
        else:
            outcome = _run_one(ctx, name, heartbeat)
        if name == "clone":
            make_workdir(ctx.workdir)  # cleanup's target exists either way
        transitions.finish_step(
            deployment.pk, name, outcome.status, error=outcome.error, skip_reason=outcome.skip_reason
        )
        _record_progress(deployment.pk, ctx)
        cut = states.apply(steps, name, outcome)
        if states.failed_step(steps) == name:
            error = states.failure_error(name, outcome)
            if name == "deploy" and deployment.kind == Deployment.Kind.DEPLOY and not outcome.is_cancel:
                error += rollback.after_failed_deploy(deployment, ctx.spec)
        if cut:
            transitions.skip_cut_short(deployment.pk, cut, name)
    final = states.final_status(steps)
    if not transitions.finish(deployment.pk, final, error):
        return
    if final == Deployment.Status.DEPLOYED:
        rollback.after_success(deployment)
        if deployment.kind == Deployment.Kind.DEPLOY:
            retention.prune(deployment.app, ctx.spec)


def _run_one(ctx: Context, name: str, heartbeat: Heartbeat) -> Outcome:
    """Run one step and say how it ended."""
    if name not in states.ALWAYS_RUNS and heartbeat.cancel_by:
        return Outcome.cancelled(heartbeat.cancel_by)
    if name == "clone":
        make_workdir(ctx.workdir)  # 0700 whatever the umask: it holds the clone
        transitions.set_fields(ctx.deployment_id, workdir=str(ctx.workdir))
    try:
        step_module(name).run(ctx)
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
    finally:
        transitions.set_fields(ctx.deployment_id, step_pgid=None)
    return Outcome.succeeded()


def _record_progress(deployment_id, ctx):
    fields = {}
    if ctx.commit_sha:
        fields["commit_sha"] = ctx.commit_sha
    if ctx.image:
        fields["image"] = ctx.image
    if fields:
        transitions.set_fields(deployment_id, **fields)
