"""Follow a deployment's events from the database, in order, without gaps.

The event table is the source of truth. The CLI follows the live stream
(deployments/client.py) and comes here when no Norn server can serve it,
when asked to with --db, and for a deployment that has ended (one query
for its events, one for its status, and it returns).
"""

import time
from collections.abc import Callable, Iterator

from deployments.models import Deployment, Event


def events_after(deployment_id: int, seq: int) -> list[Event]:
    return list(
        Event.objects.filter(deployment_id=deployment_id, seq__gt=seq).order_by("seq")
    )


def follow(
    deployment_id: int, after: int = 0, poll: float = 0.2, idle_callback: Callable[[float], None] | None = None
) -> Iterator[Event]:
    """Yield events after `after` until the deployment is terminal.

    `idle_callback(seconds)` gets, after every poll, how long nothing new came.
    """
    last = after
    idle_since = time.monotonic()
    while True:
        batch = events_after(deployment_id, last)
        for event in batch:
            last = event.seq
            yield event
        if batch:
            idle_since = time.monotonic()
        deployment = Deployment.objects.only("status", "last_event_seq").get(pk=deployment_id)
        if deployment.is_terminal and deployment.last_event_seq <= last:
            return
        if idle_callback:
            idle_callback(time.monotonic() - idle_since)
        time.sleep(poll)
