"""WebSocket consumers streaming deployment events, as docs/live.md specifies.

Three endpoints (one deployment, one app, everything) share one base: it
authorizes the user deployments/ws_auth.py authenticated (session or API
token), follows its route through this process's hub (livehub.py), replays
stored events on request and forwards live ones, so that each deployment's events reach the client in
`seq` order, each exactly once.
"""

import asyncio
import collections
import json
import uuid
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer

from apps_registry.models import App
from deployments import events, livehub
from deployments.models import Deployment

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


class EventStream(AsyncJsonWebsocketConsumer):
    """What the three endpoints share; subclasses say which route they follow.

    Live events come from this process's livehub.Hub, not from a channel of
    each consumer. Everything that sends events to the client (the replay on
    connect, a `resume`, the ping's catch-up, live events) runs holding
    `self.order`, so each deployment's events leave in `seq` order, once:
    live events that arrive while a replay or a gap fill awaits the database
    wait in `self.backlog`, and are sent (or dropped as duplicates) after it.
    """

    # No channel of its own in the channel layer: the hub is subscribed,
    # once per process (livehub.py). Without this Channels would
    # subscribe every connection to a channel of its own in Redis.
    channel_layer_alias = None

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
        # The route (events.routes) this consumer follows through the hub.
        self.following = None
        self.order = asyncio.Lock()
        # Live (message, frame) pairs waiting for `order`, in arrival order,
        # and the task that sends them once it has it.
        self.backlog = collections.deque()
        self.catching_up = None

    # --- subclass hooks -------------------------------------------------------

    def find_route(self):
        """Runs in a worker thread. The route to follow (events.routes), or None for 4404."""
        raise NotImplementedError

    def covers(self, deployment):
        """Whether a `resume` may name this deployment (a _DeploymentRef)."""
        raise NotImplementedError

    async def start(self):
        """Called, holding `order`, once the route is followed; the deployment endpoint replays here."""

    # --- connection -----------------------------------------------------------

    async def connect(self):
        # Accept first: the protocol answers with close codes, which a
        # rejected handshake (HTTP 403) cannot carry.
        await self.accept()
        code = await database_sync_to_async(self.authorize)()
        route = None
        if code is None and _has_nul(self.scope["url_route"]["kwargs"]):
            # PostgreSQL cannot compare text with NUL in it; no name has one.
            code = NOT_FOUND
        elif code is None:
            route = await database_sync_to_async(self.find_route)()
            if route is None:
                code = NOT_FOUND
        if code is not None:
            await self.close_with(code)
            return
        async with self.order:
            # Join before anything reads the database: an event committed
            # from here on is either in the rows read below or arrives live
            # (or both, and is dropped as a duplicate). Joining after would
            # lose those committed between the read and the join. Live
            # events that come meanwhile wait for `order` in the backlog.
            self.following = route
            await livehub.hub().join(route, self)
            self.pinger = asyncio.create_task(self.ping_forever())
            await self.start()

    async def disconnect(self, code):
        await self.stop_following()

    async def close_with(self, code):
        self.closing = True
        # Stop following now, not at disconnect: nothing more is sent.
        await self.stop_following()
        await self.close(code)

    async def stop_following(self):
        for task in (self.pinger, self.catching_up):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self.backlog.clear()
        if self.following is not None:
            route, self.following = self.following, None
            await livehub.hub().leave(route, self)

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
                async with self.order:
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
        for key in await database_sync_to_async(events.behind)(dict(self.last_sent)):
            for missed in await database_sync_to_async(events.stored_after)(key, self.last_sent[key]):
                await self.send_event(missed)

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
        async with self.order:
            await self.replay(deployment.public_id, after)

    # --- events ---------------------------------------------------------------

    async def replay(self, deployment, after):
        """Send the stored events after `after`, then `caught_up`. Hold `order`."""
        last = after
        while True:
            batch = await database_sync_to_async(events.stored_after)(deployment, last, limit=REPLAY_BATCH)
            for message in batch:
                await self.send_event(message)
                last = message["seq"]
            if len(batch) < REPLAY_BATCH:
                break
        # What the client now holds: replayed rows, or what it said it had.
        self.last_sent[deployment] = last
        await self.send_json({"type": "caught_up", "deployment": deployment, "seq": last})

    async def live(self, items):
        """Live events from the hub: [(channel-layer message, its frame)], in commit order.

        The hot path, once per viewer and batch: when nothing else is being
        sent to this client and no event is missing, the frames go out now,
        in the hub's task. Otherwise they wait in the backlog for a task of
        this consumer, so that the hub never waits for the database.
        """
        if self.closing or self.following is None:
            return  # closed or disconnected while the hub was handing out
        self.heard = True
        if self.backlog or self.order.locked():
            self.backlog.extend(items)
            self.work_off_backlog()
            return
        async with self.order:  # free: taken without waiting
            for i, (message, frame) in enumerate(items):
                verdict = self.placement(message)
                if verdict is _MISSING:
                    self.backlog.extend(items[i:])
                    self.work_off_backlog()
                    return
                if verdict is _NEXT:
                    self.last_sent[message["deployment"]] = message["seq"]
                    # Straight to the server, as send() would after two more calls.
                    await self.base_send({"type": "websocket.send", "text": frame})

    def work_off_backlog(self):
        if self.catching_up is None and not self.closing:
            self.catching_up = asyncio.create_task(self.send_backlog())

    async def send_backlog(self):
        try:
            async with self.order:
                while self.backlog and not self.closing:
                    message, frame = self.backlog.popleft()
                    await self.deploy_event(message, frame)
        finally:
            self.catching_up = None

    def placement(self, message):
        """Whether a live event is a duplicate, the next one, or comes after missing ones."""
        deployment, seq = message["deployment"], message["seq"]
        last = self.last_sent.get(deployment)
        if last is None:
            # First seen live, and not from its start: what it committed since
            # this client subscribed, the live stream may not have brought (a
            # publish lost, or a process that died before publishing).
            return _MISSING if self.watermark is not None and seq > 1 else _NEXT
        if seq <= last:
            return _DUPLICATE  # Already sent by a replay (or delivered twice).
        # Something between was not delivered: a publish dropped while Redis
        # was down, or another process's publisher was slower.
        return _NEXT if seq == last + 1 else _MISSING

    async def deploy_event(self, message, frame):
        """A live event, holding `order`: what it reveals missing first, then itself."""
        deployment, seq = message["deployment"], message["seq"]
        verdict = self.placement(message)
        if verdict is _DUPLICATE:
            return
        if verdict is _MISSING:
            last = self.last_sent.get(deployment)
            # Seq numbers are handed out under the deployment's row lock, so
            # every lower one is committed by now: fetch them.
            if last is None:
                missed = await database_sync_to_async(events.stored_after)(deployment, 0, before=seq,
                                                                     above_id=self.watermark)
            else:
                missed = await database_sync_to_async(events.stored_after)(deployment, last, before=seq)
            for stored in missed:
                await self.send_event(stored)
            if seq <= self.last_sent.get(deployment, 0):
                return
        self.last_sent[deployment] = seq
        await self.send(text_data=frame)

    async def send_event(self, message):
        """A stored event (replay, gap fill): encoded for this client alone."""
        self.last_sent[message["deployment"]] = message["seq"]
        await self.send(text_data=livehub.frame(message))


