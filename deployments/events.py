"""Deployment events: persisted first, published after the commit.

Every state change writes an Event row in the same transaction as the change
(`record`), numbered per deployment. Only after that transaction commits is
the event sent to the channel layer, so nobody is ever told about a state
that could still roll back. Publishing is best-effort: with Redis down the
deploy goes on, and clients catch up from the Event table.
"""

import logging

from asgiref.sync import async_to_sync
from django.db import transaction
from django.db.models import F

from deployments.models import Deployment, Event

log = logging.getLogger(__name__)

QUEUED = "deploy.queued"
STEP = "deploy.step"
LOG = "deploy.log"
FAILED = "deploy.failed"
COMPLETED = "deploy.completed"
CANCELLED = "deploy.cancelled"


def deployment_payload(deployment):
    """The full deployment object, as the seed's events carry it."""
    return {
        "id": str(deployment.public_id),
        "app": deployment.app.name,
        "ref": deployment.ref,
        "commit_sha": deployment.commit_sha,
        "image": deployment.image,
        "status": deployment.status,
        "error": deployment.error,
        "requested_by": deployment.requested_by_label,
        "runtime": deployment.runtime,
        "queued_at": _iso(deployment.queued_at),
        "started_at": _iso(deployment.started_at),
        "finished_at": _iso(deployment.finished_at),
        "steps": [
            {
                "name": step.name,
                "status": step.status,
                "duration": step.duration.total_seconds() if step.duration else None,
                "skip_reason": step.skip_reason,
            }
            for step in deployment.steps.order_by("position")
        ],
    }


def _iso(value):
    return value.isoformat() if value else None


def record(deployment_id, kind, payload):
    """Append an event for the deployment; call inside the state change's transaction."""
    assert transaction.get_connection().in_atomic_block, "events are written with their state change"
    # The UPDATE takes the deployment's row lock until commit, so concurrent
    # writers (the worker and a cancel) get consecutive numbers, never equal.
    Deployment.objects.filter(pk=deployment_id).update(last_event_seq=F("last_event_seq") + 1)
    seq = Deployment.objects.values_list("last_event_seq", flat=True).get(pk=deployment_id)
    event = Event.objects.create(deployment_id=deployment_id, seq=seq, kind=kind, payload=payload)
    transaction.on_commit(lambda: publish(event))
    return event


def group_names(event):
    deployment = Deployment.objects.select_related("app").only("public_id", "app__name").get(pk=event.deployment_id)
    return [
        f"deployment.{deployment.public_id.hex}",
        f"app.{deployment.app.name}",
        "deployments",
    ]


def message(event, deployment_public_id):
    return {
        "type": "deploy.event",
        "deployment": str(deployment_public_id),
        "seq": event.seq,
        "event": event.kind,
        "payload": event.payload,
    }


def publish(event):
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    try:
        groups = group_names(event)
        public_id = groups[0].split(".", 1)[1]
        for group in groups:
            async_to_sync(layer.group_send)(group, message(event, public_id))
    except Exception as exc:  # Redis down or slow: the Event row is the truth.
        log.warning("could not publish %s #%s: %s", event.kind, event.seq, exc)
