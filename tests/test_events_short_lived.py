"""No event is lost on the app and all endpoints, even when the process that
wrote it ends at once: `deploy --no-wait` and `cancel` run as real
subprocesses while real WebSocket clients watch a real daphne (docs/live.md).

Before the publisher was flushed at exit, every `deploy.queued` of
`--no-wait` and every event of a deployment cancelled while queued died with
the CLI process, and these sockets never heard of them.
"""

import asyncio
import json
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.db import connection, transaction

from apps_registry.models import App
from deployments import events, transitions
from deployments.models import ApiToken, Deployment, Event
from tests.support.cluster import REPO_ROOT
from tests.support.publishing import lose_first_publish
from tests.support.servers import Daphne, database_url_for_tests

pytestmark = pytest.mark.django_db(transaction=True)

# A bound on each wait, never a measure of speed: the CLI starts Django.
TIMEOUT = 60
ROUNDS = 2


@pytest.fixture
def daphne(tmp_path):
    with Daphne(tmp_path / "daphne.log", tmp_path / "access.log") as server:
        yield server


@pytest.fixture
def token():
    user = User.objects.create_user("watcher")
    user.user_permissions.add(Permission.objects.get(codename="view_deployment"))
    return ApiToken.issue(user, "tests")[1]


def manage(*args):
    env = {**os.environ, "DATABASE_URL": database_url_for_tests(), "NORN_APPS_DIR": str(settings.NORN_APPS_DIR)}
    env = {k: v for k, v in env.items() if k not in ("NORN_URL", "NORN_API_TOKEN")}
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def cancelled_in_process(app):
    """A deployment queued and cancelled here; its events are published (flushed)."""
    deployment = transitions.create(app, "HEAD")
    transitions.request_cancel(deployment, "tester")
    events.publisher.flush()
    return deployment


async def in_thread(function, *args):
    """Runs `function` in a worker thread, closing the connection it opened there
    (a connection left open keeps the test database from being dropped)."""

    def run():
        try:
            return function(*args)
        finally:
            connection.close()

    return await asyncio.to_thread(run)


class Watcher:
    """A WebSocket client of one endpoint, collecting (deployment, seq, event) in arrival order."""

    def __init__(self, url, token):
        self.url, self.token = url, token
        self.received = []

    async def open(self, known):
        from websockets.asyncio.client import connect

        self.ws = await connect(self.url, additional_headers={"Authorization": f"Token {self.token}"},
                                proxy=None, ping_interval=None, open_timeout=TIMEOUT)
        # The endpoints acknowledge nothing when they subscribe; a resume's
        # caught_up is answered after the subscription.
        await self.ws.send(json.dumps({"type": "resume", "deployment": str(known.public_id),
                                       "after": known.last_event_seq}))
        while (await self.next())["type"] != "caught_up":
            pass

    async def next(self):
        message = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
        if message["type"] == "event":
            self.received.append((message["deployment"], message["seq"], message["event"]))
        return message

    async def until(self, expected):
        """Read until every (deployment, seq, event) in `expected` arrived; at most TIMEOUT
        (the server's pings would keep a per-message timeout from ever running out)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while not set(expected) <= set(self.received):
            try:
                await asyncio.wait_for(self.next(), deadline - loop.time())
            except TimeoutError:
                missing = sorted(set(expected) - set(self.received))
                raise AssertionError(f"{self.url} never got {missing}") from None

    def of(self, deployments):
        return [item for item in self.received if item[0] in deployments]


@pytest.mark.asyncio
async def test_app_and_all_sockets_get_every_event_of_no_wait_deploys_and_cancels(daphne, token, make_app):
    def setup():
        make_app("brief", "app: brief\nrole: worker\n")
        make_app("other", "app: other\nrole: worker\n")
        return cancelled_in_process(App.objects.get(name="brief"))

    known = await in_thread(setup)
    base = f"ws://127.0.0.1:{daphne.port}/ws"
    app_socket, all_socket = Watcher(f"{base}/apps/brief/", token), Watcher(f"{base}/deployments/", token)
    await app_socket.open(known)
    await all_socket.open(known)

    # Each deployment: queued by `deploy --no-wait` in one process, cancelled
    # while still queued (no worker runs) by `cancel` in another.
    for app_name in ["brief", "other"] * ROUNDS:
        out = await in_thread(manage, "deploy", app_name, "--no-wait")
        deployment = await in_thread(lambda: Deployment.objects.filter(app__name=app_name).latest("queued_at"))
        assert str(deployment.public_id) in out
        await in_thread(manage, "cancel", str(deployment.public_id))

    def stored():
        rows = Event.objects.exclude(deployment=known).order_by("id")
        return [(str(e.deployment.public_id), e.seq, e.kind, e.deployment.app.name)
                for e in rows.select_related("deployment__app")]

    rows = await in_thread(stored)
    everything = [(d, seq, kind) for d, seq, kind, _ in rows]
    of_brief = [(d, seq, kind) for d, seq, kind, app in rows if app == "brief"]
    # Each deployment's deploy.queued (from deploy) and deploy.cancelled (from cancel), at least.
    for name, expected in (("queued", events.QUEUED), ("cancelled", events.CANCELLED)):
        assert sum(1 for _, _, kind in everything if kind == expected) == 2 * ROUNDS, (name, everything)

    await all_socket.until(everything)
    await app_socket.until(of_brief)
    mine = {d for d, _, _ in everything}
    # Exactly the stored events, each once, in seq order per deployment (and
    # here also in commit order: one process after the other).
    assert all_socket.of(mine) == everything
    assert app_socket.of(mine) == of_brief
    await app_socket.ws.close()
    await all_socket.ws.close()


@pytest.mark.asyncio
async def test_a_deployment_first_seen_live_gets_what_it_committed_since_the_subscription(daphne, token, make_app,
                                                                                         monkeypatch):
    """Its first publish lost: the next event reveals the gap, filled from the database;
    what it committed before the client subscribed stays history."""

    def setup():
        make_app("gaps", "app: gaps\nrole: worker\n")
        app = App.objects.get(name="gaps")
        return cancelled_in_process(app), transitions.create(app, "HEAD")

    known, running = await in_thread(setup)  # running: seq 1 committed before the client came
    watcher = Watcher(f"ws://127.0.0.1:{daphne.port}/ws/apps/gaps/", token)
    await watcher.open(known)

    lost = lose_first_publish(monkeypatch)

    def write(count):
        for i in range(count):
            with transaction.atomic():
                events.record(running.pk, events.LOG, {"line": f"line {i}"})
        events.publisher.flush()

    await in_thread(write, 3)  # seq 2 (lost), 3, 4
    assert lost == [2]
    key = str(running.public_id)
    await watcher.until([(key, 4, events.LOG)])
    assert watcher.of({key}) == [(key, 2, events.LOG), (key, 3, events.LOG), (key, 4, events.LOG)]
    await watcher.ws.close()
