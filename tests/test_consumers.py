"""Live progress over WebSocket (docs/live.md), and the API tokens it accepts.

The consumers run behind the real ASGI stack (norn_project.asgi) against the
real Redis channel layer and PostgreSQL; events are written with
deployments.events.record and published by its background publisher after
commit, exactly as the worker does.
"""

import asyncio
import re
import threading
import time
import uuid

import pytest
import pytest_asyncio
import redis.asyncio
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.db import connection, connections, transaction
from django.test import Client

from apps_registry.models import App
from deployments import admin_tokens  # noqa: F401  (registers ApiTokenAdmin until admin.py imports it)
from deployments import consumers, events, transitions
from deployments.models import ApiToken
from norn_project.asgi import application
from tests.support.publishing import lose_first_publish

# Generous: the publisher thread, Redis and PostgreSQL are all in the path.
TIMEOUT = 5
ALLOWED_ORIGIN = b"http://localhost:8000"

websocket_db = pytest.mark.django_db(transaction=True)


# --- fixtures and helpers -----------------------------------------------------


@pytest.fixture
def new_app(make_app):
    """new_app() -> an App with a unique name, so that concurrent test runs
    sharing this Redis never meet in an `app.<name>` group."""

    def make():
        name = f"ws-{uuid.uuid4().hex[:10]}"
        make_app(name, f"app: {name}\nrole: worker\n")
        return App.objects.get(name=name)

    return make


@pytest.fixture
def deployment(new_app):
    """A queued deployment: its event #1 (deploy.queued) is stored."""
    return transitions.create(new_app(), "HEAD")


def make_user(username, *, view=True, active=True):
    user = User.objects.create_user(username, password="x", is_active=active)
    if view:
        user.user_permissions.add(Permission.objects.get(codename="view_deployment"))
    return user


@pytest.fixture
def viewer():
    return make_user("viewer")


@pytest.fixture
def token(viewer):
    return ApiToken.issue(viewer, "tests")[1]


def session_cookie(user):
    """The Cookie header of a browser logged in as `user`."""
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


def token_headers(token):
    return [(b"authorization", f"Token {token}".encode())]


def browser_headers(user, origin=ALLOWED_ORIGIN):
    headers = [(b"cookie", session_cookie(user))]
    if origin is not None:
        headers.append((b"origin", origin))
    return headers


def record(deployment, count=1, kind=events.LOG):
    """Commit `count` events, one transaction each, and wait until published."""
    for i in range(count):
        with transaction.atomic():
            events.record(deployment.pk, kind, {"line": f"line {i}"})
    events.publisher.flush()


@pytest_asyncio.fixture
async def open_socket():
    """open_socket(path, headers) -> a connected WebsocketCommunicator.

    Every socket is disconnected afterwards, even when the test failed: a
    consumer left running would keep receiving on the shared channel layer
    from this test's event loop, which the next test's loop may not do.
    """
    opened = []

    async def open_(path, headers=()):
        communicator = WebsocketCommunicator(application, path, headers=list(headers))
        opened.append(communicator)
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        assert connected, "the protocol accepts every handshake, then closes with a code"
        return communicator

    try:
        yield open_
    finally:
        try:
            for communicator in opened:
                # A receive that timed out has cancelled the consumer already.
                if not communicator.future.done():
                    await communicator.disconnect(timeout=TIMEOUT)
        finally:
            # The consumers' queries ran in asgiref's sync thread; its
            # connection must not outlive the test database.
            await sync_to_async(connections.close_all)()


async def close_code(communicator):
    message = await communicator.receive_output(TIMEOUT)
    assert message["type"] == "websocket.close", message
    return message["code"]


async def receive(communicator, count, deployments=None):
    """The next `count` messages, without pings (and only those of `deployments`)."""
    received = []
    while len(received) < count:
        message = await communicator.receive_json_from(TIMEOUT)
        if message["type"] == "ping":
            continue
        if deployments is not None and message.get("deployment") not in deployments:
            continue  # Another test run's deployment, on the shared `deployments` group.
        received.append(message)
    return received


