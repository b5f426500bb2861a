"""`manage.py app_status <app> [--json]`: what the runtime says about an app right now.

Asks the runtime NORN_RUNTIME names (the Docker engine or the Kubernetes API),
not Norn's own records: whether the app runs, which image, restarts, its port
or replicas. For a cron app, also its schedule.
"""

import json as jsonlib
from datetime import datetime

from django.conf import settings
from django.core.management.base import CommandError
from django.utils import timezone
from django_q.models import Schedule

from apps_registry.models import App
from deployments import runtimes, scheduler
from deployments.cli import Command as NornCommand
from deployments.cli import find_app
from deployments.models import CronJob
from norn_project.cli import UNAVAILABLE


def runtime_status(app: App) -> tuple[str, dict | None]:
    """(runtime name, what it reports about the app or None). Raises CommandError."""
    name = settings.NORN_RUNTIME
    runtime = runtimes.named(name)
    try:
        if name == "kubernetes":
            return name, runtime.status(app.name, app.infraspec.namespace)
        return name, runtime.status(app.name)
    except runtime.Error as exc:
        raise CommandError(f"cannot ask the {name} runtime about {app.name}: {exc}", returncode=UNAVAILABLE) from None


def cron_status(app: App) -> dict | None:
    job = CronJob.objects.filter(app=app).first()
    if job is None:
        return None
    entry = Schedule.objects.filter(name=scheduler.schedule_name(app.name)).first()
    return {
        "schedule": job.schedule,
        "command": job.command,
        "image": job.image,
        "scheduled": entry is not None,
        "next_run": entry.next_run.isoformat() if entry and entry.next_run else None,
    }


class Command(NornCommand):
    help = (
        "Show what the runtime (NORN_RUNTIME) reports about an app now: whether it runs, its "
        "image, restarts, port or replicas, and a cron app's schedule."
    )

    def add_arguments(self, parser):
        parser.add_argument("app")
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead.")

    def handle(self, *args, app, json=False, **options):
        app = find_app(app)
        runtime, status = runtime_status(app)
        cron = cron_status(app)
        if json:
            self.stdout.write(jsonlib.dumps({"app": app.name, "runtime": runtime, "status": status, "cron": cron}))
            return
        if status is None:
            self.stdout.write(f"{app.name}: nothing of it runs on {runtime}")
        elif runtime == "kubernetes":
            self._kubernetes(app, status)
        else:
            self._docker(app, status)
        if cron:
            when = cron["next_run"] and timezone.localtime(datetime.fromisoformat(cron["next_run"]))
            self.stdout.write(
                f"  cron: {cron['schedule']!r} runs {cron['command']} in {cron['image']}; "
                + (f"next run {when:%Y-%m-%d %H:%M %Z}" if when else "not scheduled")
            )

    def _docker(self, app, s):
        self.stdout.write(f"{app.name}: {s['state']} (container {s['container']} on the local Docker engine)")
        self.stdout.write(f"  image: {s['image'] or '?'} ({s['image_id']})")
        if s["deployment"]:
            self.stdout.write(f"  deployment: {s['deployment']}")
        if s["running"]:
            self.stdout.write(f"  running since {s['started_at']}, {s['restarts']} restart(s)")
        else:
            self.stdout.write(f"  exited with status {s['exit_code']} at {s['finished_at']}, {s['restarts']} restart(s)")
        for domain in s["domains"]:
            self.stdout.write(f"  domain: {domain} (the ingress) -> 127.0.0.1:{s['backend_port']}")
        if s["port"]:
            self.stdout.write(f"  port: {s['port']} (the ingress) -> 127.0.0.1:{s['backend_port']}")

    def _kubernetes(self, app, s):
        self.stdout.write(f"{app.name}: {s['state']} (deployment {s['namespace']}/{s['name']} on Kubernetes)")
        self.stdout.write(f"  image: {s['image'] or '? (no container named ' + s['name'] + ')'}")
        if s["deployment"]:
            self.stdout.write(f"  deployment: {s['deployment']}")
        self.stdout.write(
            f"  replicas: {s['replicas']} wanted, {s['updated']} updated, {s['ready']} ready, {s['available']} available"
        )
        self.stdout.write(f"  {s['message']}")
        if not s["managed"]:
            self.stdout.write("  (not created by Norn: it has no app.kubernetes.io/managed-by=norn label)")
