"""Live events in a web process: one subscription per group, shared by its viewers.

The consumers (consumers.py) of one process follow their groups through one
Hub: it reads each batch the publisher (events.py) sent once, encodes each
event's frame once and hands the frames to every consumer of the group.
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
    """This process's subscription to the groups its viewers follow, shared by them.

    With a channel per consumer, every viewer got its own copy of every
    batch from channels-redis: 1,000 viewers of one deployment cost 1,000
    queue wake-ups, msgpack decodes, JSON encodings and task switches per
    event (bench/fanout.py). The hub has one channel in the layer, joins
    each group once, decodes each batch once, encodes each event's frame
    once, and hands the frames to every viewer of the group in turn.
    """

    def __init__(self, layer):
        self.layer = layer
        self.viewers = {}  # group -> the consumers following it
        self.subscribed = set()  # groups whose group_add completed
        self.channel = None
        self.reader = None
        # One change of the subscriptions at a time: a join must not return
        # before its group's group_add has, nor race a leave's group_discard.
        self.changing = asyncio.Lock()

    async def join(self, group, viewer):
        self.viewers.setdefault(group, set()).add(viewer)
        if group in self.subscribed:
            return
        async with self.changing:
            if self.reader is None:
                self.channel = await self.layer.new_channel()
                self.reader = asyncio.create_task(self.read(self.channel))
            if group not in self.subscribed:
                await self.layer.group_add(group, self.channel)
                self.subscribed.add(group)

    async def leave(self, group, viewer):
        members = self.viewers.get(group)
        if not members or viewer not in members:
            return
        members.discard(viewer)
        if members:
            return
        del self.viewers[group]
        async with self.changing:
            if group in self.viewers or group not in self.subscribed:
                return  # someone joined again meanwhile
            self.subscribed.discard(group)
            await self.layer.group_discard(group, self.channel)
            if not self.subscribed:
                # Nobody left: stop reading (the layer then drops the channel).
                self.reader.cancel()
                self.reader = self.channel = None

    async def read(self, channel):
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
            members = self.viewers.get(message.get("group"))
            if not members or message.get("type") != events.BATCH:
                continue
            items = [(body, frame(body)) for body in message["events"]]
            for count, viewer in enumerate(list(members), 1):
                try:
                    await viewer.live(items)
                except Exception:
                    # One client's failure (its connection went away while
                    # being sent to) must not cost the others their events.
                    log.exception("could not send live events to a client")
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