async def receive_until_caught_up(communicator):
    messages = []
    while True:
        [message] = await receive(communicator, 1)
        messages.append(message)
        if message["type"] == "caught_up":
            return messages


async def subscribed(communicator, deployment, after):
    """Resume `deployment` and wait for `caught_up`.

    The app and all endpoints acknowledge nothing when they join their
    group; a resume is answered only after that (one message at a time),
    so `caught_up` proves that live events now reach the socket.
    """
    await communicator.send_json_to({"type": "resume", "deployment": str(deployment.public_id), "after": after})
    messages = await receive(communicator, 1, deployments={str(deployment.public_id)})
    assert messages == [{"type": "caught_up", "deployment": str(deployment.public_id), "seq": after}]


def seqs(messages):
    return [m["seq"] for m in messages if m["type"] == "event"]


def deployment_path(deployment, after=None):
    path = f"/ws/deployments/{deployment.public_id}/"
    return path if after is None else f"{path}?after={after}"


# --- authentication, origin, permissions --------------------------------------


@websocket_db
@pytest.mark.asyncio
async def test_anonymous_connection_is_closed_4401(open_socket, deployment):
    socket = await open_socket(deployment_path(deployment), [(b"origin", ALLOWED_ORIGIN)])
    assert await close_code(socket) == 4401


@websocket_db
@pytest.mark.asyncio
async def test_session_user_without_view_permission_gets_4403(open_socket, deployment):
    user = await database_sync_to_async(make_user)("nobody", view=False)
    headers = await database_sync_to_async(browser_headers)(user)
    socket = await open_socket(deployment_path(deployment), headers)
    assert await close_code(socket) == 4403


@websocket_db
@pytest.mark.asyncio
@pytest.mark.parametrize("authorization", [
    b"Token norn_not-a-real-token-at-all-not-at-all",
    b"Token nonsense",
    b"Token ",
    b"Bearer whatever",
])
async def test_bad_token_gets_4401(open_socket, deployment, authorization):
    socket = await open_socket(deployment_path(deployment), [(b"authorization", authorization)])
    assert await close_code(socket) == 4401


@websocket_db
@pytest.mark.asyncio
async def test_correct_token_with_a_wrong_tail_gets_4401(open_socket, deployment, token):
    # Same prefix (the row is found), different digest.
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    socket = await open_socket(deployment_path(deployment), token_headers(forged))
    assert await close_code(socket) == 4401


@websocket_db
@pytest.mark.asyncio
async def test_token_user_with_permission_streams_without_origin(open_socket, deployment, token):
    socket = await open_socket(deployment_path(deployment), token_headers(token))
    messages = await receive_until_caught_up(socket)
    public_id = str(deployment.public_id)
    assert messages[0]["type"] == "event"
    assert (messages[0]["deployment"], messages[0]["seq"], messages[0]["event"]) == (public_id, 1, "deploy.queued")
    assert messages[0]["payload"]["id"] == public_id
    assert messages[1] == {"type": "caught_up", "deployment": public_id, "seq": 1}
    last_used = await database_sync_to_async(lambda: ApiToken.objects.get().last_used_at)()
    assert last_used is not None


@websocket_db
@pytest.mark.asyncio
async def test_inactive_token_user_gets_4403(open_socket, deployment):
    def setup():
        user = make_user("gone")
        _, token = ApiToken.issue(user, "old laptop")
        User.objects.filter(pk=user.pk).update(is_active=False)
        return token

    token = await database_sync_to_async(setup)()
    socket = await open_socket(deployment_path(deployment), token_headers(token))
    assert await close_code(socket) == 4403


