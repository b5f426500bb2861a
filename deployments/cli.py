"""What the deployment commands share: their base class and exit codes
(norn_project/cli.py, docs/cli.md), finding a deployment by (a prefix of) its
id, queueing a request, and printing a deployment's events as they come.

The commands in deployments/management/commands/ import this, never each other.
"""

import argparse
import json as jsonlib
import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError

from apps_registry.models import App
from deployments.client import follow_deployment
from deployments.models import Deployment, DeploymentStatus, Event
from deployments.stream import SYMBOLS, Progress, StreamedEvent, as_json_line, redraws, still_queued
from norn_project.cli import BAD_REQUEST, FAILED, OK, UNAVAILABLE, Command

__all__ = ["BAD_REQUEST", "FAILED", "SYMBOLS", "Command", "FollowPrinter", "continue_from_database", "find_app",
           "find_deployment", "following", "iso", "json_line", "listed", "one_of", "positive", "queue_and_follow"]


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1 (`--limit`)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def one_of(what: str, values: Iterable[str]) -> Callable[[str], str]:
    """An argparse type that takes one of `values`; a usage error (exit 2)
    names the option (argparse adds it), the value and every valid one."""
    valid = list(values)

    def check(text: str) -> str:
        if text not in valid:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {what}; valid: {', '.join(valid)}")
        return text

    check.__name__ = what  # argparse names the type in some messages
    return check


def iso(moment: datetime | None) -> str | None:
    """A time as `--json` gives it: ISO 8601 in UTC, or null."""
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def json_line(record: dict) -> str:
    """One record as `--json` prints it: one JSON object per line."""
    return jsonlib.dumps(record, ensure_ascii=False)


def listed(command: BaseCommand, rows: list, *, as_json: bool, record: Callable[[object], dict], empty: str) -> bool:
    """What the listing commands share: with --json, each row as one JSON
    line (none for no rows); else, for no rows, `empty`. True when that was
    all there is to print; the table itself is the command's."""
    if as_json:
        for row in rows:
            command.stdout.write(json_line(record(row)))
        return True
    if not rows:
        command.stdout.write(empty)
        return True
    return False


def find_deployment(text: str) -> Deployment:
    """The deployment a user named by its UUID or its first 8+ characters."""
    try:
        return Deployment.objects.select_related("app").named(text)
    except Deployment.DoesNotExist:
        raise CommandError(f"no deployment {text.strip().lower()}", returncode=BAD_REQUEST) from None
    except ValueError as exc:
        raise CommandError(str(exc), returncode=BAD_REQUEST) from None


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
        self.progress = Progress(in_place=not as_json and redraws(self.out))

    def run(self, deployment: Deployment, after: int = 0) -> str:
        self.deployment = deployment
        following(self.command, deployment)
        events = follow_deployment(
            deployment, after=after, use_db=self.use_db, idle_callback=self.idle,
            warn=self.warn,
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
        self.progress.moved()
        self.err.write(text)

    def warn(self, text: str) -> None:
        self.progress.moved()
        self.err.write(self.style.WARNING(text))

    def idle(self, idle_for: float) -> None:
        # Only a deployment whose last news is "queued" can be waiting for a
        # worker; checking the database just then keeps a long step query-free.
        if self.warned_idle or self.as_json or idle_for <= 5 or self.last_kind not in (None, "deploy.queued"):
            return
        deployment = Deployment.objects.only("status", "app_id").get(pk=self.deployment.pk)
        if deployment.status != DeploymentStatus.QUEUED:
            return
        self.warned_idle = True
        self.progress.moved()
        self.out.write(self.style.WARNING(still_queued(deployment.queued_ahead())))

    def show(self, event: StreamedEvent | Event) -> None:
        if self.as_json:
            self.out.write(as_json_line(event))
            return
        for prefix, text, style in self.progress.render(event):
            self.out.write(prefix + (getattr(self.style, style)(text) if style else text))


def continue_from_database(public_id: str, *, after: int, as_json: bool, verbosity: int, no_color: bool,
                           force_color: bool) -> int:
    """The fast path's follow (deployments/remote.py) goes on from the database
    after event `after`, when the server went away; its exit code."""
    command = Command(no_color=no_color, force_color=force_color)
    try:
        deployment = Deployment.objects.select_related("app").get(public_id=public_id)
        following(command, deployment)
        status = FollowPrinter(command, as_json=as_json, use_db=True, verbosity=verbosity).run(deployment, after=after)
    except (OperationalError, InterfaceError) as exc:
        command.stderr.write(f"CommandError: cannot reach Norn's database (DATABASE_URL): {str(exc).strip()[:200]}")
        return UNAVAILABLE
    return OK if status == DeploymentStatus.DEPLOYED else FAILED


def find_app(name: str) -> App:
    """The App row named `name`, valid or not, even when its directory is gone."""
    try:
        return App.objects.get(name=name)
    except App.DoesNotExist:
        known = ", ".join(App.objects.values_list("name", flat=True))
        raise CommandError(f"unknown app {name!r}; known apps: {known or 'none'}", returncode=BAD_REQUEST) from None
