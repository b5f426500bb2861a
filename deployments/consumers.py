"""WebSocket consumers streaming deployment events, as docs/live.md specifies.

Three endpoints (one deployment, one app, everything) share one base: it
authorizes the user deployments/ws_auth.py authenticated (session or API
token), joins the channel-layer group, replays stored events on request and
forwards live ones, so that each deployment's events reach the client in
`seq` order, each exactly once.
"""

import asyncio
import json
import uuid
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from channels.layers import BaseChannelLayer

from apps_registry.models import App
from deployments import events
from deployments.models import Deployment, Event

# Seconds between keepalive pings; read at every tick, so tests can shorten it.
PING_INTERVAL = 20
# Events read from the database per query while replaying: a long deployment
# has thousands of log events, and one query for all of them would hold them
# (and the connection) at once.
REPLAY_BATCH = 500

NOT_AUTHENTICATED = 4401
FORBIDDEN = 4403
NOT_FOUND = 4404
BAD_REQUEST = 4400

VIEW_PERMISSION = "deployments.view_deployment"

# The largest client frame read; clients send only small `resume` messages.
MAX_FRAME_BYTES = 64 * 1024
# Sequence numbers are bigints; anything longer is no seq (and int() of a
# few thousand digits raises).
MAX_SEQ = 2**63 - 1
# Checks group names as Channels' own layers do; the pub/sub layer itself
# has no such check (any Redis channel name goes), but an app name that is
# no valid group name cannot have been deployed (see AppConsumer).
_GROUP_NAMES = BaseChannelLayer()