@websocket_db
@pytest.mark.asyncio
async def test_session_of_a_deactivated_user_gets_4403(open_socket, deployment):
    def setup():
        user = make_user("gone")
        headers = browser_headers(user)  # Logged in while still active.
        User.objects.filter(pk=user.pk).update(is_active=False)
        return headers

    headers = await database_sync_to_async(setup)()
    socket = await open_socket(deployment_path(deployment), headers)
    assert await close_code(socket) == 4403


@websocket_db
@pytest.mark.asyncio
@pytest.mark.parametrize("origin", [b"http://evil.example", b"http://localhost.evil.example", None])
async def test_session_with_a_foreign_or_no_origin_gets_4403(open_socket, deployment, viewer, origin):
    headers = await database_sync_to_async(browser_headers)(viewer, origin)
    socket = await open_socket(deployment_path(deployment), headers)
    assert await close_code(socket) == 4403


@websocket_db
@pytest.mark.asyncio
@pytest.mark.parametrize("origin", [ALLOWED_ORIGIN, b"https://127.0.0.1"])
async def test_session_with_an_allowed_origin_streams(open_socket, deployment, viewer, origin):
    headers = await database_sync_to_async(browser_headers)(viewer, origin)
    socket = await open_socket(deployment_path(deployment), headers)
    assert seqs(await receive_until_caught_up(socket)) == [1]


@websocket_db
@pytest.mark.asyncio
async def test_superuser_needs_no_explicit_permission(open_socket, deployment):
    def setup():
        admin = User.objects.create_superuser("root", password="x")
        return ApiToken.issue(admin, "ops")[1]

    socket = await open_socket(deployment_path(deployment), token_headers(await database_sync_to_async(setup)()))
    assert seqs(await receive_until_caught_up(socket)) == [1]


@websocket_db
@pytest.mark.asyncio
@pytest.mark.parametrize("path", [
    f"/ws/deployments/{uuid.uuid4()}/",
    "/ws/deployments/not-a-uuid/",
    "/ws/apps/no-such-app/",
])
async def test_unknown_deployment_or_app_gets_4404(open_socket, token, path):
    socket = await open_socket(path, token_headers(token))
    assert await close_code(socket) == 4404


@websocket_db
@pytest.mark.asyncio
async def test_unknown_deployment_is_not_revealed_to_anonymous_clients(open_socket):
    socket = await open_socket(f"/ws/deployments/{uuid.uuid4()}/")
    assert await close_code(socket) == 4401


# --- replay, resume, live -----------------------------------------------------


@websocket_db
@pytest.mark.asyncio
async def test_replays_stored_events_after_the_given_seq(open_socket, deployment, token):
    await database_sync_to_async(record)(deployment, 4)  # seq 2..5
    socket = await open_socket(deployment_path(deployment, after=2), token_headers(token))
    messages = await receive_until_caught_up(socket)
    assert seqs(messages) == [3, 4, 5]
    assert [m["payload"] for m in messages[:3]] == [{"line": "line 1"}, {"line": "line 2"}, {"line": "line 3"}]
    assert messages[-1] == {"type": "caught_up", "deployment": str(deployment.public_id), "seq": 5}


@websocket_db
@pytest.mark.asyncio
async def test_replay_reads_in_batches(open_socket, deployment, token, monkeypatch):
    monkeypatch.setattr(consumers, "REPLAY_BATCH", 3)
    await database_sync_to_async(record)(deployment, 9)  # seq 2..10
    socket = await open_socket(deployment_path(deployment), token_headers(token))
    assert seqs(await receive_until_caught_up(socket)) == list(range(1, 11))


@websocket_db
@pytest.mark.asyncio
async def test_a_malformed_after_gets_4400(open_socket, deployment, token):
    socket = await open_socket(deployment_path(deployment) + "?after=-1", token_headers(token))
    assert await close_code(socket) == 4400


