"""Deploy on push: queue a deploy of a branch's new commit, coalescing pushes
that arrive while one waits, and poll the branches of apps whose repository
cannot send webhooks (docs/autodeploy.md).

The webhooks (deployments/hooks.py) and the poller both end in `deploy_commit`.
"""

import contextlib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps_registry import discovery
from apps_registry.infraspec import redact_url
from apps_registry.models import App
from deployments import events, gitauth, requests, runner, workdirs
from deployments.models import (
    AutoDeployState, AutoDeployTrigger, Deployment, DeploymentKind, DeploymentStatus, WebhookDelivery,
)

log = logging.getLogger(__name__)

RETARGETED = "deploy.retargeted"
# Requests that may be retargeted to a newer commit while still queued; a
# deploy someone asked for by hand keeps the commit they chose.
AUTO_VIA = ("webhook", "poll")
# The wait after failed polls doubles from NORN_POLL_INTERVAL up to this.
MAX_BACKOFF = timedelta(hours=1)
LS_REMOTE_TIMEOUT = 60
# pg_advisory_lock(class, app id): pushes and polls of one app take turns.
_LOCK_CLASS = 0x4E6F726E & 0x7FFFFFFF


@dataclass
class Outcome:
    # "queued", "retargeted", "covered" (a deploy queued or running has the
    # commit) or "deployed" (the commit is live already: nothing queued).
    action: str
    deployment: Deployment | None
    message: str

    def as_dict(self):
        found = self.deployment
        return {
            "result": self.action,
            "deployment": str(found.public_id) if found else None,
            "message": self.message,
        }


@dataclass
class Push:
    """What a push says, as much as the deployment keeps of it."""

    branch: str
    after: str
    before: str = ""
    pusher: str = ""
    provider: str = ""
    delivery_id: str = ""
    commits: tuple = ()  # ({"sha", "subject"}, ...), oldest first
    commits_total: int = 0


def deploy_commit(app: App, push: Push, *, via: str) -> Outcome:
    """Deploy push.after of `app` unless a deployment has it already; while a
    webhook or poll deploy of the app is still queued, retarget it to this
    commit instead of queueing another. Raises requests.DeployRequestError."""
    with _app_lock(app.pk):
        pending = list(
            Deployment.objects.filter(app=app, kind=DeploymentKind.DEPLOY)
            .unfinished()
            .order_by("-pk")
            .only("pk", "public_id", "ref", "commit_sha", "status", "requested_via")
        )
        for deployment in pending:
            if push.after in (deployment.ref, deployment.commit_sha):
                _record(deployment, push, via, "covered")
                message = f"deployment {deployment.short_id} already deploys {push.after[:12]}"
                return Outcome("covered", deployment, message)
        if not pending:
            live = Deployment.objects.live_for(app)
            if live is not None and live.commit_sha == push.after:
                return Outcome("deployed", live, f"{push.after[:12]} is live already (deployment {live.short_id})")
        queued = [d for d in pending if d.status == DeploymentStatus.QUEUED and d.requested_via in AUTO_VIA]
        if queued:
            # The commit must be there before a deployment is pointed at it,
            # as request_deployment checks it for a new one (outside any
            # transaction: it may be a network call).
            spec = requests.find_app(app.name).infraspec
            if spec.repo:
                requests.verify_ref_exists(spec.repo.url, push.after)
            retargeted = _retarget(queued[0].pk, push, via)
            if retargeted is not None:
                message = f"queued deployment {retargeted.short_id} now deploys {push.after[:12]}"
                return Outcome("retargeted", retargeted, message)
        deployment = requests.request_deployment(app.name, push.after, name=push.pusher[:150], via=via)
        _record(deployment, push, via, "queued")
        return Outcome("queued", deployment, f"queued deployment {deployment.short_id} of {push.after[:12]}")


def _retarget(deployment_id: int, push: Push, via: str):
    """Point a still-queued deployment at push.after; None when a worker
    claimed it meanwhile (then a new one is queued behind it)."""
    with transaction.atomic():
        # The row lock makes a worker's claim (queued -> cloning) wait for
        # this commit; it then clones the new ref.
        deployment = (
            Deployment.objects.select_for_update()
            .select_related("app")
            .filter(pk=deployment_id, status=DeploymentStatus.QUEUED)
            .first()
        )
        if deployment is None:
            return None
        previous = deployment.ref
        deployment.ref = push.after
        deployment.save(update_fields=["ref"])
        events.record(deployment.pk, RETARGETED, {**events.deployment_payload(deployment), "previous_ref": previous})
        _record(deployment, push, via, "retargeted")
    return deployment


def _record(deployment: Deployment, push: Push, via: str, action: str) -> None:
    AutoDeployTrigger.objects.create(
        deployment=deployment, source=via, provider=push.provider, delivery_id=push.delivery_id[:200],
        pusher=push.pusher[:150], branch=push.branch[:255], before=push.before[:64], after=push.after,
        commits=list(push.commits[-AutoDeployTrigger.MAX_COMMITS:]),
        commits_total=max(push.commits_total, len(push.commits)), action=action,
    )


@contextlib.contextmanager
def _app_lock(app_id: int):
    """A session lock, not a transaction: it is held across the ls-remote that
    checks the commit, and holds no row."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", [_LOCK_CLASS, app_id])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_LOCK_CLASS, app_id])


def note_seen(app: App, sha: str) -> None:
    """A webhook told us the branch's tip: the poller need not deploy it again."""
    AutoDeployState.objects.update_or_create(app=app, defaults={"last_seen_sha": sha})


