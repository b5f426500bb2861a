"""Deployment events: persisted first, published after the commit.

Every state change writes an Event row in the same transaction as the change
(`record`), numbered per deployment. Only after that transaction commits is
the event sent to the channel layer, so nobody is ever told about a state
that could still roll back. Publishing is best-effort: with Redis down the
deploy goes on, and clients catch up from the Event table.
"""

import asyncio
import logging
import queue
import threading
import uuid

from django.db import connection, transaction

from deployments.models import Deployment, Event

log = logging.getLogger(__name__)

QUEUED = "deploy.queued"
STEP = "deploy.step"
LOG = "deploy.log"
FAILED = "deploy.failed"
COMPLETED = "deploy.completed"
CANCELLED = "deploy.cancelled"
ROLLED_BACK = "deploy.rolled_back"


def deployment_payload(deployment: Deployment) -> dict:
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
        "kind": deployment.kind,
        "rollback_to": str(deployment.rollback_to.public_id) if deployment.rollback_to_id else None,
        "replaces": str(deployment.replaces.public_id) if deployment.replaces_id else None,
        "snapshot": deployment.snapshot_id,
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


def record(deployment_id: int, kind: str, payload: dict) -> Event:
    """Append an event for the deployment; call inside the state change's transaction."""
    assert transaction.get_connection().in_atomic_block, "events are written with their state change"
    # The UPDATE takes the deployment's row lock until commit, so concurrent
    # writers (the worker and a cancel) get consecutive numbers, never equal.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE deployments_deployment d SET last_event_seq = last_event_seq + 1"
            " FROM apps_registry_app a WHERE d.id = %s AND a.id = d.app_id"
            " RETURNING d.last_event_seq, d.public_id, a.name",
            [deployment_id],
        )
        seq, public_id, app_name = cursor.fetchone()
    event = Event.objects.create(deployment_id=deployment_id, seq=seq, kind=kind, payload=payload)
    groups = group_names(public_id, app_name)
    body = message(event, public_id)
    transaction.on_commit(lambda: publisher.send(groups, body))
    return event


def group_names(public_id: uuid.UUID, app_name: str) -> list[str]:
    """The channel-layer groups an event goes to: its deployment, its app, all."""
    return [f"deployment.{public_id.hex}", f"app.{app_name}", "deployments"]


def message(event: Event, public_id: uuid.UUID) -> dict:
    return {
        "type": "deploy.event",
        "deployment": str(public_id),
        "seq": event.seq,
        "event": event.kind,
        "payload": event.payload,
    }


class Publisher:
    """Sends committed events to the channel layer from a background thread.

    The pipeline never waits for Redis: a slow or absent Redis cannot slow
    or stop a deploy. Order is kept (one thread, one FIFO queue); what cannot
    be sent is dropped with a warning, and clients recover it from the Event
    table by sequence number.
    """

    def __init__(self):
        self._queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread = None

    def send(self, groups: list[str], body: dict) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="norn-events", daemon=True)
                self._thread.start()
        self._queue.put((groups, body))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far was sent (or dropped)."""
        done = threading.Event()
        self._queue.put(done)
        if self._thread is not None:
            done.wait(timeout)

    def _run(self):
        from channels.layers import get_channel_layer

        loop = asyncio.new_event_loop()
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            groups, body = item
            # Looked up each time (a dictionary lookup): settings changes,
            # such as a test pointing the layer elsewhere, take effect.
            layer = get_channel_layer()
            if layer is None:
                continue
            try:
                loop.run_until_complete(self._send(layer, groups, body))
            except Exception as exc:  # Redis down or slow: the Event row is the truth.
                log.warning("could not publish %s #%s: %s", body["event"], body["seq"], exc)

    @staticmethod
    async def _send(layer, groups, body):
        for group in groups:
            await asyncio.wait_for(layer.group_send(group, body), timeout=2)


publisher = Publisher()
