"""The events publisher (deployments/events.py) against the real Redis.

With the configured layer (channels_redis pub/sub) the worker's thread
publishes without an event loop (DirectPublish); what it sends must be what
the layer's own group_send sends, since every web process reads it with the
layer. Other layers keep their group_send. A Redis that is down or hung costs
a bounded wait and a warning, never a stuck publisher.
"""

import asyncio
import logging
import socket
import time
import uuid

import pytest
from channels.layers import get_channel_layer

from deployments import events


def bodies(n):
    """n events of a made-up deployment, as the publisher is handed them."""
    deployment = str(uuid.uuid4())
    return deployment, [
        {"type": "deploy.event", "deployment": deployment, "seq": seq, "event": events.LOG,
         "payload": {"step": "test", "text": f"line {seq}\n"}, "app": "pub"}
        for seq in range(1, n + 1)
    ]


async def receive_published(layer, deployment, publish):
    """The batches of `deployment` that a subscriber of the group gets, via the
    layer's own receiving side, while `publish()` runs in a thread."""
    channel = await layer.new_channel()
    await layer.group_add(events.GROUP, channel)
    try:
        await asyncio.to_thread(publish)
        got = []
        while sum(len(message["events"]) for message in got) < 3:
            message = await asyncio.wait_for(layer.receive(channel), 5)
            if any(body["deployment"] == deployment for body in message["events"]):
                got.append(message)
        return got
    finally:
        await layer.group_discard(events.GROUP, channel)


def publish_all(items):
    def publish():
        for body in items:
            events.publisher.send([events.GROUP], body)
        assert events.publisher.flush()

    return publish


def test_the_configured_layer_is_published_to_without_an_event_loop(monkeypatch):
    layer = get_channel_layer()
    assert isinstance(events._direct_publish(layer), events.DirectPublish)

    async def no_loop(*args):
        raise AssertionError("the channel layer's group_send was used")

    monkeypatch.setattr(events.Publisher, "_send", staticmethod(no_loop))
    deployment, items = bodies(3)
    got = asyncio.run(receive_published(layer, deployment, publish_all(items)))
    # What the layer's receiving side decodes: the batch message, in order.
    assert all(message["type"] == events.BATCH for message in got)
    assert [body for message in got for body in message["events"]] == items


def test_another_layer_keeps_its_own_group_send(settings):
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [settings.REDIS_URL], "prefix": f"norn-test-core-{uuid.uuid4().hex[:8]}"},
    }}
    layer = get_channel_layer()
    assert events._direct_publish(layer) is None
    deployment, items = bodies(3)
    got = asyncio.run(receive_published(layer, deployment, publish_all(items)))
    assert [body for message in got for body in message["events"]] == items


@pytest.fixture
def unanswering_redis():
    """A port that accepts connections and never answers: a hung Redis."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"


@pytest.mark.parametrize("where", ["down", "hung"])
def test_a_redis_that_is_down_or_hung_costs_a_bounded_wait_and_a_warning(where, settings, caplog,
                                                                          unanswering_redis):
    url = "redis://127.0.0.1:1/0" if where == "down" else unanswering_redis
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [url], "prefix": "x"},
    }}
    assert isinstance(events._direct_publish(get_channel_layer()), events.DirectPublish)
    _, items = bodies(2)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="deployments.events"):
        publish_all(items)()
    assert time.monotonic() - started < events.SEND_TIMEOUT + 2
    assert "could not publish 2 event(s) (deploy.log #1 to deploy.log #2)" in caplog.text
    # The publisher goes on: once Redis is back, the next events go out.
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [settings.REDIS_URL], "prefix": f"norn-test-{uuid.uuid4().hex[:8]}"},
    }}
    deployment, items = bodies(3)
    got = asyncio.run(receive_published(get_channel_layer(), deployment, publish_all(items)))
    assert [body for message in got for body in message["events"]] == items