@websocket_db
@pytest.mark.asyncio
async def test_resume_replays_again_on_the_deployment_endpoint(open_socket, deployment, token):
    await database_sync_to_async(record)(deployment, 2)  # seq 2, 3
    socket = await open_socket(deployment_path(deployment), token_headers(token))
    assert seqs(await receive_until_caught_up(socket)) == [1, 2, 3]
    await socket.send_json_to({"type": "resume", "deployment": str(deployment.public_id), "after": 1})
    messages = await receive_until_caught_up(socket)
    assert seqs(messages) == [2, 3]
    assert messages[-1]["seq"] == 3


@websocket_db
@pytest.mark.asyncio
async def test_resume_on_the_app_endpoint_then_live_without_duplicates(open_socket, deployment, token):
    await database_sync_to_async(record)(deployment, 2)  # seq 2, 3
    socket = await open_socket(f"/ws/apps/{deployment.app.name}/", token_headers(token))
    await socket.send_json_to({"type": "resume", "deployment": deployment.public_id.hex.upper(), "after": 0})
    messages = await receive_until_caught_up(socket)
    assert seqs(messages) == [1, 2, 3]
    assert messages[-1] == {"type": "caught_up", "deployment": str(deployment.public_id), "seq": 3}
    await database_sync_to_async(record)(deployment, 1)
    assert seqs(await receive(socket, 1)) == [4]
    assert await socket.receive_nothing(0.3)


@websocket_db
@pytest.mark.asyncio
async def test_resume_on_the_all_endpoint(open_socket, deployment, token):
    socket = await open_socket("/ws/deployments/", token_headers(token))
    await socket.send_json_to({"type": "resume", "deployment": str(deployment.public_id)})
    mine = {str(deployment.public_id)}
    messages = await receive(socket, 2, deployments=mine)
    assert [m["type"] for m in messages] == ["event", "caught_up"]
    assert seqs(messages) == [1]


@websocket_db
@pytest.mark.asyncio
async def test_resume_of_a_deployment_the_endpoint_does_not_cover_gets_4404(open_socket, deployment, new_app, token):
    other = await database_sync_to_async(lambda: transitions.create(new_app(), "HEAD"))()
    socket = await open_socket(f"/ws/apps/{deployment.app.name}/", token_headers(token))
    await socket.send_json_to({"type": "resume", "deployment": str(other.public_id), "after": 0})
    assert await close_code(socket) == 4404


@websocket_db
@pytest.mark.asyncio
@pytest.mark.parametrize("frame", ['{"type": "resume", "deployment": "x", "after": -3}', "not json", "[1, 2]"])
async def test_a_malformed_client_message_gets_4400(open_socket, deployment, token, frame):
    socket = await open_socket(deployment_path(deployment), token_headers(token))
    await receive_until_caught_up(socket)
    await socket.send_to(text_data=frame)
    assert await close_code(socket) == 4400


@websocket_db
@pytest.mark.asyncio
async def test_unknown_client_message_types_are_ignored(open_socket, deployment, token):
    socket = await open_socket(deployment_path(deployment), token_headers(token))
    await receive_until_caught_up(socket)
    await socket.send_json_to({"type": "subscribe-to-the-future"})
    await database_sync_to_async(record)(deployment, 1)
    assert seqs(await receive(socket, 1)) == [2]


@websocket_db
@pytest.mark.asyncio
async def test_live_events_arrive_only_after_their_transaction_commits(open_socket, deployment, token):
    socket = await open_socket(deployment_path(deployment), token_headers(token))
    await receive_until_caught_up(socket)
    written, commit = threading.Event(), threading.Event()

    def state_change():
        try:
            with transaction.atomic():
                events.record(deployment.pk, events.STEP, {"step": "clone", "status": "running"})
                written.set()
                commit.wait(TIMEOUT)
            events.publisher.flush()
        finally:
            connection.close()

    writer = threading.Thread(target=state_change)
    writer.start()
    try:
        await asyncio.to_thread(written.wait, TIMEOUT)
        await asyncio.to_thread(events.publisher.flush)
        assert await socket.receive_nothing(0.3), "published before commit"
    finally:
        commit.set()
        await asyncio.to_thread(writer.join, TIMEOUT)
    [message] = await receive(socket, 1)
    assert message == {
        "type": "event", "deployment": str(deployment.public_id), "seq": 2,
        "event": "deploy.step", "payload": {"step": "clone", "status": "running"},
    }


