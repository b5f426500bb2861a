"""Deployment events: persisted first, published after the commit.

Every state change writes an Event row in the same transaction as the change
(`record`), numbered per deployment. Only after that transaction commits is
the event sent to the channel layer, so nobody is ever told about a state
that could still roll back. Publishing is best-effort: with Redis down the
deploy goes on, and clients catch up from the Event table.
"""

import asyncio
import atexit
import json
import logging
import queue
import threading

from django.db import connection, transaction
from django.utils import timezone

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


def record(deployment_id: int, kind: str, payload: dict) -> int:
    """Append an event for the deployment; call inside the state change's
    transaction. Returns its seq; the event is published once that
    transaction commits."""
    assert transaction.get_connection().in_atomic_block, "events are written with their state change"
    # The UPDATE takes the deployment's row lock until commit, so concurrent
    # writers (the worker and a cancel) get consecutive numbers, never equal.
    # Raw SQL, without the ORM's per-row work: the worker waits for it.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE deployments_deployment d SET last_event_seq = last_event_seq + 1"
            " FROM apps_registry_app a WHERE d.id = %s AND a.id = d.app_id"
            " RETURNING d.last_event_seq, d.public_id, a.name",
            [deployment_id],
        )
        seq, public_id, app_name = cursor.fetchone()
        cursor.execute(
            "INSERT INTO deployments_event (deployment_id, seq, kind, payload, created_at)"
            " VALUES (%s, %s, %s, %s::jsonb, %s)",
            [deployment_id, seq, kind, json.dumps(payload), timezone.now()],
        )
    published(public_id, app_name, [(seq, kind, payload)])
    return seq


def published(public_id, app_name: str, numbered: list[tuple[int, str, dict]]) -> None:
    """Publish these stored events (seq, kind, payload) once the transaction
    that wrote them commits (at once outside one)."""
    public_id = str(public_id)
    for seq, kind, payload in numbered:
        body = {**_message(public_id, seq, kind, payload), "app": app_name}
        transaction.on_commit(lambda body=body: publisher.send([GROUP], body))


# What the output writer sets on the deployment with a batch of output.
OUTPUT_FIELDS = ("step_pgid", "workdir")


def append_log(deployment_id: int, name: str, text: str, fields: dict) -> None:
    """transitions.append_outputs of one step's text: one statement, so one round trip
    and its own transaction (the output writer's common case, written while
    the step runs and waited for at its end). The deployment's row is
    updated first, so its lock is taken in the same order as every other
    state change takes it."""
    assert set(fields) <= set(OUTPUT_FIELDS), fields
    payload = {"step": name, "text": text}
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH d AS (UPDATE deployments_deployment d SET last_event_seq = d.last_event_seq + 1"
            + "".join(f", {column} = %s" for column in fields) +
            " FROM apps_registry_app a WHERE d.id = %s AND a.id = d.app_id"
            " RETURNING d.id, d.last_event_seq, d.public_id, a.name),"
            " s AS (UPDATE deployments_step SET output = COALESCE(output, '') || %s"
            " WHERE deployment_id = (SELECT id FROM d) AND name = %s),"
            " e AS (INSERT INTO deployments_event (deployment_id, seq, kind, payload, created_at)"
            " SELECT id, last_event_seq, %s, %s::jsonb, %s FROM d)"
            " SELECT last_event_seq, public_id, name FROM d",
            [*fields.values(), deployment_id, text, name, LOG, json.dumps(payload), timezone.now()],
        )
        row = cursor.fetchone()
    if row is None:
        raise Deployment.DoesNotExist(f"deployment {deployment_id} does not exist")
    seq, public_id, app_name = row
    published(public_id, app_name, [(seq, LOG, payload)])


# Every event goes to one channel-layer group, whoever watches it: a batch
# of events is one Redis message (one round trip), and each web process's
# hub (livehub.py) hands each event to the viewers of its routes.
GROUP = "deployments"


def routes(deployment: str, app_name: str) -> list[str]:
    """What viewers follow that an event belongs to: its deployment (its id as
    text), its app, all deployments."""
    return [deployment_route(deployment), app_route(app_name), ALL_ROUTE]


def deployment_route(deployment: str) -> str:
    return f"deployment.{deployment}"


def app_route(app_name: str) -> str:
    return f"app.{app_name}"


ALL_ROUTE = "all"


def _message(public_id: str, seq: int, kind: str, payload: dict) -> dict:
    """An event as the channel layer carries it (and consumers.py reads it)."""
    return {"type": "deploy.event", "deployment": public_id, "seq": seq, "event": kind, "payload": payload}


# --- reading them back (consumers.py: replays and gap filling) ----------------


def stored_after(public_id, after, before=None, limit=None, above_id=None):
    """Stored events of a deployment with after < seq (< before), as channel-layer messages."""
    rows = Event.objects.filter(deployment__public_id=public_id, seq__gt=after)
    if before is not None:
        rows = rows.filter(seq__lt=before)
    if above_id is not None:
        rows = rows.filter(id__gt=above_id)
    rows = rows.order_by("seq").values_list("seq", "kind", "payload")
    if limit is not None:
        rows = rows[:limit]
    public_id = str(public_id)
    return [_message(public_id, seq, kind, payload) for seq, kind, payload in rows]


def last_id():
    """The largest Event id committed so far (0: none)."""
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def behind(last_sent):
    """Of the deployments in `last_sent` ({public id: seq}), those with later events stored."""
    rows = Deployment.objects.filter(public_id__in=list(last_sent)).values_list("public_id", "last_event_seq")
    return [str(public_id) for public_id, seq in rows if seq > last_sent[str(public_id)]]


