"""Every write that changes a deployment's state, each with its event row.

Narrow, conditional updates: a transition names the state it expects to move
from, and checks the row count, so a second worker, a cancel and crash
recovery can never both win. No function here holds a transaction across a
subprocess or network call.
"""

import json
import os
import socket
import uuid

from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

from deployments import events, notifications, states
from deployments.models import NOT_IN_FLIGHT, TERMINAL_STATUSES, Deployment, DeploymentStatus, Step, StepStatus
from deployments.outcomes import cancel_message

# Identifies this worker process: host, pid, and a nonce so a reused pid on a
# restarted host is a different owner.
_NONCE = uuid.uuid4().hex[:8]


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_NONCE}"


def parse_owner(owner: str) -> tuple[str, int, str]:
    host, pid, nonce = owner.rsplit(":", 2)
    return host, int(pid), nonce


def create(app, ref: str, *, user=None, name: str = "", via: str = "cli", runtime: str = "", kind: str = "deploy",
           **links) -> Deployment:
    """Queue a deployment of `app`; the caller has validated everything.

    `links` are a rollback's rollback_to/replaces or a restore's snapshot.
    """
    # No savepoint inside a caller's transaction (a request's, which also
    # queues the task): all of it commits or none does.
    with transaction.atomic(savepoint=False):
        deployment = Deployment.objects.create(
            app=app, ref=ref, requested_by=user, requested_by_name=name,
            requested_via=via, runtime=runtime, kind=kind,
            priority=1 if kind == Deployment.Kind.DEPLOY else 0, **links,
        )
        Step.objects.bulk_create(
            Step(deployment=deployment, position=i, name=step)
            for i, step in enumerate(states.STEPS_BY_KIND[kind])
        )
        events.record(deployment.pk, events.QUEUED, events.deployment_payload(deployment))
    return deployment


def claim(deployment_id: int, owner: str) -> bool:
    """queued -> cloning for this worker, if it is this app's turn.

    Returns True when this call claimed the deployment. False when another
    delivery already did, it was cancelled, an earlier deployment of the same
    app is still queued (FIFO), or one is in flight (the partial unique index
    one_in_flight_deployment_per_app rejects the update).
    """
    now = timezone.now()
    # Ahead in the app's queue: a lower priority number, or the same and older.
    earlier_queued = Deployment.objects.filter(
        Q(priority__lt=OuterRef("priority")) | Q(priority=OuterRef("priority"), pk__lt=OuterRef("pk")),
        app_id=OuterRef("app_id"),
        status=DeploymentStatus.QUEUED,
    )
    try:
        with transaction.atomic():
            claimed = (
                Deployment.objects.filter(pk=deployment_id, status=DeploymentStatus.QUEUED)
                .exclude(Exists(earlier_queued))
                .update(
                    status=states.IN_FLIGHT_STATUS["clone"],
                    owner=owner,
                    heartbeat_at=now,
                    started_at=now,
                )
            )
    except IntegrityError:
        return False
    return bool(claimed)


def heartbeat(deployment_id: int, owner: str) -> str | None:
    """Refresh the owner's heartbeat; returns the cancel request, if any."""
    Deployment.objects.filter(pk=deployment_id, owner=owner).in_flight().update(heartbeat_at=timezone.now())
    return (
        Deployment.objects.filter(pk=deployment_id)
        .values_list("cancel_requested_by", flat=True)
        .first()
    )


def set_fields(deployment_id: int, **fields) -> None:
    Deployment.objects.filter(pk=deployment_id).update(**fields)


def start_step(deployment_id: int, owner: str, name: str) -> bool:
    """Step `name` runs now, with no step ending before it (the first one);
    False when this owner no longer holds the deployment in flight
    (recovered or finished by someone else meanwhile). One statement, as a
    boundary between two steps is (advance)."""
    return _boundary(deployment_id, owner, [], name, timezone.now(), {})


def finish_step(deployment_id: int, name: str, status: StepStatus, *, error: str = "", skip_reason: str = "") -> Step:
    with transaction.atomic():
        return _finish_step(deployment_id, name, status, timezone.now(), error=error, skip_reason=skip_reason)


def _finish_step(deployment_id: int, name: str, status: StepStatus, now, *, error: str = "",
                 skip_reason: str = "") -> Step:
    step = Step.objects.select_for_update().get(deployment_id=deployment_id, name=name)
    if step.status in states.DONE:
        return step  # recovery already closed it
    step.status = status
    step.finished_at = now
    step.duration = now - step.started_at if step.started_at else None
    step.error = error
    step.skip_reason = skip_reason
    step.save(update_fields=["status", "finished_at", "duration", "error", "skip_reason"])
    events.record(deployment_id, events.STEP, _step_ended(name, status, step.duration, error, skip_reason))
    return step


