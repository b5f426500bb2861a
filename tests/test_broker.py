"""The task queue's broker (deployments/broker.py) is woken by PostgreSQL's
NOTIFY when a task is queued, not by a poll, and still finds tasks nobody
announced."""

import threading
import time

import pytest
from django.db import connection

from deployments import broker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queue_key():
    yield f"test-broker-{time.monotonic_ns()}"
    broker.NotifiedORM._drop_listener() if broker.NotifiedORM._listener else None


def dequeue_in_thread(key):
    """Start a thread that dequeues until it gets a task; returns (thread, result dict)."""
    result = {}

    def work():
        taker = broker.NotifiedORM(list_key=key)
        while not result:
            tasks = taker.dequeue()
            if tasks:
                result["tasks"], result["at"] = tasks, time.monotonic()
        connection.close()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, result


def test_a_queued_task_wakes_the_waiting_broker_at_once(queue_key, monkeypatch):
    # Were it not woken, it would wait a minute before looking again.
    monkeypatch.setattr(broker, "WAKE_EVERY", 60.0)
    thread, result = dequeue_in_thread(queue_key)
    time.sleep(0.5)  # it is waiting now
    assert not result
    queued_at = time.monotonic()
    broker.NotifiedORM(list_key=queue_key).enqueue("payload")
    thread.join(timeout=20)
    assert result, "the broker was not woken by the new task"
    assert [payload for _, payload in result["tasks"]] == ["payload"]
    assert result["at"] - queued_at < 20


def test_without_a_listening_connection_it_still_finds_tasks(queue_key, monkeypatch):
    monkeypatch.setattr(broker, "WAKE_EVERY", 0.2)
    monkeypatch.setattr(broker.NotifiedORM, "_listen", lambda self: None)  # as when LISTEN fails
    broker.NotifiedORM(list_key=queue_key).enqueue("unannounced")
    thread, result = dequeue_in_thread(queue_key)
    thread.join(timeout=20)
    assert [payload for _, payload in result["tasks"]] == ["unannounced"]
