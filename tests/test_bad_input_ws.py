"""No WebSocket input gets a traceback: unknown routes close 4404, bad frames 4400.

Routes and frames are tried against a real daphne (what a client meets), and
frames also through the ASGI stack in-process, where a traceback would fail
the test at once.
"""

import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User
from django.db import connections
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from deployments import consumers
from deployments.models import ApiToken
from norn_project.asgi import application
from tests.support.servers import Daphne

TIMEOUT = 5
UNKNOWN_PATHS = ["/ws/", "/ws/nope/", "/nope", "/", "/ws/deployments/x/y/", "/ws/apps/", "/ws/%00/"]


def viewer_token():
    user = User.objects.create_user(f"viewer-{uuid.uuid4().hex[:6]}", password="x")
    user.user_permissions.add(Permission.objects.get(codename="view_deployment"))
    return ApiToken.issue(user, "tests")[1]


@pytest.fixture
def server(tmp_path, apps_dir):
    with Daphne(tmp_path / "daphne.log", tmp_path / "access.log", extra_env={"NORN_APPS_DIR": str(apps_dir)}) as daphne:
        yield daphne


def close_code(url, headers=None, send=None):
    """Connect, optionally send frames, and return the close code the server sent."""
    with connect(url, additional_headers=headers or {}, open_timeout=TIMEOUT, max_size=None) as socket:
        try:
            for frame in send or []:
                socket.send(frame)
            while True:
                socket.recv(timeout=TIMEOUT)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    return None


@pytest.mark.django_db(transaction=True)
def test_unknown_routes_close_4404_without_a_traceback(server):
    ws = server.url.replace("http://", "ws://")
    for path in UNKNOWN_PATHS:
        assert close_code(ws + path) == 4404, path
    assert "Traceback" not in server.output()
    assert " 500 " not in server.access_log()


@pytest.mark.django_db(transaction=True)
def test_malformed_and_oversized_frames_close_4400_without_a_traceback(server, make_app):
    make_app("ws-frames", "app: ws-frames\nrole: worker\n")
    token = viewer_token()
    ws = server.url.replace("http://", "ws://") + "/ws/apps/ws-frames/"
    headers = {"Authorization": f"Token {token}"}
    frames = [
        "not json",
        "[" * 100_000 + "]" * 100_000,          # oversized, and nested
        "[" * 20_000 + "]" * 20_000,            # under the cap, nested past Python's recursion limit
        '{"a":' * 10_000 + "1" + "}" * 10_000,
        "[1, 2]",
        '"resume"',
        "1" * 5000,                             # more digits than int() takes
        b"\x00\x01binary",
        json.dumps({"type": "resume", "deployment": "x", "after": "9" * 5000}),
        json.dumps({"type": "resume", "deployment": "x", "after": 2**64}),
        json.dumps({"type": "resume", "deployment": "x", "pad": "a" * (70 * 1024)}),
    ]
    for frame in frames:
        assert close_code(ws, headers, [frame]) == 4400, repr(frame[:40])
    assert "Traceback" not in server.output()


@pytest.mark.django_db(transaction=True)
def test_hostile_names_ids_and_credentials_close_cleanly(server):
    ws = server.url.replace("http://", "ws://")
    token = viewer_token()
    headers = {"Authorization": f"Token {token}"}
    for path in ["/ws/apps/%00/", "/ws/apps/x%00y/", "/ws/deployments/%00/", "/ws/apps/" + "a" * 5000 + "/",
                 "/ws/apps/é😀/", "/ws/deployments/00000000-0000-0000-0000-000000000000/"]:
        assert close_code(ws + path, headers) == 4404, path
    assert close_code(ws + "/ws/deployments/", {"Authorization": "Token norn_\x01\x02"}) == 4401
    assert close_code(ws + "/ws/deployments/", {"Authorization": "Token " + "x" * 10000}) == 4401
    assert close_code(ws + "/ws/deployments/", {"Cookie": "sessionid=" + "a" * 5000}) == 4401
    assert "Traceback" not in server.output()


# --- in-process: the same through the ASGI stack ------------------------------------


async def closed_with(path, headers=(), frame=None, binary=None):
    communicator = WebsocketCommunicator(application, path, headers=list(headers))
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    if frame is not None:
        await communicator.send_to(text_data=frame)
    if binary is not None:
        await communicator.send_to(bytes_data=binary)
    try:
        while True:
            message = await communicator.receive_output(TIMEOUT)
            if message["type"] == "websocket.close":
                return message["code"]
    finally:
        if not communicator.future.done():
            await communicator.disconnect(timeout=TIMEOUT)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_nul_in_names_tokens_and_sessions_is_no_error():
    # A NUL reached PostgreSQL (which raises) through a name, a token or a
    # session cookie the test client can send but a browser never would.
    assert await closed_with("/ws/apps/x\x00y/") == consumers.NOT_AUTHENTICATED
    assert await closed_with("/ws/deployments/", [(b"authorization", b"Token norn_abc\x00def")]) == 4401
    assert await closed_with("/ws/deployments/", [(b"cookie", b"sessionid=abcdefgh\x00ijk")]) == 4401
    await sync_to_async(connections.close_all)()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_frames_in_process(make_app):
    def setup():
        make_app("ws-frames2", "app: ws-frames2\nrole: worker\n")
        return viewer_token()

    token = await sync_to_async(setup)()
    auth = [(b"authorization", f"Token {token}".encode())]
    path = "/ws/apps/ws-frames2/"
    assert await closed_with(path, auth, frame="[" * 20_000 + "]" * 20_000) == consumers.BAD_REQUEST
    assert await closed_with(path, auth, frame="x" * (consumers.MAX_FRAME_BYTES + 1)) == consumers.BAD_REQUEST
    assert await closed_with(path, auth, binary=b"{}") == consumers.BAD_REQUEST
    assert await closed_with("/ws/nope/") == consumers.NOT_FOUND
    # The consumers' queries ran in asgiref's sync thread; its connection
    # must not outlive the test database.
    await sync_to_async(connections.close_all)()
