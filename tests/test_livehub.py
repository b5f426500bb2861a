"""The web process's hub (deployments/livehub.py) lets its first viewer in
only once the channel layer delivers to it: channels-redis' pub/sub reader
sleeps 0.1 s at a time until it has a subscription, and a viewer told
`caught_up` before it woke waited that long for the next live event."""

import asyncio
import logging

import pytest
from channels.layers import InMemoryChannelLayer, get_channel_layer

from deployments import events, livehub


class HeldLayer(InMemoryChannelLayer):
    """An in-memory layer that delivers nothing until `awake` is set, as
    channels-redis' reader between group_add and its next look."""

    def __init__(self):
        super().__init__()
        self.awake = asyncio.Event()

    async def receive(self, channel):
        await self.awake.wait()
        return await super().receive(channel)


def test_the_first_viewer_joins_once_the_layer_delivers():
    async def scenario():
        layer = HeldLayer()
        hub = livehub.Hub(layer)
        first = asyncio.create_task(hub.join(events.deployment_route("a"), "viewer 1"))
        second = asyncio.create_task(hub.join(events.deployment_route("a"), "viewer 2"))
        for _ in range(50):
            await asyncio.sleep(0)
        assert not first.done() and not second.done() and not hub.subscribed
        layer.awake.set()
        await asyncio.wait_for(asyncio.gather(first, second), 1)
        assert hub.subscribed
        # Live batches reach the hub's viewers from then on.
        delivered = asyncio.Event()

        class Viewer:
            async def live(self, items):
                delivered.set()

        await hub.join(events.deployment_route("b"), Viewer())
        await layer.group_send(events.GROUP, {"type": events.BATCH, "events": [
            {"deployment": "b", "app": "web", "seq": 1, "event": events.LOG, "payload": {}}]})
        await asyncio.wait_for(delivered.wait(), 1)

    asyncio.run(scenario())


class HangingLayer(InMemoryChannelLayer):
    """A layer whose send never returns: a Redis that accepts and never answers."""

    async def group_send(self, group, message):
        await asyncio.Event().wait()


@pytest.mark.parametrize("layer", [HeldLayer, HangingLayer], ids=["never delivers", "send hangs"])
def test_a_layer_that_does_not_answer_delays_the_first_viewer_boundedly(monkeypatch, caplog, layer):
    monkeypatch.setattr(livehub, "READY_TIMEOUT", 0.05)

    async def scenario():
        hub = livehub.Hub(layer())
        await asyncio.wait_for(hub.join(events.deployment_route("a"), "viewer"), 1)
        assert hub.subscribed

    with caplog.at_level(logging.WARNING, logger="deployments.livehub"):
        asyncio.run(scenario())
    assert ("did not deliver to this process's live events channel within 0 s (TimeoutError); "
            "viewers fill in from the database") in caplog.text


def test_with_redis_the_hub_joins_without_waiting_out_the_timeout(caplog, settings):
    """The real pub/sub layer delivers the hub its message to the group: no warning."""
    async def scenario():
        layer = get_channel_layer()
        hub = livehub.Hub(layer)
        await asyncio.wait_for(hub.join(events.deployment_route("a"), "viewer"), livehub.READY_TIMEOUT - 0.5)
        await hub.leave(events.deployment_route("a"), "viewer")
        await layer.flush()

    with caplog.at_level(logging.WARNING, logger="deployments.livehub"):
        asyncio.run(scenario())
    assert "did not deliver" not in caplog.text
