"""Tell people a deployment ended: the targets an app's infraspec names
(`notify:`), each configured in Norn's environment (NORN_NOTIFY_<TARGET>_*).

`deployment_ended(deployment_id)` is called where a deployment ends (the
pipeline, crash recovery, a cancel of a queued deployment). Once the
transaction that ended it commits, it records one NotificationDelivery per
target that asked for the event and queues a django-q2 task per delivery
(deployments.tasks.send_notification), which makes one attempt
(`attempt`); a retryable failure queues the next attempt after the next of
NORN_NOTIFY_RETRY_DELAYS. Nothing here ever delays or fails a deployment:
errors are logged and recorded on the delivery, never raised.

Only target names reach the database, logs and events: URLs, secrets and
addresses stay in the environment, and are masked in any error text.
docs/notifications.md is the user's description.
"""

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Warning, register
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from apps_registry.models import App
from deployments import notify_senders
from deployments.models import Deployment, DeploymentKind, DeploymentStatus, NotificationDelivery
from deployments.runner import Redactor

log = logging.getLogger(__name__)

TASK = "deployments.tasks.send_notification"
MAX_ERROR = 500
Status = NotificationDelivery.Status


# --- targets: configured in the environment -----------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    kind: str = ""  # webhook, slack or email; "" when it cannot be told
    url: str = ""
    secret: str = ""
    emails: tuple[str, ...] = ()
    problem: str = ""  # why it cannot be used; names variables, never their values

    @property
    def secrets(self):
        """What must never be shown: the URL (a Slack URL is its key), its path, the secret, the addresses."""
        path = urlsplit(self.url).path if self.url else ""
        return [self.url, self.secret, *self.emails, *([path] if len(path) > 1 else [])]


def variable_prefix(name: str) -> str:
    """ops-slack -> NORN_NOTIFY_OPS_SLACK (then _URL, _SECRET, _EMAIL, _KIND)."""
    return "NORN_NOTIFY_" + name.upper().replace("-", "_")


def target(name: str, environ=None) -> Target:
    """The target `name` as Norn's environment configures it (read at each
    attempt, so a fixed variable takes effect at the worker's next start)."""
    environ = os.environ if environ is None else environ
    prefix = variable_prefix(name)
    url, secret = environ.get(f"{prefix}_URL", "").strip(), environ.get(f"{prefix}_SECRET", "")
    emails = tuple(e.strip() for e in environ.get(f"{prefix}_EMAIL", "").split(",") if e.strip())
    kind = environ.get(f"{prefix}_KIND", "").strip().lower()
    if kind and kind not in notify_senders.KINDS:
        return Target(name, problem=f"{prefix}_KIND={kind[:20]!r} is not a kind; use webhook, slack or email")
    if not kind:
        if url:
            kind = "slack" if urlsplit(url).hostname == "hooks.slack.com" else "webhook"
        elif emails:
            kind = "email"
        else:
            return Target(name, problem=f"not configured: set {prefix}_URL (and {prefix}_SECRET) for a webhook, "
                                        f"{prefix}_URL and {prefix}_KIND=slack for Slack, or {prefix}_EMAIL")
    found = Target(name, kind, url, secret, emails)
    problem = _problem(found, prefix)
    return Target(name, kind, url, secret, emails, problem) if problem else found


def _problem(t: Target, prefix: str) -> str:
    if t.kind == "email":
        if not t.emails:
            return f"not configured: set {prefix}_EMAIL (comma-separated addresses)"
        for position, address in enumerate(t.emails, 1):
            try:
                validate_email(address)
            except ValidationError:
                return f"{prefix}_EMAIL: entry {position} is not an email address"
        return ""
    if not t.url:
        return f"not configured: set {prefix}_URL"
    parts = urlsplit(t.url)
    try:
        parts.port  # noqa: B018 (raises for a bad port)
    except ValueError:
        return f"{prefix}_URL has a bad port; use http(s)://HOST[:PORT]/PATH"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{prefix}_URL is not an http(s) URL; use http(s)://HOST[:PORT]/PATH"
    if t.kind == "webhook" and not t.secret:
        return f"not configured: set {prefix}_SECRET (the key the payload is signed with)"
    return ""