def _step_ended(name, status, duration, error, skip_reason) -> dict:
    """The deploy.step event of a step that ended."""
    payload = {"step": name, "status": status}
    if duration is not None:
        payload["duration"] = round(duration.total_seconds(), 3)
    if skip_reason:
        payload["reason"] = skip_reason
    if error:
        payload["error"] = error
    return payload


# What advance() may set on the deployment besides its own columns.
LEARNED = ("commit_sha", "commit_subject", "commit_author", "commit_time", "image")


def advance(deployment_id: int, owner: str, name: str, outcome, *, cut: list[str], then: str | None,
            final: DeploymentStatus | None = None, error: str = "", failed_step: str = "", **fields) -> bool:
    """Step `name` ended with `outcome`; the steps in `cut` will never run;
    then step `then` starts, or (then=None) the deployment ends `final` with
    `error` and `failed_step` (the step that failed it, for failure_reason).
    `fields` are the deployment's columns learned during the step (LEARNED);
    the step's process group is cleared.

    A boundary between two steps is one statement (BOUNDARY), so one round
    trip and its own transaction, where separate transitions took ten
    statements and the worker waits for it at every boundary. The end of
    the deployment adds its final status in the same transaction.

    False when this owner no longer holds the deployment (recovered or
    finished meanwhile): then nothing is written.
    """
    assert set(fields) <= set(LEARNED), fields
    now = timezone.now()
    ending = [(name, outcome.status, outcome.error, outcome.skip_reason)]
    ending += [(other, StepStatus.SKIPPED, "", f"{name} failed") for other in cut]
    if then is not None:
        return _boundary(deployment_id, owner, ending, then, now, fields)
    with transaction.atomic():
        return (_boundary(deployment_id, owner, ending, None, now, fields)
                and _finish(deployment_id, final, error, now, failed_step=failed_step))


# A step boundary, in the order its events tell it: the deployment (its next
# step's status, its events' numbers; its row lock, taken first, orders this
# against a cancel's event), the steps that ended (`name` and those cut
# short), the one that starts, and a deploy.step event for each, with the
# same payloads as _step_ended. The steps are counted first, so the numbers
# stay without gaps even were a step's row missing.
BOUNDARY = """
WITH n AS (
    SELECT count(*) AS n FROM deployments_step WHERE deployment_id = %(id)s AND name = ANY(%(all)s)
), d AS (
    UPDATE deployments_deployment d SET last_event_seq = d.last_event_seq + n.n, step_pgid = NULL,
        heartbeat_at = %(now)s{changes}
    FROM apps_registry_app a, n
    WHERE d.id = %(id)s AND d.owner = %(owner)s AND NOT (d.status = ANY(%(not_in_flight)s)) AND a.id = d.app_id
    RETURNING d.id, d.last_event_seq - n.n AS seq0, d.public_id, a.name
), t AS (
    SELECT * FROM unnest(%(names)s::text[], %(statuses)s::text[], %(errors)s::text[], %(reasons)s::text[])
        WITH ORDINALITY AS t(name, status, error, skip_reason, ord)
), ended AS (
    UPDATE deployments_step s SET status = t.status, finished_at = %(now)s, duration = %(now)s - s.started_at,
        error = t.error, skip_reason = t.skip_reason
    FROM d, t WHERE s.deployment_id = d.id AND s.name = t.name
    RETURNING t.ord, jsonb_build_object('step', t.name, 'status', t.status)
        || CASE WHEN s.duration IS NULL THEN '{{}}'::jsonb
           ELSE jsonb_build_object('duration', round(extract(epoch FROM s.duration), 3)) END
        || CASE WHEN t.skip_reason = '' THEN '{{}}'::jsonb ELSE jsonb_build_object('reason', t.skip_reason) END
        || CASE WHEN t.error = '' THEN '{{}}'::jsonb ELSE jsonb_build_object('error', t.error) END AS payload
), started AS (
    UPDATE deployments_step s SET status = %(running)s, started_at = %(now)s
    FROM d WHERE s.deployment_id = d.id AND s.name = %(then)s
    RETURNING cardinality(%(names)s::text[]) + 1 AS ord, jsonb_build_object('step', s.name, 'status', s.status) AS payload
), e AS (
    INSERT INTO deployments_event (deployment_id, seq, kind, payload, created_at)
    SELECT d.id, d.seq0 + row_number() OVER (ORDER BY b.ord), %(kind)s, b.payload, %(now)s
    FROM d, (SELECT * FROM ended UNION ALL SELECT * FROM started) b
    RETURNING seq, payload
)
SELECT d.public_id, d.name, e.seq, e.payload FROM d LEFT JOIN e ON true ORDER BY e.seq
"""