@websocket_db
@pytest.mark.asyncio
async def test_events_committed_during_the_replay_arrive_once_and_in_order(open_socket, deployment, token, monkeypatch):
    """Each replay query commits one more event right after reading: it is
    read by the next query *and* delivered live, and must be sent once."""
    await database_sync_to_async(record)(deployment, 2)  # seq 2, 3
    monkeypatch.setattr(consumers, "REPLAY_BATCH", 2)
    original = events.stored_after
    commits = []

    def racing_events_after(public_id, after, before=None, limit=None):
        rows = original(public_id, after, before, limit)
        if len(commits) < 3:
            record(deployment, 1)  # Committed and published while replaying.
            commits.append(after)
        return rows

    monkeypatch.setattr(events, "stored_after", racing_events_after)
    socket = await open_socket(deployment_path(deployment), token_headers(token))
    messages = await receive_until_caught_up(socket)
    # Read: [1, 2] (4 commits), [3, 4] (5 commits), [5] (6 commits), done.
    assert seqs(messages) == [1, 2, 3, 4, 5]
    assert messages[-1]["seq"] == 5
    # 4 and 5 also arrive live and are dropped; 6 was committed after the
    # last read and arrives live only.
    assert seqs(await receive(socket, 1)) == [6]
    assert await socket.receive_nothing(0.3)
    assert len(commits) == 3


@websocket_db
@pytest.mark.asyncio
async def test_no_gaps_or_duplicates_while_a_writer_races_the_replay(open_socket, deployment, token, monkeypatch):
    monkeypatch.setattr(consumers, "REPLAY_BATCH", 3)
    total = 60  # Events the writer adds to the stored deployment.queued.
    started = threading.Event()

    def writer():
        try:
            for i in range(total):
                with transaction.atomic():
                    events.record(deployment.pk, events.LOG, {"line": i})
                if i == 5:
                    started.set()
                # Paced as a worker's output: the writing outlasts joining
                # the live events (up to 0.1 s with Redis) and the replay.
                time.sleep(0.01)
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        await asyncio.to_thread(started.wait, TIMEOUT)
        socket = await open_socket(deployment_path(deployment), token_headers(token))
        received, caught_up = [], None
        while caught_up is None or not received or received[-1] < total + 1:
            [message] = await receive(socket, 1)
            if message["type"] == "event":
                received.append(message["seq"])
            elif message["type"] == "caught_up":
                caught_up = message["seq"]
    finally:
        await asyncio.to_thread(thread.join, 30)
    assert received == list(range(1, total + 2))
    assert caught_up < total + 1  # the writer did race the replay
    await asyncio.to_thread(events.publisher.flush)
    assert await socket.receive_nothing(0.3)


@websocket_db
@pytest.mark.asyncio
async def test_an_event_whose_publish_was_lost_is_fetched_before_the_next(open_socket, deployment, token, monkeypatch):
    socket = await open_socket(deployment_path(deployment), token_headers(token))
    await receive_until_caught_up(socket)
    lost = lose_first_publish(monkeypatch)
    await database_sync_to_async(record)(deployment, 2)  # seq 2 (lost), 3
    assert lost == [2]
    assert seqs(await receive(socket, 2)) == [2, 3]


