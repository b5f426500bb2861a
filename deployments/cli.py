"""What the deployment commands share: their base class and exit codes
(norn_project/cli.py, docs/cli.md), finding a deployment by (a prefix of) its
id, queueing a request, and printing a deployment's events as they come.

The commands in deployments/management/commands/ import this, never each other.
"""

import json
import logging
import uuid
from argparse import ArgumentParser
from collections.abc import Callable

from django.core.management.base import BaseCommand, CommandError
from django.db.models import CharField
from django.db.models.functions import Cast

from apps_registry.models import App
from deployments.client import StreamedEvent, follow_deployment
from deployments.models import Deployment, DeploymentStatus, Event
from norn_project.cli import BAD_REQUEST, FAILED, Command

__all__ = ["BAD_REQUEST", "FAILED", "Command", "FollowPrinter", "add_follow_arguments", "find_app",
           "find_deployment", "following", "queue_and_follow"]

SYMBOLS = {"running": "…", "succeeded": "✓", "failed": "✗", "skipped": "–"}


def find_deployment(text: str) -> Deployment:
    """The deployment a user named by its UUID or its first 8+ characters."""
    text = text.strip().lower()
    try:
        return Deployment.objects.select_related("app").get(public_id=uuid.UUID(text))
    except ValueError:
        pass
    except Deployment.DoesNotExist:
        raise CommandError(f"no deployment {text}", returncode=BAD_REQUEST) from None
    if len(text) < 8 or not all(c in "0123456789abcdef-" for c in text):
        raise CommandError(
            f"{text!r} is not a deployment id; use the UUID or at least its first 8 characters",
            returncode=BAD_REQUEST,
        )
    matches = list(
        Deployment.objects.select_related("app")
        .annotate(id_text=Cast("public_id", CharField()))
        .filter(id_text__startswith=text)[:2]
    )
    if not matches:
        raise CommandError(f"no deployment {text}", returncode=BAD_REQUEST)
    if len(matches) > 1:
        raise CommandError(f"{text} matches several deployments; give more characters", returncode=BAD_REQUEST)
    return matches[0]


def queue_and_follow(
    command: BaseCommand,
    make_request: Callable[[], Deployment],
    announce: Callable[[Deployment], str],
    *,
    no_wait: bool,
    json: bool,
    db: bool,
    verbosity: int,
) -> None:
    """What deploy, rollback and restore_snapshot share: queue it (a refused
    request exits BAD_REQUEST, 2), then print its id (--no-wait) or follow it
    to the end (exit 0 when it succeeded, FAILED, 1, when not)."""
    # Imported here, not with the module: `--help` and the commands that
    # queue nothing need not load the request path (discovery, git, the queue).
    from deployments.requests import DeployRequestError

    # The task queue logs every enqueue at INFO; the CLI has its own output.
    logging.getLogger("django-q").setLevel(logging.WARNING)
    try:
        deployment = make_request()
    except DeployRequestError as exc:
        raise CommandError(str(exc), returncode=BAD_REQUEST) from None
    if no_wait:
        command.stdout.write(str(deployment.public_id))
        return
    following(command, deployment)
    if not json:
        command.stdout.write(announce(deployment))
    status = FollowPrinter(command, as_json=json, use_db=db, verbosity=verbosity).run(deployment)
    if status != DeploymentStatus.DEPLOYED:
        raise SystemExit(FAILED)


def following(command: BaseCommand, deployment: Deployment) -> None:
    """From now on, Ctrl-C says (one line, on stderr: stdout may be JSON for a
    program) that only the following stops (norn_project/cli.py prints it)."""
    command.interrupted = (
        f"Stopped following; the deployment goes on (cancel it with: manage.py cancel {deployment.public_id})"
    )


def add_follow_arguments(parser: ArgumentParser) -> None:
    """The options of every command that follows a deployment."""
    parser.add_argument("--json", action="store_true", help="Print one JSON event per line.")
    parser.add_argument(
        "--db", action="store_true",
        help="Follow by reading the database instead of the Norn server's live stream.",
    )