class EventStream(AsyncJsonWebsocketConsumer):
    """What the three endpoints share; subclasses say which group they follow.

    Channels dispatches one message at a time per consumer: while a replay
    awaits the database, live events for the same deployment wait in the
    channel layer, and reach `deploy_event` only after the replay recorded
    what it sent. That ordering is what makes the de-duplication below safe.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Last seq sent to this client, per deployment (public id string).
        self.last_sent = {}
        self.closing = False
        self.pinger = None
        # Whether a live event came since the last ping tick (see ping_forever).
        self.heard = False
        # The largest Event id committed when this client subscribed (app and
        # all endpoints): of a deployment first seen live, the events after
        # it are the ones this client missed; earlier ones are history.
        self.watermark = None

    # --- subclass hooks -------------------------------------------------------

    def find_group(self):
        """Runs in a worker thread. The group to join, or None for 4404."""
        raise NotImplementedError

    def covers(self, deployment):
        """Whether a `resume` may name this deployment (a _DeploymentRef)."""
        raise NotImplementedError

    async def start(self):
        """Called once the group is joined; the deployment endpoint replays here."""

    # --- connection -----------------------------------------------------------

    async def connect(self):
        # Accept first: the protocol answers with close codes, which a
        # rejected handshake (HTTP 403) cannot carry.
        await self.accept()
        code = await database_sync_to_async(self.authorize)()
        group = None
        if code is None and _has_nul(self.scope["url_route"]["kwargs"]):
            # PostgreSQL cannot compare text with NUL in it; no name has one.
            code = NOT_FOUND
        elif code is None:
            group = await database_sync_to_async(self.find_group)()
            if group is None:
                code = NOT_FOUND
        if code is not None:
            await self.close_with(code)
            return
        # Join before anything reads the database: an event committed from
        # here on is either in the rows read below or arrives live (or both,
        # and is dropped as a duplicate). Joining after would lose those
        # committed between the read and the join.
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups.append(group)
        self.pinger = asyncio.create_task(self.ping_forever())
        await self.start()

    async def disconnect(self, code):
        if self.pinger is not None:
            self.pinger.cancel()

    async def close_with(self, code):
        self.closing = True
        if self.pinger is not None:
            self.pinger.cancel()
        # Leave the groups now, not at disconnect: nothing more is sent, so
        # live events must stop piling up in this channel.
        for group in self.groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups = []
        await self.close(code)

    def authorize(self):
        """Runs in a worker thread. None if the client may watch, else a close code.

        Who the client is, ws_auth.WebSocketAuthMiddleware found out.
        """
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # A known user turned away (deactivated, or a session cookie a
            # foreign page sent) hears 4403: logging in again will not help.
            return FORBIDDEN if self.scope.get("auth_refused") else NOT_AUTHENTICATED
        if not user.has_perm(VIEW_PERMISSION):
            return FORBIDDEN
        return None

    async def ping_forever(self):
        while True:
            await asyncio.sleep(PING_INTERVAL)
            # Only a stream that fell silent for a whole tick is checked: while
            # events flow, the next one reveals any gap, and a busy server
            # would otherwise read every viewer's in-flight events from the
            # database (1,000 viewers: 50 queries/s, the live copies wasted).
            if not self.heard:
                await self.catch_up()
            self.heard = False
            await self.send_json({"type": "ping"})

    async def catch_up(self):
        """Send what the deployments this client was sent have stored beyond it.

        A dropped publish is filled in by the next live event of the same
        deployment; its last one (deploy.completed) has no next one. Called
        on a ping tick with no live event since the one before, so a lost
        last event arrives within two ticks.
        """
        if not self.last_sent:
            return
        for key in await database_sync_to_async(_behind)(dict(self.last_sent)):
            last = self.last_sent[key]
            for missed in await database_sync_to_async(_events_after)(key, last):
                # A live event may have sent it while this was reading.
                if missed["seq"] > self.last_sent.get(key, 0):
                    await self.send_event(missed)

    async def dispatch(self, message):
        # Live events are the hot path: one message per viewer per batch. The
        # base dispatch first closes stale database connections, a hop to the
        # sync thread that costs about half of daphne's CPU with hundreds of
        # viewers (bench/fanout.py); deploy_event reaches the database only
        # through database_sync_to_async, which does that itself.
        kind = message.get("type")
        if kind == events.BATCH:
            for event in message["events"]:
                await self.deploy_event(event)
            return
        if kind == "deploy.event":  # one event, as publishers before batching sent them
            await self.deploy_event(message)
            return
        await super().dispatch(message)

    # --- client messages ------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if self.closing:
            return
        content = _parse_frame(text_data)
        if not isinstance(content, dict):
            # Binary, oversized, not JSON, nested too deep, or not an object.
            await self.close_with(BAD_REQUEST)
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        # Unknown types are ignored, so a newer client can talk to this server.
        if content.get("type") != "resume":
            return
        after = _non_negative_int(content.get("after", 0))
        if after is None:
            await self.close_with(BAD_REQUEST)
            return
        deployment = await database_sync_to_async(_find_deployment)(content.get("deployment"))
        if deployment is None or not self.covers(deployment):
            await self.close_with(NOT_FOUND)
            return
        await self.replay(deployment.public_id, after)

    # --- events ---------------------------------------------------------------

    async def replay(self, deployment, after):
        """Send the stored events after `after`, then `caught_up`."""
        last = after
        while True:
            batch = await database_sync_to_async(_events_after)(deployment, last, limit=REPLAY_BATCH)
            for message in batch:
                await self.send_event(message)
                last = message["seq"]
            if len(batch) < REPLAY_BATCH:
                break
        # What the client now holds: replayed rows, or what it said it had.
        self.last_sent[deployment] = last
        await self.send_json({"type": "caught_up", "deployment": deployment, "seq": last})

    async def deploy_event(self, message):
        """A live event from the channel layer (events.Publisher)."""
        if self.closing:
            return
        self.heard = True
        deployment, seq = message["deployment"], message["seq"]
        last = self.last_sent.get(deployment)
        if last is None and self.watermark is not None and seq > 1:
            # First seen live, and not from its start: send what it committed
            # since this client subscribed and the live stream did not bring
            # (a publish lost, or a process that died before publishing).
            for missed in await database_sync_to_async(_events_after)(deployment, 0, before=seq,
                                                                      above_id=self.watermark):
                await self.send_event(missed)
        elif last is not None:
            if seq <= last:
                return  # Already sent by a replay (or delivered twice).
            if seq > last + 1:
                # Something between was not delivered: a publish dropped
                # while Redis was down or this channel was full, or another
                # process's publisher was slower. Seq numbers are handed out
                # under the deployment's row lock, so every lower one is
                # committed by now: fetch them.
                for missed in await database_sync_to_async(_events_after)(deployment, last, before=seq):
                    await self.send_event(missed)
        await self.send_event(message)

    async def send_event(self, message):
        self.last_sent[message["deployment"]] = message["seq"]
        await self.send_json({
            "type": "event",
            "deployment": message["deployment"],
            "seq": message["seq"],
            "event": message["event"],
            "payload": message["payload"],
        })


class DeploymentConsumer(EventStream):
    """/ws/deployments/<uuid>/?after=<seq>: stored events, `caught_up`, then live ones."""

    def find_group(self):
        self.deployment = _find_deployment(self.scope["url_route"]["kwargs"]["deployment_id"])
        if self.deployment is None:
            return None
        return self.deployment.groups[0]

    def covers(self, deployment):
        return deployment.public_id == self.deployment.public_id

    async def start(self):
        values = parse_qs(self.scope.get("query_string", b"").decode("latin1")).get("after", ["0"])
        after = _non_negative_int(values[-1])
        if after is None:
            await self.close_with(BAD_REQUEST)
            return
        await self.replay(self.deployment.public_id, after)


class AppConsumer(EventStream):
    """/ws/apps/<name>/: live events of every deployment of one app."""

    def find_group(self):
        self.app_name = self.scope["url_route"]["kwargs"]["name"]
        if not App.objects.filter(name=self.app_name).exists():
            return None
        # The name events.group_names publishes the app's events under.
        group = f"app.{self.app_name}"
        try:
            _GROUP_NAMES.require_valid_group_name(group)
        except TypeError:
            # An app whose directory name is no valid app name (an invalid
            # infraspec) cannot have been deployed, so it has no events.
            return None
        return group

    def covers(self, deployment):
        return deployment.app_name == self.app_name

    async def start(self):
        self.watermark = await database_sync_to_async(_last_event_id)()


class AllDeploymentsConsumer(EventStream):
    """/ws/deployments/: live events of every deployment."""

    def find_group(self):
        # The group events.group_names sends every event to.
        return "deployments"

    def covers(self, deployment):
        return True

    async def start(self):
        self.watermark = await database_sync_to_async(_last_event_id)()


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Any WebSocket path no endpoint matches (routing.py's last route): 4404.

    Without it Channels' router raised ValueError, which daphne answered with
    an HTTP 500 and a traceback in the log, for anyone who asked.
    """

    async def connect(self):
        await self.accept()
        await self.close(NOT_FOUND)