# --- events -------------------------------------------------------------------


def event_for(status: str, kind: str) -> str:
    """The event a deployment that ended `status` is announced as: a rollback
    that went live is rolled_back, a restore restored, a deploy deployed; any
    other terminal status by its own name (failed, cancelled)."""
    if status == DeploymentStatus.DEPLOYED:
        return {DeploymentKind.ROLLBACK: "rolled_back", DeploymentKind.RESTORE: "restored"}.get(kind, "deployed")
    return str(status)


def deployment_ended(deployment_id: int) -> None:
    """Queue the notices of the deployment's end, once the current
    transaction (if any) commits. Never raises."""
    try:
        transaction.on_commit(lambda: _record_and_queue(deployment_id))
    except Exception:
        log.exception("could not arrange the notifications of deployment %s", deployment_id)


def _record_and_queue(deployment_id):
    try:
        for delivery_id in record(deployment_id):
            enqueue(delivery_id, 1)
    except Exception:
        log.exception("could not record the notifications of deployment %s", deployment_id)


def record(deployment_id: int) -> list[int]:
    """One delivery per target that asked for the deployment's event; a
    second call for the same end adds none. Returns the ids to send."""
    deployment = Deployment.objects.select_related("app").filter(pk=deployment_id).first()
    # Every way a deployment ends sets finished_at, whatever the terminal
    # status (and one this module has not heard of is announced by its name).
    if deployment is None or deployment.finished_at is None:
        return []
    event = event_for(deployment.status, deployment.kind)
    to_send = []
    for rule in deployment.app.infraspec.notify:
        if event not in rule.events:
            continue
        found = target(rule.target)
        delivery, created = NotificationDelivery.objects.get_or_create(
            deployment=deployment, target=rule.target,
            defaults={"event": event, "kind": found.kind if not found.problem else "",
                      "status": Status.NOT_CONFIGURED if found.problem else Status.PENDING,
                      "error": found.problem[:MAX_ERROR]},
        )
        if not created:
            continue
        if found.problem:
            log.warning("deployment %s: notification target %s: %s", deployment_id, rule.target, found.problem)
        else:
            to_send.append(delivery.pk)
    return to_send


# --- sending ------------------------------------------------------------------


def enqueue(delivery_id: int, attempt: int, delay: int = 0) -> bool:
    """Queue attempt number `attempt` of the delivery, now or after `delay`
    seconds (a django-q2 Schedule, run once). A failure is logged and
    recorded on the delivery (it fails), never raised."""
    from django_q.models import Schedule
    from django_q.tasks import async_task

    try:
        if delay:
            Schedule.objects.get_or_create(
                name=f"notify-{delivery_id}-{attempt}",
                defaults={"func": TASK, "args": f"{int(delivery_id)}, {int(attempt)}",
                          "schedule_type": Schedule.ONCE, "repeats": -1,
                          "next_run": timezone.now() + timedelta(seconds=delay)},
            )
        else:
            async_task(TASK, delivery_id, attempt, task_name=f"notify-{delivery_id}-{attempt}")
        return True
    except Exception as exc:
        log.exception("could not queue attempt %s of notification %s", attempt, delivery_id)
        NotificationDelivery.objects.filter(pk=delivery_id).update(
            status=Status.FAILED, error=f"could not queue attempt {attempt}: {exc.__class__.__name__}: {exc}"[:MAX_ERROR]
        )
        return False


