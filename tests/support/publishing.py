"""Losing a live publish on purpose: what a Redis outage, or a process killed
before it published, does to one event (the row is committed, nobody is told)."""

from deployments import events


def lose_first_publish(monkeypatch) -> list:
    """From now on the next event's publish is dropped; the rest go out.
    Returns the list that receives the lost event's seq."""
    real_send = events.publisher.send
    lost = []

    def lose_first(groups, body):
        if not lost:
            lost.append(body["seq"])
            return
        real_send(groups, body)

    monkeypatch.setattr(events.publisher, "send", lose_first)
    return lost