class FollowPrinter:
    """Prints a deployment's events as they arrive; returns its final status.

    Events come from deployments.client.follow_deployment: the live stream,
    or the database when that is unavailable (said on stderr).
    """

    def __init__(self, command: BaseCommand, as_json: bool = False, use_db: bool = False, verbosity: int = 1) -> None:
        self.command = command
        self.out = command.stdout
        self.err = command.stderr
        self.style = command.style
        self.as_json = as_json
        self.use_db = use_db
        self.verbosity = verbosity
        self.deployment = None
        self.last_kind = None
        self.warned_idle = False

    def run(self, deployment: Deployment, after: int = 0) -> str:
        self.deployment = deployment
        following(self.command, deployment)
        events = follow_deployment(
            deployment, after=after, use_db=self.use_db, idle_callback=self.idle,
            warn=lambda text: self.err.write(self.style.WARNING(text)),
            info=self.note if self.verbosity >= 2 else None,
        )
        try:
            for event in events:
                self.last_kind = event.kind
                self.show(event)
        finally:
            # Closes the WebSocket now: on Ctrl-C or a closed stdout (`| head`)
            # its reader thread must not keep the command alive.
            events.close()
        deployment.refresh_from_db()
        return deployment.status

    def note(self, text: str) -> None:
        self.err.write(text)

    def idle(self, idle_for: float) -> None:
        # Only a deployment whose last news is "queued" can be waiting for a
        # worker; checking the database just then keeps a long step query-free.
        if self.warned_idle or self.as_json or idle_for <= 5 or self.last_kind not in (None, "deploy.queued"):
            return
        deployment = Deployment.objects.only("status", "app_id").get(pk=self.deployment.pk)
        if deployment.status != DeploymentStatus.QUEUED:
            return
        self.warned_idle = True
        ahead = Deployment.objects.filter(app_id=deployment.app_id, pk__lt=deployment.pk).unfinished().count()
        reason = f"{ahead} earlier deployment(s) of this app first" if ahead else "a worker: is manage.py qcluster running?"
        self.out.write(self.style.WARNING(f"Still queued, waiting for {reason}"))

    def show(self, event: StreamedEvent | Event) -> None:
        if self.as_json:
            self.out.write(json.dumps({"seq": event.seq, "event": event.kind, "payload": event.payload}))
            return
        payload = event.payload
        if event.kind == "deploy.step":
            status = payload["status"]
            line = f"  {payload['step']:<9} {SYMBOLS.get(status, ' ')} {status}"
            if "duration" in payload:
                line += f" in {payload['duration']:.1f}s"
            if payload.get("reason"):
                line += f": {payload['reason']}"
            style = {"failed": self.style.ERROR, "succeeded": self.style.SUCCESS}.get(status, str)
            self.out.write(style(line))
            if status == "failed" and payload.get("error"):
                for text in payload["error"].splitlines():
                    self.out.write(f"            {text}")
        elif event.kind == "deploy.completed":
            kind = payload.get("kind", "deploy")
            if kind == "restore":
                text = f"Restored {payload['app']}'s database from snapshot {payload['snapshot']}"
            elif kind == "rollback":
                text = f"Rolled back {payload['app']} to {payload['image']}"
            else:
                text = f"Deployed {payload['app']} {payload['commit_sha'][:12]} as {payload['image']}"
            self.out.write(self.style.SUCCESS(text))
        elif event.kind == "deploy.failed":
            self.out.write(self.style.ERROR(f"Deployment {payload['id']} failed: {payload['error']}"))
        elif event.kind == "deploy.cancelled":
            self.out.write(self.style.WARNING(f"Cancel requested by {payload['by']}"))


def find_app(name: str) -> App:
    """The App row named `name`, valid or not, even when its directory is gone."""
    try:
        return App.objects.get(name=name)
    except App.DoesNotExist:
        known = ", ".join(App.objects.values_list("name", flat=True))
        raise CommandError(f"unknown app {name!r}; known apps: {known or 'none'}", returncode=BAD_REQUEST) from None
