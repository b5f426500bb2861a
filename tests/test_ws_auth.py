"""The WebSocket authentication middleware (deployments/ws_auth.py) on its own:
what it puts in the scope for each kind of credential, around a stand-in
consumer. tests/test_consumers.py checks the close codes clients hear."""

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import User
from django.db import connections
from django.test import Client

from deployments import ws_auth
from deployments.models import ApiToken

ALLOWED_ORIGIN = b"http://localhost:8000"
TIMEOUT = 5


async def scope_seen(headers):
    """The scope the middleware stack hands the application for these headers."""
    seen = []

    async def application(scope, receive, send):
        seen.append(scope)
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await receive()  # websocket.disconnect

    communicator = WebsocketCommunicator(ws_auth.NornAuthMiddlewareStack(application), "/ws/", headers=headers)
    try:
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        assert connected
        await communicator.disconnect(timeout=TIMEOUT)
    finally:
        # The middleware's queries ran in asgiref's sync thread; its
        # connection must not outlive the test database.
        await sync_to_async(connections.close_all)()
    [scope] = seen
    return scope


def user_and_session(active_after_login=True):
    """A user, and the Cookie header of a browser that logged in as them."""
    user = User.objects.create_user("someone", password="x")
    client = Client()
    client.force_login(user)
    if not active_after_login:
        User.objects.filter(pk=user.pk).update(is_active=False)
    return user, f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


def token_of_new_user(active=True):
    user = User.objects.create_user("cli", password="x")
    token = ApiToken.issue(user, "tests")[1]
    if not active:
        User.objects.filter(pk=user.pk).update(is_active=False)
    return user, token


def identity(scope):
    user = scope["user"]
    return (user.pk if user.is_authenticated else None), scope["auth_method"], scope["auth_refused"]


websocket_db = pytest.mark.django_db(transaction=True)


@websocket_db
@pytest.mark.asyncio
async def test_a_token_authenticates_without_an_origin():
    user, token = await database_sync_to_async(token_of_new_user)()
    scope = await scope_seen([(b"authorization", f"Token {token}".encode())])
    assert identity(scope) == (user.pk, ws_auth.TOKEN, None)


@websocket_db
@pytest.mark.asyncio
async def test_a_bad_token_is_anonymous_even_with_a_valid_session():
    _, cookie = await database_sync_to_async(user_and_session)()
    scope = await scope_seen([
        (b"authorization", b"Token norn_not-a-real-token-at-all"),
        (b"cookie", cookie),
        (b"origin", ALLOWED_ORIGIN),
    ])
    assert identity(scope) == (None, None, None)


@websocket_db
@pytest.mark.asyncio
async def test_another_authorization_scheme_is_anonymous():
    _, token = await database_sync_to_async(token_of_new_user)()
    scope = await scope_seen([(b"authorization", f"Bearer {token}".encode())])
    assert identity(scope) == (None, None, None)


@websocket_db
@pytest.mark.asyncio
async def test_the_token_of_a_deactivated_user_is_refused():
    _, token = await database_sync_to_async(token_of_new_user)(active=False)
    scope = await scope_seen([(b"authorization", f"Token {token}".encode())])
    assert identity(scope) == (None, None, ws_auth.INACTIVE_USER)


@websocket_db
@pytest.mark.asyncio
async def test_a_session_from_our_own_page_authenticates():
    user, cookie = await database_sync_to_async(user_and_session)()
    scope = await scope_seen([(b"cookie", cookie), (b"origin", ALLOWED_ORIGIN)])
    assert identity(scope) == (user.pk, ws_auth.SESSION, None)


@websocket_db
@pytest.mark.asyncio
@pytest.mark.parametrize("origin", [b"http://evil.example", None])
async def test_a_session_from_a_foreign_or_unknown_page_is_refused(origin):
    _, cookie = await database_sync_to_async(user_and_session)()
    headers = [(b"cookie", cookie)] + ([(b"origin", origin)] if origin else [])
    scope = await scope_seen(headers)
    assert identity(scope) == (None, None, ws_auth.FOREIGN_ORIGIN)


@websocket_db
@pytest.mark.asyncio
async def test_the_session_of_a_deactivated_user_is_refused():
    _, cookie = await database_sync_to_async(user_and_session)(active_after_login=False)
    scope = await scope_seen([(b"cookie", cookie), (b"origin", ALLOWED_ORIGIN)])
    assert identity(scope) == (None, None, ws_auth.INACTIVE_USER)


@websocket_db
@pytest.mark.asyncio
async def test_no_credentials_from_a_foreign_page_are_just_anonymous():
    # Anonymous first, origin second: such a client hears 4401, not 4403.
    scope = await scope_seen([(b"origin", b"http://evil.example")])
    assert identity(scope) == (None, None, None)


@pytest.mark.django_db
def test_a_session_naming_no_valid_user_id_is_not_an_inactive_user():
    assert not ws_auth._session_of_inactive_user({SESSION_KEY: "not-a-number"})
    assert not ws_auth._session_of_inactive_user({})
    assert not ws_auth._session_of_inactive_user(None)