class _DeploymentRef:
    """What a consumer needs to know about a deployment, read once."""

    def __init__(self, public_id, app_name):
        self.public_id = str(public_id)
        self.app_name = app_name
        # The same names events.record publishes to: deployment, app, all.
        self.groups = events.group_names(public_id, app_name)


def _find_deployment(public_id):
    try:
        public_id = uuid.UUID(str(public_id))
    except ValueError:
        return None
    row = Deployment.objects.filter(public_id=public_id).values_list("public_id", "app__name").first()
    return _DeploymentRef(*row) if row else None


def _events_after(public_id, after, before=None, limit=None, above_id=None):
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
    return [
        {"type": "deploy.event", "deployment": public_id, "seq": seq, "event": kind, "payload": payload}
        for seq, kind, payload in rows
    ]


def _last_event_id():
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def _behind(last_sent):
    """Of the deployments in `last_sent` ({public id: seq}), those with later events stored."""
    rows = Deployment.objects.filter(public_id__in=list(last_sent)).values_list("public_id", "last_event_seq")
    return [str(public_id) for public_id, seq in rows if seq > last_sent[str(public_id)]]


def _parse_frame(text_data):
    """A client frame as JSON, or None when it is not a small, sane JSON text."""
    if not text_data or len(text_data) > MAX_FRAME_BYTES or len(text_data.encode()) > MAX_FRAME_BYTES:
        return None
    try:
        return json.loads(text_data)
    except (ValueError, RecursionError):
        # RecursionError: a few thousand nested brackets fit in one frame.
        return None


def _has_nul(kwargs):
    return any("\x00" in str(value) for value in kwargs.values())


def _non_negative_int(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_SEQ:
        return value
    return None