# What EventStream.placement says of a live event.
_DUPLICATE = "duplicate"
_NEXT = "next"
_MISSING = "missing"


class DeploymentConsumer(EventStream):
    """/ws/deployments/<uuid>/?after=<seq>: stored events, `caught_up`, then live ones."""

    def find_route(self):
        self.deployment = _find_deployment(self.scope["url_route"]["kwargs"]["deployment_id"])
        if self.deployment is None:
            return None
        return self.deployment.route

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

    def find_route(self):
        self.app_name = self.scope["url_route"]["kwargs"]["name"]
        if not App.objects.filter(name=self.app_name).exists():
            return None
        return events.app_route(self.app_name)

    def covers(self, deployment):
        return deployment.app_name == self.app_name

    async def start(self):
        self.watermark = await database_sync_to_async(events.last_id)()


class AllDeploymentsConsumer(EventStream):
    """/ws/deployments/: live events of every deployment."""

    def find_route(self):
        return events.ALL_ROUTE

    def covers(self, deployment):
        return True

    async def start(self):
        self.watermark = await database_sync_to_async(events.last_id)()


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
        # The route its viewers follow (events.routes).
        self.route = events.deployment_route(self.public_id)


def _find_deployment(public_id):
    try:
        public_id = uuid.UUID(str(public_id))
    except ValueError:
        return None
    row = Deployment.objects.filter(public_id=public_id).values_list("public_id", "app__name").first()
    return _DeploymentRef(*row) if row else None


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