def _boundary(deployment_id, owner, ending, then, now, fields) -> bool:
    """BOUNDARY: the steps in `ending` (name, status, error, skip reason)
    end, then step `then` (if any) starts."""
    changes = {**fields, **({"status": str(states.IN_FLIGHT_STATUS[then])} if then is not None else {})}
    names = [step for step, *_ in ending]
    with connection.cursor() as cursor:
        cursor.execute(
            BOUNDARY.format(changes="".join(f", {column} = %({column})s" for column in changes)),
            {**changes, "id": deployment_id, "owner": owner, "now": now, "then": then,
             "not_in_flight": [str(status) for status in NOT_IN_FLIGHT], "all": [*names, *([then] if then else [])],
             "names": names, "statuses": [str(status) for _, status, *_ in ending],
             "errors": [step_error for _, _, step_error, _ in ending],
             "reasons": [reason for *_, reason in ending],
             "running": str(StepStatus.RUNNING), "kind": events.STEP},
        )
        rows = cursor.fetchall()
    if not rows:
        return False  # not this owner's any more: nothing was written
    public_id, app_name = rows[0][:2]
    # Django has psycopg hand jsonb over as text.
    numbered = [(seq, events.STEP, json.loads(payload)) for _, _, seq, payload in rows if seq is not None]
    events.published(public_id, app_name, numbered)
    if len(numbered) != len(ending) + (then is not None):
        missing = set(names + [then]) - {payload["step"] for *_, payload in numbered} - {None}
        raise Step.DoesNotExist(f"deployment {deployment_id} has no step {', '.join(sorted(missing))}")
    return True


def skip_cut_short(deployment_id: int, names: list[str], failed: str) -> None:
    """Mark steps that will not run because `failed` failed."""
    with transaction.atomic():
        _skip_cut_short(deployment_id, names, failed, timezone.now())


def _skip_cut_short(deployment_id: int, names: list[str], failed: str, now) -> None:
    for name in names:
        _finish_step(deployment_id, name, StepStatus.SKIPPED, now, skip_reason=f"{failed} failed")


def append_output(deployment_id: int, name: str, text: str) -> None:
    """Append captured output to a step (already redacted by the caller)."""
    append_outputs(deployment_id, [(name, text)])


def append_outputs(deployment_id: int, pieces: list[tuple[str, str]], **fields) -> None:
    """Append each (step, text) to its step, with its deploy.log event, and set
    the deployment's `fields` (step_pgid, workdir), in one transaction."""
    # PostgreSQL text cannot hold NUL, and a command may print one.
    pieces = [(name, text.replace("\x00", "\ufffd")) for name, text in pieces if text]
    if not pieces and not fields:
        return
    if len(pieces) == 1:
        events.append_log(deployment_id, *pieces[0], fields)
        return
    with transaction.atomic():
        if fields:
            Deployment.objects.filter(pk=deployment_id).update(**fields)
        for name, text in pieces:
            Step.objects.filter(deployment_id=deployment_id, name=name).update(
                output=Concat(F("output"), Value(text))
            )
            events.record(deployment_id, events.LOG, {"step": name, "text": text})


def finish(deployment_id: int, status: DeploymentStatus, error: str = "", failed_step: str = "") -> bool:
    """Move an unfinished deployment to a terminal status. False if already terminal."""
    with transaction.atomic():
        return _finish(deployment_id, status, error, timezone.now(), failed_step=failed_step)


def _finish(deployment_id: int, status: DeploymentStatus, error: str, now, failed_step: str = "") -> bool:
    assert status in TERMINAL_STATUSES
    done = (
        Deployment.objects.filter(pk=deployment_id)
        .unfinished()
        .update(status=status, error=error, finished_at=now, step_pgid=None, failed_step=failed_step)
    )
    if not done:
        return False
    deployment = Deployment.objects.select_related("app", "requested_by").get(pk=deployment_id)
    # A cancelled deployment ends with deploy.failed too (its status says
    # cancelled): followers stop on deploy.completed or deploy.failed.
    kind = events.COMPLETED if status == DeploymentStatus.DEPLOYED else events.FAILED
    events.record(deployment_id, kind, events.deployment_payload(deployment))
    return True