class Publisher:
    """Sends committed events to the channel layer from a background thread.

    The pipeline never waits for Redis: a slow or absent Redis cannot slow
    or stop a deploy. Order is kept (one thread, one FIFO queue); what cannot
    be sent is dropped with a warning, and clients recover it from the Event
    table by sequence number.

    Whatever queued up while a send was under way goes out together: a
    worker committing events back to back is never more than one batch ahead
    of its viewers, and each group gets one message per batch. A process that
    ends (`deploy --no-wait`, `cancel`) first waits, boundedly, until what it
    committed was sent: the thread is a daemon and would die with its queue.
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

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far was sent (or dropped); False on timeout."""
        if self._thread is None:
            return True  # nothing was ever queued in this process
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def _run(self):
        from channels.layers import get_channel_layer

        loop = None
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = [item for item in batch if not isinstance(item, threading.Event)]
            try:
                # Looked up each time (a dictionary lookup): settings changes,
                # such as a test pointing the layer elsewhere, take effect.
                layer = get_channel_layer()
                if events and layer is not None:
                    messages = _batches(events)
                    direct = _direct_publish(layer)
                    if direct is not None:
                        direct(messages)
                    else:
                        loop = loop or asyncio.new_event_loop()
                        loop.run_until_complete(self._send(layer, messages))
            except Exception as exc:  # Redis down or slow: the Event row is the truth.
                if events:
                    first, last = events[0][1], events[-1][1]
                    log.warning("could not publish %d event(s) (%s #%s to %s #%s): %s", len(events),
                                first["event"], first["seq"], last["event"], last["seq"], exc)
            # Flush markers are set only once what was queued before them is out.
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()

    @staticmethod
    async def _send(layer, messages):
        sends = [layer.group_send(group, message) for group, message in messages.items()]
        await asyncio.wait_for(asyncio.gather(*sends), timeout=SEND_TIMEOUT)


def _batches(events) -> dict:
    """One channel-layer message per group for the whole batch, in commit
    order: a batch costs one round trip to Redis per group (record() uses
    one), not one per event, and each viewer's process wakes once for it."""
    batches = {}
    for groups, body in events:
        for group in groups:
            batches.setdefault(group, []).append(body)
    return {group: {"type": BATCH, "events": bodies} for group, bodies in batches.items()}


class DirectPublish:
    """What RedisPubSubChannelLayer.group_send does, without an event loop:
    PUBLISH of the layer's own encoding of the message to the group's pub/sub
    channel on the group's shard. A synchronous Redis client per shard, kept
    for the process: the worker publishes a batch at every step boundary and
    output flush, and an asyncio round per batch cost it more CPU than the
    PUBLISH itself. Layers it does not know (another backend, Sentinel hosts)
    keep the channel layer's own group_send."""

    def __init__(self, layer, hosts, prefix):
        import redis

        self.layer = layer
        self.prefix = prefix
        self.shards = [
            redis.Redis.from_url(host.pop("address"), socket_timeout=SEND_TIMEOUT,
                                 socket_connect_timeout=SEND_TIMEOUT, **host)
            if "address" in host else
            redis.Redis(socket_timeout=SEND_TIMEOUT, socket_connect_timeout=SEND_TIMEOUT, **host)
            for host in hosts
        ]

    @classmethod
    def of(cls, layer):
        from channels_redis.pubsub import RedisPubSubChannelLayer
        from channels_redis.utils import decode_hosts

        # vars(): the layer answers unknown attributes from its per-loop layer,
        # which needs a running loop.
        config = vars(layer)
        if type(layer) is not RedisPubSubChannelLayer or config.get("_args"):
            return None
        kwargs = config.get("_kwargs", {})
        hosts = [dict(host) for host in decode_hosts(kwargs.get("hosts"))]
        if set(kwargs) - {"hosts", "prefix"} or any("master_name" in host for host in hosts):
            return None
        return cls(layer, hosts, kwargs.get("prefix", "asgi"))

    def __call__(self, messages: dict) -> None:
        from channels_redis.utils import _consistent_hash

        for group, message in messages.items():
            channel = f"{self.prefix}__group__{group}"
            shard = self.shards[_consistent_hash(channel, len(self.shards))]
            shard.publish(channel, self.layer.serialize(message))


_direct = (None, None)  # (layer, its DirectPublish or None)


def _direct_publish(layer):
    """The DirectPublish of this layer object, made once per layer (None: use
    its group_send); a new layer (settings changed) gets a new one."""
    global _direct
    if _direct[0] is not layer:
        _direct = (layer, DirectPublish.of(layer))
    return _direct[1]


# The channel-layer message type of a batch.
BATCH = "deploy.events"
# Events sent to the channel layer at once, at most; a bound on one batch's
# memory and on what one Redis failure drops.
MAX_BATCH = 500
# Seconds a batch may take before it is dropped (Redis hung): clients catch up.
SEND_TIMEOUT = 2
# Seconds a process that ends waits for its events to be sent.
EXIT_FLUSH_TIMEOUT = 5

publisher = Publisher()
# A short-lived process (the CLI's deploy --no-wait, cancel) commits an event
# and exits: without this its daemon publisher thread dies with the event
# still queued, and viewers of the app and of all deployments never hear of it.
atexit.register(publisher.flush, EXIT_FLUSH_TIMEOUT)
