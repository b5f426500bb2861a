"""Live events in a web process: one subscription, shared by all its viewers.

The consumers (consumers.py) of one process follow their deployment, app or
all deployments through one Hub: it reads each batch the publisher
(events.py) sent once, encodes each event's frame once and hands the frames
to every consumer that follows one of the event's routes.
"""

import asyncio
import json
import logging
import weakref

from channels.layers import get_channel_layer

from deployments import events

log = logging.getLogger(__name__)

# Viewers a hub hands an event to before it lets the event loop write them out.
SLICE = 50
# The message a hub sends the group to learn that the layer delivers to it.
READY = "norn.hub.ready"
# How long the first viewer waits for that (then it goes on: whatever the
# layer does not deliver, the viewers fill in from the database).
READY_TIMEOUT = 2.0


def frame(message):
    """The client's frame of an event (docs/live.md), from its channel-layer message."""
    return json.dumps({
        "type": "event",
        "deployment": message["deployment"],
        "seq": message["seq"],
        "event": message["event"],
        "payload": message["payload"],
    })


class Hub:
    """This process's subscription to the events, shared by all its viewers.

    With a channel per consumer, every viewer got its own copy of every
    batch from channels-redis: 1,000 viewers of one deployment cost 1,000
    queue wake-ups, msgpack decodes, JSON encodings and task switches per
    event (bench/fanout.py). The hub has one channel in the layer, in the
    group every event is published to (events.GROUP), while any viewer is
    connected; it decodes each batch once, encodes each event's frame once,
    and hands the frames to the viewers of the event's routes (its
    deployment, its app, all) in turn.
    """

    def __init__(self, layer):
        self.layer = layer
        self.viewers = {}  # route (events.routes) -> the consumers following it
        self.subscribed = False
        self.channel = None
        self.reader = None
        # One change of the subscription at a time: a join must not return
        # before the group_add has, nor race a leave's group_discard.
        self.changing = asyncio.Lock()

    async def join(self, route, viewer):
        self.viewers.setdefault(route, set()).add(viewer)
        if self.subscribed:
            return
        async with self.changing:
            if not self.subscribed:
                self.channel = await self.layer.new_channel()
                ready = asyncio.Event()
                self.reader = asyncio.create_task(self.read(self.channel, ready))
                await self.layer.group_add(events.GROUP, self.channel)
                await self.until_delivered(ready)
                self.subscribed = True

    async def until_delivered(self, ready):
        """Returns once the layer delivers to this hub's channel, so that the
        viewer's `caught_up` (sent after join) means live events arrive at
        once. channels-redis' pub/sub reader looks for a subscription every
        0.1 s while it has none: a batch published right after group_add
        waited up to 100 ms for it (bench/event_latency.py saw a p99 of 30 ms
        from this alone). A message to the group, once back, proves the
        reader of the group's shard awake (other processes' hubs get it too,
        and ignore it)."""
        async def sent_and_back():
            await self.layer.group_send(events.GROUP, {"type": READY})
            await ready.wait()

        try:  # a Redis that does not answer the send is waited for as long
            await asyncio.wait_for(sent_and_back(), READY_TIMEOUT)
        except Exception as exc:  # TimeoutError, Redis errors: the database fills in
            log.warning("the channel layer did not deliver to this process's live events channel "
                        "within %.0f s (%s); viewers fill in from the database", READY_TIMEOUT,
                        type(exc).__name__)

    async def leave(self, route, viewer):
        members = self.viewers.get(route)
        if not members or viewer not in members:
            return
        members.discard(viewer)
        if not members:
            del self.viewers[route]
        if self.viewers:
            return
        async with self.changing:
            if self.viewers or not self.subscribed:
                return  # someone joined again meanwhile
            # Nobody left: stop reading (the layer then drops the channel).
            self.subscribed = False
            reader, channel = self.reader, self.channel
            self.reader = self.channel = None
            await self.layer.group_discard(events.GROUP, channel)
            reader.cancel()

    async def read(self, channel, ready):
        while True:
            try:
                message = await self.layer.receive(channel)
            except Exception:
                # Whatever the layer raises, this task must go on reading:
                # every viewer in the process depends on it. What a Redis
                # outage loses, the viewers fill in from the database.
                log.exception("could not read live events from the channel layer")
                await asyncio.sleep(1)
                continue
            if message.get("type") == events.BATCH:
                await self.hand_out(message["events"])
            elif message.get("type") == READY:
                ready.set()

    async def hand_out(self, batch):
        """Each event of the batch to the viewers of its routes, encoded once."""
        routed = {}
        for body in batch:
            for route in events.routes(body["deployment"], body.get("app")):
                if route in self.viewers:
                    routed.setdefault(route, []).append(body)
        frames = {}
        for route, bodies in routed.items():
            items = []
            for body in bodies:
                if id(body) not in frames:
                    frames[id(body)] = (body, frame(body))
                items.append(frames[id(body)])
            for count, viewer in enumerate(list(self.viewers.get(route, ())), 1):
                try:
                    await viewer.live(items)
                except Exception as exc:
                    # One client's failure (its connection went away while
                    # being sent to) must not cost the others their events.
                    log.warning("could not send live events to a client: %s: %s", type(exc).__name__, exc)
                if count % SLICE == 0:
                    # daphne writes to the sockets when the event loop polls
                    # them: let it, so the first viewers' frames leave while
                    # the rest are being handed theirs.
                    await asyncio.sleep(0)


# One hub per event loop (daphne has one; each test has its own, and a
# channel layer's connections belong to the loop that opened them).
_hubs = weakref.WeakKeyDictionary()


def hub():
    """This event loop's hub."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub(get_channel_layer())
    return found