def request_cancel(deployment: Deployment, by: str) -> str:
    """Ask for a deployment to stop. A queued one ends at once; a running one
    is stopped by its worker (which kills the step's process tree and still
    runs cleanup). Returns the deployment's status afterwards."""
    error = cancel_message(by)
    with transaction.atomic():
        if Deployment.objects.filter(pk=deployment.pk, status=DeploymentStatus.QUEUED).update(
            status=DeploymentStatus.CANCELLED, error=error, finished_at=timezone.now(),
            cancel_requested_at=timezone.now(), cancel_requested_by=by,
        ):
            Step.objects.filter(deployment_id=deployment.pk).update(
                status=StepStatus.SKIPPED, skip_reason="cancelled before it started"
            )
            fresh = Deployment.objects.select_related("app", "requested_by").get(pk=deployment.pk)
            events.record(deployment.pk, events.CANCELLED, {"by": by})
            events.record(deployment.pk, events.FAILED, events.deployment_payload(fresh))
            notifications.deployment_ended(deployment.pk)  # once this commits
            return fresh.status
        Deployment.objects.filter(pk=deployment.pk, cancel_requested_at__isnull=True).unfinished().update(
            cancel_requested_at=timezone.now(), cancel_requested_by=by
        )
        status = Deployment.objects.values_list("status", flat=True).get(pk=deployment.pk)
        if status not in TERMINAL_STATUSES:
            events.record(deployment.pk, events.CANCELLED, {"by": by})
        return status


def fail_abandoned(deployment: Deployment, error: str) -> bool:
    """Fail a deployment on behalf of its dead owner: its running step fails,
    the pending ones are skipped, all with `error`.

    Conditional on the status and owner the caller saw: if the owner was alive
    after all and moved on, or another recovery got here first, nothing is
    written and False is returned.
    """
    with transaction.atomic():
        taken = Deployment.objects.filter(
            pk=deployment.pk, status=deployment.status, owner=deployment.owner
        ).update(status=DeploymentStatus.FAILED, error=error, finished_at=timezone.now(), step_pgid=None)
        if not taken:
            return False
        _close_steps(deployment.pk, error)
    return True


def fail_crashed(deployment_id: int, owner: str, error: str) -> bool:
    """Fail a deployment whose own worker hit an unexpected error: the running
    step fails with `error`, the pending ones are skipped.

    Conditional on this owner still holding it in flight: if it already
    finished (the error came after), or recovery took it, nothing is written
    and False is returned.
    """
    with transaction.atomic():
        taken = (
            Deployment.objects.filter(pk=deployment_id, owner=owner)
            .in_flight()
            .update(status=DeploymentStatus.FAILED, error=error, finished_at=timezone.now(), step_pgid=None)
        )
        if not taken:
            return False
        _close_steps(deployment_id, error)
    return True


def _close_steps(deployment_id: int, error: str) -> None:
    """The steps of a deployment failed from outside its pipeline: the running
    one fails, the pending ones are skipped, all with `error`; then the
    deployment's deploy.failed event. Inside the caller's transaction."""
    now = timezone.now()
    for step in Step.objects.select_for_update().filter(deployment_id=deployment_id, status=StepStatus.RUNNING):
        # The step that was running is the one that failed it (failure_reason).
        Deployment.objects.filter(pk=deployment_id).update(failed_step=step.name)
        step.status = StepStatus.FAILED
        step.error = error
        step.finished_at = now
        step.duration = now - step.started_at if step.started_at else None
        step.save(update_fields=["status", "error", "finished_at", "duration"])
        events.record(deployment_id, events.STEP, {"step": step.name, "status": StepStatus.FAILED, "error": error})
    # skip_reason is a short column; the whole error is on the deployment.
    Step.objects.filter(deployment_id=deployment_id, status=StepStatus.PENDING).update(
        status=StepStatus.SKIPPED, skip_reason=error[:255]
    )
    fresh = Deployment.objects.select_related("app", "requested_by").get(pk=deployment_id)
    events.record(deployment_id, events.FAILED, events.deployment_payload(fresh))


def next_queued(app_id: int) -> int | None:
    """The app's next queued deployment: rollbacks and restores first, then FIFO."""
    return (
        Deployment.objects.filter(app_id=app_id)
        .queued()
        .order_by("priority", "pk")
        .values_list("pk", flat=True)
        .first()
    )


def mark_rolled_back(deployment_id: int, by: Deployment) -> bool:
    """The deployment `by` (a successful rollback) replaced ends rolled_back.
    A cancelled one stays cancelled: someone stopped it, and its record says so."""
    with transaction.atomic():
        done = Deployment.objects.filter(
            pk=deployment_id, status__in=[DeploymentStatus.DEPLOYED, DeploymentStatus.FAILED]
        ).update(status=DeploymentStatus.ROLLED_BACK)
        if not done:
            return False
        deployment = Deployment.objects.select_related("app", "requested_by").get(pk=deployment_id)
        payload = events.deployment_payload(deployment)
        payload["rolled_back_by"] = str(by.public_id)
        events.record(deployment_id, events.ROLLED_BACK, payload)
    return True
