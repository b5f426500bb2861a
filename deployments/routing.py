"""WebSocket URLs (docs/live.md); norn_project/asgi.py mounts them."""

from django.urls import path, re_path

from deployments import consumers

# Ids and names are matched loosely (`str`) so that a malformed or unknown one
# is answered by the consumer with close code 4404, as the protocol says,
# instead of failing the handshake in the router.
websocket_urlpatterns = [
    path("ws/deployments/", consumers.AllDeploymentsConsumer.as_asgi()),
    path("ws/deployments/<str:deployment_id>/", consumers.DeploymentConsumer.as_asgi()),
    path("ws/apps/<str:name>/", consumers.AppConsumer.as_asgi()),
    # Last: every other path (/ws/, /ws/nope/, /nope) is closed with 4404.
    re_path(r"", consumers.NotFoundConsumer.as_asgi()),
]
