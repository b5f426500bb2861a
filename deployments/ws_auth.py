"""Who is on the other end of a WebSocket (docs/live.md), as Channels middleware.

It puts the user in scope["user"], as channels.auth.AuthMiddleware does, but
takes an API token as well as the session, and turns a session away unless
one of our own pages opened the socket. Consumers only check permissions.
"""

from importlib import import_module
from typing import Any
from urllib.parse import urlparse

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from channels.sessions import CookieMiddleware
from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser

from deployments.models import ApiToken

# scope["auth_method"]: how the user in scope["user"] proved who they are.
TOKEN = "token"
SESSION = "session"

# scope["auth_refused"]: why credentials of a known user were turned away.
# The user is then anonymous, and the client hears 4403 rather than 4401:
# logging in again will not help.
INACTIVE_USER = "inactive user"
FOREIGN_ORIGIN = "foreign origin"

# (the user, anonymous if none; why a known user was refused, or None)
Identity = tuple[AbstractBaseUser | AnonymousUser, str | None]


class WebSocketAuthMiddleware(BaseMiddleware):
    """Sets scope["user"], scope["auth_method"] and scope["auth_refused"].

    A connection that sends an Authorization header is authenticated by the
    token alone; otherwise by the session of the cookie CookieMiddleware put
    in the scope (use NornAuthMiddlewareStack).
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        if "session" not in scope:
            # Read only: a WebSocket never changes the session. Channels'
            # SessionMiddleware would also wrap `send` to save it, a check
            # on every frame sent to every viewer (bench/fanout.py: an
            # eighth of daphne's time sending live events).
            key = scope.get("cookies", {}).get(settings.SESSION_COOKIE_NAME)
            scope["session"] = import_module(settings.SESSION_ENGINE).SessionStore(key)
        headers = dict(scope.get("headers", []))
        authorization = headers.get(b"authorization")
        if authorization is not None:
            user, refused = await database_sync_to_async(_token_user)(authorization)
            method = TOKEN
        else:
            user, refused = await _session_user(scope, headers.get(b"origin"))
            method = SESSION
        scope["user"] = user
        scope["auth_method"] = method if user.is_authenticated else None
        scope["auth_refused"] = refused
        return await super().__call__(scope, receive, send)


def NornAuthMiddlewareStack(inner: Any) -> Any:  # noqa: N802 (named like channels' AuthMiddlewareStack)
    """Cookies, then WebSocketAuthMiddleware (which reads the session) around `inner`."""
    return CookieMiddleware(WebSocketAuthMiddleware(inner))


def _token_user(authorization: bytes) -> Identity:
    """Runs in a worker thread. (user, why refused) for an Authorization header."""
    # Browsers cannot set this header on a WebSocket, so a cross-site page
    # cannot use it: token connections need no Origin check.
    token = ApiToken.from_authorization(authorization.decode("latin1"))
    if token is None:
        return AnonymousUser(), None
    user = ApiToken.authenticate(token)
    if user is not None:
        return user, None
    return AnonymousUser(), INACTIVE_USER if _token_of_inactive_user(token) else None


async def _session_user(scope: dict[str, Any], raw_origin: bytes | None) -> Identity:
    """(user, why refused) for the session cookie."""
    session = scope.get("session")
    if session is not None and "\x00" in (session.session_key or ""):
        # A forged cookie: looking it up would make PostgreSQL raise.
        return AnonymousUser(), None
    user = await get_user(scope)
    if not user.is_authenticated:
        inactive = await database_sync_to_async(_session_of_inactive_user)(scope.get("session"))
        return user, INACTIVE_USER if inactive else None
    # The browser sends the session cookie with any page's WebSocket,
    # including another site's: only our own pages may use it.
    if not origin_allowed(raw_origin):
        return AnonymousUser(), FOREIGN_ORIGIN
    return user, None


def origin_allowed(raw_origin: bytes | None) -> bool:
    """The Origin check of channels' AllowedHostsOriginValidator, for one header value.

    Not that validator itself around the router: it would refuse CLI
    connections authenticated by API token, which send no Origin.
    """
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = ["localhost", "127.0.0.1", "[::1]"]
    try:
        parsed = urlparse(raw_origin.decode("latin1")) if raw_origin else None
    except ValueError:
        parsed = None
    return OriginValidator(None, allowed).valid_origin(parsed)


def _token_of_inactive_user(token: str) -> bool:
    """A correct token whose user was deactivated: refused, not unknown.

    ApiToken.authenticate answers None for both.
    """
    if not token.startswith("norn_"):
        return False
    return ApiToken.objects.filter(
        prefix=token[:12], digest=ApiToken.hash(token), user__is_active=False
    ).exists()


def _session_of_inactive_user(session: Any) -> bool:
    """A session of a user deactivated since logging in.

    Django's auth backend treats it as anonymous; it is still a known user
    who is not allowed in.
    """
    if session is None:
        return False
    user_id = session.get(SESSION_KEY)
    if user_id is None:
        return False
    User = get_user_model()
    try:
        user_id = User._meta.pk.to_python(user_id)
    except Exception:  # A tampered or stale session value: plain anonymous.
        return False
    return User._default_manager.filter(pk=user_id, is_active=False).exists()