def attempt(delivery_id: int, number: int) -> str:
    """Make attempt `number` of the delivery, if it is still due (a second
    run of the same task finds it taken and does nothing); returns the
    delivery's status afterwards, or "skipped"."""
    now = timezone.now()
    # The claim: attempts moves from number - 1 to number once.
    if not NotificationDelivery.objects.filter(pk=delivery_id, status=Status.PENDING, attempts=number - 1).update(
        attempts=number, last_attempt_at=now
    ):
        return "skipped"
    delivery = NotificationDelivery.objects.select_related("deployment__app", "deployment__requested_by").get(
        pk=delivery_id
    )
    found = target(delivery.target)
    if found.problem:
        _save(delivery, Status.NOT_CONFIGURED, error=found.problem)
        return delivery.status
    redact = Redactor(found.secrets)
    try:
        data = notify_senders.payload(delivery, deployment_url(delivery.deployment))
        result = notify_senders.SENDERS[found.kind](found, data)
    except Exception as exc:  # a bug of ours must not leave it pending for ever
        log.exception("notification %s raised", delivery_id)
        result = notify_senders.Result(False, error=f"internal error: {exc.__class__.__name__}: {exc}")
    error = redact(result.error)
    if result.sent:
        _save(delivery, Status.SENT, kind=found.kind, code=result.code, sent_at=timezone.now())
        return delivery.status
    delays = settings.NORN_NOTIFY_RETRY_DELAYS
    if result.retry and number <= len(delays):
        wait = max(delays[number - 1], result.retry_after or 0)
        _save(delivery, Status.PENDING, kind=found.kind, code=result.code,
              error=f"attempt {number}: {error}; next attempt in {wait} s")
        enqueue(delivery.pk, number + 1, delay=wait)
        return delivery.status
    gave_up = f" (gave up after {number} attempts)" if result.retry else ""
    _save(delivery, Status.FAILED, kind=found.kind, code=result.code, error=error + gave_up)
    log.warning("notification %s of deployment %s to %s failed: %s",
                delivery.event, delivery.deployment_id, delivery.target, error + gave_up)
    return delivery.status


def _save(delivery, status, *, kind=None, code=None, error="", sent_at=None):
    delivery.status = status
    delivery.response_code = code
    delivery.error = error.replace("\x00", "\ufffd")[:MAX_ERROR]
    fields = ["status", "response_code", "error"]
    if kind is not None:
        delivery.kind = kind
        fields.append("kind")
    if sent_at is not None:
        delivery.sent_at = sent_at
        fields.append("sent_at")
    delivery.save(update_fields=fields)


def deployment_url(deployment) -> str:
    """The deployment's page at NORN_URL (the server's address), or "" when it is not set."""
    base = settings.NORN_URL
    if not base:
        return ""
    scheme = {"ws": "http", "wss": "https"}.get(urlsplit(base).scheme)
    if scheme:
        base = scheme + base[base.index(":"):]
    return base.rstrip("/") + deployment.get_absolute_url()


def send_again(deliveries) -> tuple[int, int]:
    """The admin's Send again: each finished delivery (sent, failed, not
    configured) starts over at attempt 1. Pending ones are left to their
    queued attempt. Returns (queued, left pending)."""
    queued = pending = 0
    for delivery in deliveries:
        if delivery.status == Status.PENDING:
            pending += 1
            continue
        found = target(delivery.target)
        updated = NotificationDelivery.objects.filter(pk=delivery.pk, status=delivery.status).update(
            status=Status.NOT_CONFIGURED if found.problem else Status.PENDING, attempts=0,
            error=found.problem[:MAX_ERROR], response_code=None,
        )
        if updated and not found.problem:
            queued += enqueue(delivery.pk, 1)
    return queued, pending


# --- the system check -----------------------------------------------------------


@register("norn")
def check_notify_targets(app_configs=None, **kwargs):
    """norn.W010: an app's infraspec names a target the environment does not
    configure (its deployments still run; their deliveries say what to set)."""
    try:
        specs = list(App.objects.filter(status=App.Status.VALID).values_list("name", "spec"))
    except Exception:
        return []  # the database check reports an unreachable database
    problems = {}
    for app_name, spec in specs:
        for rule in (spec or {}).get("notify") or ():
            problem = target(rule["target"]).problem
            if problem:
                problems.setdefault((rule["target"], problem), []).append(app_name)
    return [
        Warning(f"notification target {name!r} (named by {', '.join(sorted(apps))}): {problem}",
                hint="Its deliveries are recorded as not configured; docs/notifications.md lists the variables.",
                id="norn.W010")
        for (name, problem), apps in sorted(problems.items())
    ]