@websocket_db
@pytest.mark.asyncio
async def test_app_endpoint_streams_only_its_apps_deployments(open_socket, new_app, token):
    def setup():
        mine, other = new_app(), new_app()
        return transitions.create(mine, "HEAD"), transitions.create(mine, "main"), transitions.create(other, "HEAD")

    first, second, foreign = await database_sync_to_async(setup)()
    socket = await open_socket(f"/ws/apps/{first.app.name}/", token_headers(token))
    await subscribed(socket, first, after=1)
    await database_sync_to_async(record)(foreign, 1)
    await database_sync_to_async(record)(first, 1)
    await database_sync_to_async(record)(second, 2)
    messages = await receive(socket, 3)
    assert [(m["deployment"], m["seq"]) for m in messages] == [
        (str(first.public_id), 2), (str(second.public_id), 2), (str(second.public_id), 3),
    ]
    assert await socket.receive_nothing(0.3)


@websocket_db
@pytest.mark.asyncio
async def test_all_endpoint_streams_every_deployment(open_socket, new_app, token):
    def setup():
        return transitions.create(new_app(), "HEAD"), transitions.create(new_app(), "HEAD")

    first, second = await database_sync_to_async(setup)()
    socket = await open_socket("/ws/deployments/", token_headers(token))
    await subscribed(socket, first, after=1)
    await database_sync_to_async(record)(first, 1)
    await database_sync_to_async(record)(second, 1)
    third = await database_sync_to_async(lambda: transitions.create(new_app(), "HEAD"))()
    await asyncio.to_thread(events.publisher.flush)
    mine = {str(d.public_id) for d in (first, second, third)}
    messages = await receive(socket, 3, deployments=mine)
    assert [(m["deployment"], m["seq"], m["event"]) for m in messages] == [
        (str(first.public_id), 2, "deploy.log"),
        (str(second.public_id), 2, "deploy.log"),
        (str(third.public_id), 1, "deploy.queued"),
    ]


@websocket_db
@pytest.mark.asyncio
async def test_deployment_endpoint_streams_only_its_deployment(open_socket, deployment, new_app, token):
    other = await database_sync_to_async(lambda: transitions.create(deployment.app, "main"))()
    socket = await open_socket(deployment_path(deployment), token_headers(token))
    await receive_until_caught_up(socket)
    await database_sync_to_async(record)(other, 1)
    await database_sync_to_async(record)(deployment, 1)
    assert [(m["deployment"], m["seq"]) for m in await receive(socket, 1)] == [(str(deployment.public_id), 2)]
    assert await socket.receive_nothing(0.3)


@websocket_db
@pytest.mark.asyncio
async def test_idle_connections_get_pings(open_socket, deployment, token, monkeypatch):
    monkeypatch.setattr(consumers, "PING_INTERVAL", 0.05)
    socket = await open_socket(deployment_path(deployment), token_headers(token))
    await receive_until_caught_up(socket)
    assert await socket.receive_json_from(TIMEOUT) == {"type": "ping"}
    assert await socket.receive_json_from(TIMEOUT) == {"type": "ping"}


@websocket_db
@pytest.mark.asyncio
async def test_rejected_connections_get_no_pings_or_events(open_socket, deployment, monkeypatch):
    monkeypatch.setattr(consumers, "PING_INTERVAL", 0.05)
    socket = await open_socket(deployment_path(deployment))
    assert await close_code(socket) == 4401
    await database_sync_to_async(record)(deployment, 1)
    assert await socket.receive_nothing(0.3)


# --- one hub per process: viewers share the subscription ---------------------


async def redis_subscribers():
    """Redis pub/sub subscribers of the group every event is published to: one per
    process with viewers."""
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    try:
        [(_, count)] = await client.pubsub_numsub(get_channel_layer()._get_group_channel_name(events.GROUP))
    finally:
        await client.aclose()
    return count


async def redis_channels_of_consumers():
    """Redis pub/sub channels of this test run's consumers' own channel-layer channels."""
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    try:
        return len(await client.pubsub_channels(f"{get_channel_layer().prefix}specific.*"))
    finally:
        await client.aclose()


