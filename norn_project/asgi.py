"""ASGI entry point: daphne serves HTTP (Django) and WebSocket (Channels) here."""

import os

from django.core.asgi import get_asgi_application

from norn_project import process

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "norn_project.settings")
process.WEB = True  # before the settings load: web processes pool their connections

# Django must be set up before anything imports models (consumers do).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from deployments.routing import websocket_urlpatterns  # noqa: E402
from deployments.ws_auth import NornAuthMiddlewareStack  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_asgi_app,
    # No AllowedHostsOriginValidator around this: it would refuse CLI
    # connections authenticated by API token, which send no Origin. The
    # middleware checks the Origin of session-authenticated connections.
    "websocket": NornAuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
})