def autodeploy_apps():
    """Valid apps with a repository and `repo.autoDeploy: true`."""
    apps = App.objects.filter(status=App.Status.VALID).exclude(repo_url="")
    return [app for app in apps if app.infraspec.repo and app.infraspec.repo.auto_deploy]


# --- polling -------------------------------------------------------------------


class PollError(Exception):
    pass


def poll_due_apps():
    """What the poll schedule runs (tasks.poll_autodeploy, every minute):
    poll each autoDeploy app whose turn it is. Safe to run twice at once:
    deploy_commit finds the deployment the other run queued."""
    interval = settings.NORN_POLL_INTERVAL
    if not interval:
        return {"polled": 0, "off": True}
    discovery.ensure_fresh()
    apps = autodeploy_apps()
    states = {s.app_id: s for s in AutoDeployState.objects.filter(app__in=apps)}
    now = timezone.now()
    polled = {}
    for app in apps:
        state = states.get(app.pk) or AutoDeployState(app=app)
        if state.next_check_at is not None and state.next_check_at > now:
            continue
        try:
            polled[app.name] = poll_app(app, state, interval)
        except Exception:
            # One app's surprise (a database error) must not stop the others'.
            log.exception("auto-deploy poll of %s failed", app.name)
            polled[app.name] = "error: see the worker's log"
    return {"polled": len(polled), "results": polled}


# Push webhook deliveries are remembered this long (their ids answer a
# provider's redelivery with "already handled"); providers redeliver within
# days. The minute's poll task forgets older ones, at most FORGET_BATCH rows
# a run, so a backlog never makes one long DELETE.
KEEP_DELIVERIES = timedelta(days=30)
FORGET_BATCH = 10_000


def forget_old_deliveries() -> int:
    """Delete WebhookDelivery rows older than KEEP_DELIVERIES; how many."""
    cutoff = timezone.now() - KEEP_DELIVERIES
    old = WebhookDelivery.objects.filter(received_at__lt=cutoff).order_by("received_at", "id")
    deleted, _ = WebhookDelivery.objects.filter(pk__in=old.values("pk")[:FORGET_BATCH]).delete()
    return deleted


def poll_app(app: App, state: AutoDeployState, interval: int) -> str:
    """ls-remote the app's branch once; deploy it when it moved. Returns what
    happened, for the task's result."""
    repo = app.infraspec.repo
    now = timezone.now()
    state.checked_at = now
    try:
        sha = ls_remote(repo.url, repo.branch)
        result = _on_tip(app, state, sha, repo.branch)
    except (PollError, requests.DeployRequestError) as exc:
        state.failures += 1
        wait = min(timedelta(seconds=interval) * 2 ** state.failures, MAX_BACKOFF)
        state.next_check_at = now + wait
        message = str(exc)
        if state.failures == 1 or message != state.last_error:
            # Once per problem, not once per tick.
            log.warning("auto-deploy poll of %s failed: %s (next try in %s)", app.name, message, wait)
        state.last_error = message
        state.save()
        return f"error: {message}"
    if state.failures:
        log.info("auto-deploy poll of %s works again after %d failures", app.name, state.failures)
    state.failures = 0
    state.last_error = ""
    state.next_check_at = now + timedelta(seconds=interval)
    state.save()
    return result


def _on_tip(app, state, sha, branch) -> str:
    if sha == state.last_seen_sha:
        return "unchanged"
    push = Push(branch=branch, after=sha, before=state.last_seen_sha, commits_total=0)
    if not state.last_seen_sha:
        # First sight: the tip may be old news. Deploy it only when the app
        # has a live deployment of another commit; an app never deployed
        # waits for its first deploy by hand (or a push).
        live = Deployment.objects.live_for(app)
        if live is None or live.commit_sha in ("", sha):
            state.last_seen_sha = sha
            return f"first sight of {sha[:12]}: nothing to deploy"
    outcome = deploy_commit(app, push, via="poll")
    state.last_seen_sha = sha
    return outcome.message


def ls_remote(url: str, branch: str) -> str:
    """The SHA at refs/heads/<branch> of `url`, with the clone step's
    credential rules; PollError (redacted) when it cannot be read."""
    root = workdirs.make_root()
    scratch = Path(tempfile.mkdtemp(prefix=".poll-", dir=root))  # 0700: it may hold the askpass script
    redact = runner.Redactor(gitauth.secrets())
    shown = redact_url(url)
    try:
        env = gitauth.git_env(scratch, url)
        try:
            listed = runner.run(
                ["git", "ls-remote", "--heads", "--exit-code", "--", url, f"refs/heads/{branch}"],
                env=env, timeout=LS_REMOTE_TIMEOUT, redact=redact, capture=True,
            )
        except runner.CommandError as exc:
            raise PollError(f"could not list {shown}: {exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if listed.returncode == 2:
        raise PollError(f"branch {branch!r} does not exist in {shown}")
    if listed.returncode != 0:
        detail = listed.tail.strip()[-300:] or f"git exited with {listed.returncode}"
        raise PollError(f"could not list {shown}: {detail}")
    for line in listed.text.splitlines():
        sha, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return sha
    raise PollError(f"branch {branch!r} does not exist in {shown}")