@websocket_db
@pytest.mark.asyncio
async def test_viewers_in_one_process_share_one_subscription(open_socket, deployment, token):
    viewers = [await open_socket(deployment_path(deployment), token_headers(token)) for _ in range(3)]
    for viewer in viewers:
        await receive_until_caught_up(viewer)
    app_viewer = await open_socket(f"/ws/apps/{deployment.app.name}/", token_headers(token))
    await subscribed(app_viewer, deployment, after=1)
    # One subscriber and one channel-layer channel for the process (the
    # hub's), not one per viewer.
    assert await redis_subscribers() == 1
    assert await redis_channels_of_consumers() == 1

    await database_sync_to_async(record)(deployment, 2)
    for viewer in [*viewers, app_viewer]:
        assert seqs(await receive(viewer, 2)) == [2, 3]

    # The last viewer to leave ends the subscription; till then it stays.
    for viewer in viewers:
        await viewer.disconnect()
    assert await redis_subscribers() == 1
    await database_sync_to_async(record)(deployment, 1)
    assert seqs(await receive(app_viewer, 1, deployments={str(deployment.public_id)})) == [4]
    await app_viewer.disconnect()
    assert await redis_subscribers() == 0
    assert await redis_channels_of_consumers() == 0


@websocket_db
@pytest.mark.asyncio
async def test_a_viewer_waiting_for_the_database_holds_up_no_other_viewer(open_socket, deployment, token,
                                                                          monkeypatch):
    """The hub hands live events to every viewer in turn: one whose replay
    is stuck in the database keeps them for later, the others get them now."""
    watching = await open_socket(deployment_path(deployment), token_headers(token))
    await receive_until_caught_up(watching)
    original = events.stored_after
    reading, release = threading.Event(), threading.Event()

    def stuck_events_after(*args, **kwargs):
        reading.set()
        release.wait(TIMEOUT)
        return original(*args, **kwargs)

    monkeypatch.setattr(events, "stored_after", stuck_events_after)
    replaying = await open_socket(deployment_path(deployment), token_headers(token))
    await asyncio.to_thread(reading.wait, TIMEOUT)

    def record_elsewhere():
        # Not in the sync thread database_sync_to_async uses: the stuck
        # replay holds it.
        try:
            record(deployment, 2)
        finally:
            connection.close()

    try:
        await asyncio.to_thread(record_elsewhere)
        assert seqs(await receive(watching, 2)) == [2, 3]
        assert await replaying.receive_nothing(0.2)
    finally:
        release.set()
    # The replay read seq 1-3; the live 2 and 3 it kept are duplicates by then.
    messages = await receive_until_caught_up(replaying)
    assert seqs(messages) == [1, 2, 3] and messages[-1]["seq"] == 3
    assert await replaying.receive_nothing(0.3)


# --- API tokens in the admin --------------------------------------------------

TOKEN_RE = re.compile(r"norn_[A-Za-z0-9_-]{20,}")


@pytest.mark.django_db
def test_admin_shows_a_new_token_once_and_stores_only_its_digest(admin_client, admin_user):
    response = admin_client.post(
        "/admin/deployments/apitoken/add/", {"user": admin_user.pk, "name": "laptop CLI"}, follow=True
    )
    page = response.content.decode()
    [token] = TOKEN_RE.findall(page)
    row = ApiToken.objects.get()
    assert (row.user, row.name, row.prefix) == (admin_user, "laptop CLI", token[:12])
    assert row.digest == ApiToken.hash(token) and token not in row.digest
    assert row.last_used_at is None
    # Never again: not on the list, not on its page, not in the admin log.
    for url in ("/admin/deployments/apitoken/", f"/admin/deployments/apitoken/{row.pk}/change/", response.request["PATH_INFO"]):
        again = admin_client.get(url).content.decode()
        assert token not in again
    assert row.prefix in admin_client.get("/admin/deployments/apitoken/").content.decode()
    assert not any(token in f"{e.object_repr} {e.change_message}" for e in LogEntry.objects.all())

    assert ApiToken.authenticate(token) == admin_user
    row.refresh_from_db()
    assert row.last_used_at is not None


