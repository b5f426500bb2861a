"""Follow a deployment for the full CLI commands: live over Norn's WebSocket
stream (deployments/stream.py), else from the database.

`follow_deployment` yields a deployment's events in `seq` order, exactly once:
live from `<NORN_URL>/ws/deployments/<uuid>/?after=<seq>` when a Norn server
answers, resuming from the last `seq` after a dropped connection, and from
the database (deployments/follow.py) when no server can serve the stream, or
when the deployment has already ended (its record is complete there).
"""

from collections.abc import Callable, Iterator

from django.conf import settings

from deployments import follow as db_follow
from deployments.models import Deployment, Event
from deployments.stream import DEFAULT_URL, RECONNECTS, LiveStream, StreamedEvent, Unavailable

__all__ = ["LiveStream", "StreamedEvent", "api_token", "follow_deployment", "server_url"]


def server_url() -> str:
    return settings.NORN_URL or DEFAULT_URL


def api_token() -> str:
    return settings.NORN_API_TOKEN


def follow_deployment(
    deployment: Deployment,
    *,
    after: int = 0,
    use_db: bool = False,
    idle_callback: Callable[[float], None] | None = None,
    warn: Callable[[str], None] | None = None,
    info: Callable[[str], None] | None = None,
    reconnects: int = RECONNECTS,
) -> Iterator[StreamedEvent | Event]:
    """Yield the deployment's events after `after` until it ends.

    Over the WebSocket stream unless `use_db`; whenever the stream cannot be
    used, `warn` says so and the rest comes from the database, continuing
    after the last event already yielded. `info` gets progress notes for
    verbose output (which transport, reconnects). `idle_callback(seconds)`
    runs while nothing happens.
    """
    warn = warn or (lambda text: None)
    last = after
    # An ended deployment's events are all in the database (the transaction
    # that ends it writes its last event): no server, no connection, no wait.
    if deployment.is_terminal:
        use_db = True
    if not use_db:
        live = LiveStream(
            deployment.public_id, base_url=server_url(), token=api_token(),
            after=after, idle_callback=idle_callback, info=info, reconnects=reconnects,
        )
        try:
            for event in live:
                last = event.seq
                yield event
            return
        except Unavailable as exc:
            warn(f"{exc}: following from the database")
    yield from db_follow.follow(deployment.pk, after=last, idle_callback=idle_callback)