@pytest.mark.django_db
def test_staff_see_and_issue_only_their_own_tokens(client):
    staff = User.objects.create_user("staff", password="x", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__endswith="_apitoken"))
    other = User.objects.create_user("other", password="x")
    ApiToken.issue(other, "someone else's")
    ApiToken.issue(staff, "mine")
    client.force_login(staff)

    listing = client.get("/admin/deployments/apitoken/").content.decode()
    assert "mine" in listing and "someone else" not in listing

    refused = client.post("/admin/deployments/apitoken/add/", {"user": other.pk, "name": "sneaky"})
    assert refused.status_code == 200 and not ApiToken.objects.filter(name="sneaky").exists()

    client.post("/admin/deployments/apitoken/add/", {"user": staff.pk, "name": "second"})
    assert ApiToken.objects.get(name="second").user == staff
    theirs = ApiToken.objects.get(user=other)
    assert client.get(f"/admin/deployments/apitoken/{theirs.pk}/change/").status_code == 302  # "does not exist"


@pytest.mark.django_db
def test_a_token_can_be_renamed_but_not_moved_to_another_user(admin_client, admin_user):
    row, token = ApiToken.issue(admin_user, "old name")
    other = User.objects.create_user("other", password="x")
    admin_client.post(f"/admin/deployments/apitoken/{row.pk}/change/", {"user": other.pk, "name": "new name"})
    row.refresh_from_db()
    assert (row.user, row.name, row.digest) == (admin_user, "new name", ApiToken.hash(token))


def record_unpublished(deployment, count=1):
    """Commit events whose publish was lost (Redis blip, full channel)."""
    from django.db.models import F

    from deployments.models import Deployment, Event

    for i in range(count):
        with transaction.atomic():
            Deployment.objects.filter(pk=deployment.pk).update(last_event_seq=F("last_event_seq") + 1)
            seq = Deployment.objects.values_list("last_event_seq", flat=True).get(pk=deployment.pk)
            Event.objects.create(deployment=deployment, seq=seq, kind=events.LOG, payload={"line": f"lost {i}"})


@websocket_db
@pytest.mark.asyncio
async def test_a_lost_last_event_arrives_with_the_next_ping(open_socket, deployment, token, monkeypatch):
    monkeypatch.setattr(consumers, "PING_INTERVAL", 0.2)
    socket = await open_socket(deployment_path(deployment), token_headers(token))
    await receive_until_caught_up(socket)
    await database_sync_to_async(record_unpublished)(deployment, 2)
    # No later live event will reveal the gap: the ping tick fills it.
    messages = [m for m in [await socket.receive_json_from(TIMEOUT) for _ in range(3)] if m["type"] == "event"]
    assert [m["payload"]["line"] for m in messages] == ["lost 0", "lost 1"]
    assert [m["seq"] for m in messages] == [2, 3]


@websocket_db
@pytest.mark.asyncio
@pytest.mark.parametrize("endpoint", ["app", "all"])
async def test_app_and_all_endpoints_get_a_lost_last_event_with_the_next_ping(open_socket, deployment, token,
                                                                              monkeypatch, endpoint):
    monkeypatch.setattr(consumers, "PING_INTERVAL", 0.2)
    path = f"/ws/apps/{deployment.app.name}/" if endpoint == "app" else "/ws/deployments/"
    socket = await open_socket(path, token_headers(token))
    await subscribed(socket, deployment, after=1)
    await database_sync_to_async(record_unpublished)(deployment, 2)
    mine = {str(deployment.public_id)}
    messages = []
    while len(messages) < 2:
        message = await socket.receive_json_from(TIMEOUT)
        if message["type"] == "event" and message["deployment"] in mine:
            messages.append(message)
    assert [(m["seq"], m["payload"]["line"]) for m in messages] == [(2, "lost 0"), (3, "lost 1")]
