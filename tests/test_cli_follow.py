"""The CLI follows deployments over the WebSocket stream of a real daphne: every
step once and in order, across a server restart, and back to the database
(saying so) when no server can serve it; the API token is never shown."""

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User

from apps_registry.models import App
from deployments import client, stream, transitions
from deployments.cli import SYMBOLS
from deployments.models import ApiToken, Deployment, Event
from deployments.requests import request_deployment
from tests.support.cluster import REPO_ROOT, Cluster, wait_for
from tests.support.servers import Daphne, database_url_for_tests, free_port

pytestmark = pytest.mark.django_db(transaction=True)

STEPS = ("clone", "build", "test", "snapshot", "migrate", "deploy", "cleanup")
DOCKERFILE = {"Dockerfile": "FROM norn-busybox:1\n"}


def cron_spec(name, test="exit 0"):
    """A cron app: deploying it registers a schedule, so no container is left behind."""
    return f"app: {name}\nrole: cron\nbuild:\n  test: {test}\nschedule: '0 3 * * *'\ncommand: ['true']\n"


@pytest.fixture
def cluster(tmp_path, norn_dirs, apps_dir, busybox_image):
    with Cluster(tmp_path / "qcluster.log") as running:
        yield running


@pytest.fixture
def daphne(tmp_path):
    with Daphne(tmp_path / "daphne.log", tmp_path / "access.log") as server:
        yield server


def user_token(username, view=True, active=True):
    user = User.objects.create_user(username, is_active=active)
    if view:
        user.user_permissions.add(Permission.objects.get(codename="view_deployment"))
    return ApiToken.issue(user, "cli")[1]


@pytest.fixture
def token():
    return user_token("viewer")


def norn_env(server_url, token):
    env = {"NORN_URL": server_url}
    if token:
        env["NORN_API_TOKEN"] = token
    return env


def cli_env(cluster=None, **extra):
    """The CLI's environment: the test database (and the worker's settings),
    and exactly the Norn client settings given, none inherited."""
    base = cluster.env if cluster else {
        **os.environ, "DATABASE_URL": database_url_for_tests(), "NORN_APPS_DIR": str(settings.NORN_APPS_DIR),
    }
    env = {k: v for k, v in base.items() if k not in ("NORN_URL", "NORN_API_TOKEN")}
    return {**env, **extra}


def manage(*args, env, timeout=180):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


def step_lines(stdout):
    return [line for line in stdout.splitlines() if line.startswith("  ") and not line.startswith("   ")]


def assert_every_step_once_in_order(stdout, deployment):
    """The printed step lines are exactly the stored step events, in seq order."""
    stored = [
        e.payload for e in Event.objects.filter(deployment=deployment, kind="deploy.step").order_by("seq")
    ]
    printed = step_lines(stdout)
    assert len(printed) == len(stored), stdout
    for line, payload in zip(printed, stored):
        assert line.startswith(f"  {payload['step']:<9} {SYMBOLS[payload['status']]} {payload['status']}"), stdout


def ws_connects(server, deployment):
    return server.access_log().count(f'"WSCONNECT /ws/deployments/{deployment.public_id}/"')


def finished_by_cancel(app_name, make_app):
    """A deployment that ended without a worker: cancelled while queued."""
    make_app(app_name, f"app: {app_name}\nrole: worker\n")
    deployment = transitions.create(App.objects.get(name=app_name), "HEAD", name="tester")
    transitions.request_cancel(deployment, "tester")
    return Deployment.objects.get(pk=deployment.pk)


def queued_deployment(app_name, make_app):
    """A deployment that stays queued (no worker) until the test cancels it."""
    make_app(app_name, f"app: {app_name}\nrole: worker\n")
    return transitions.create(App.objects.get(name=app_name), "HEAD", name="tester")


def follow_until_cancelled(deployment, env, tmp_path, *args, wait_for_text):
    """`follow` a queued deployment; once `wait_for_text` is on its stdout or
    stderr, cancel the deployment; return (stdout, stderr, exit code)."""
    out, err = tmp_path / "follow.out", tmp_path / "follow.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        follower = subprocess.Popen(
            [sys.executable, "manage.py", "follow", str(deployment.public_id), *args],
            cwd=REPO_ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=stdout, stderr=stderr,
        )
        try:
            wait_for(lambda: wait_for_text in out.read_text() + err.read_text(), timeout=60,
                     message=f"{wait_for_text!r} from follow")
            transitions.request_cancel(deployment, "tester")
            returncode = follower.wait(timeout=60)
        finally:
            if follower.poll() is None:
                follower.kill()
    return out.read_text(), err.read_text(), returncode


def test_deploy_follows_over_websocket_and_prints_every_step(cluster, daphne, token, make_app):
    make_app("nightly", cron_spec("nightly"), DOCKERFILE)
    # DEBUG logging everywhere: the websocket library logs handshake headers
    # at that level, and the token must still not appear.
    env = cli_env(cluster, **norn_env(daphne.url, token), NORN_LOG_LEVEL="DEBUG")
    result = manage("deploy", "nightly", "-v", "2", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    deployment = Deployment.objects.get()
    assert result.stdout.startswith(f"Deploying nightly at HEAD (deployment {deployment.public_id})\n")
    assert f"Following over WebSocket: ws://127.0.0.1:{daphne.port}/ws/deployments/{deployment.public_id}/" in result.stderr
    assert "following from the database" not in result.stderr
    assert ws_connects(daphne, deployment) == 1
    assert_every_step_once_in_order(result.stdout, deployment)
    for step in STEPS:
        assert f"  {step:<9} " in result.stdout
    assert f"Deployed nightly {deployment.commit_sha[:12]} as nightly:{deployment.commit_sha}" in result.stdout
    assert token not in result.stdout + result.stderr + daphne.output()

    # The same deployment, finished, followed by a prefix of its id: its
    # record is complete in the database, so no connection and no waiting.
    again = manage("follow", str(deployment.public_id)[:8], "-v", "2", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith(f"Following nightly at HEAD (deployment {deployment.public_id}, deployed)\n")
    assert_every_step_once_in_order(again.stdout, deployment)
    assert f"Deployed nightly {deployment.commit_sha[:12]}" in again.stdout
    assert "WebSocket" not in again.stderr and "from the database" not in again.stderr
    assert ws_connects(daphne, deployment) == 1


def test_follow_of_a_failed_deployment_prints_everything_and_exits_1(cluster, daphne, token, make_app):
    make_app("broken", "app: broken\nrole: worker\nbuild:\n  test: echo about to fail; exit 3\n", DOCKERFILE)
    queued = manage("deploy", "broken", "--no-wait", env=cli_env(cluster))
    assert queued.returncode == 0, queued.stderr
    deployment = Deployment.objects.get(public_id=queued.stdout.strip())
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).is_terminal, message="deployment to end")
    deployment.refresh_from_db()
    env = cli_env(cluster, **norn_env(daphne.url, token))

    result = manage("follow", str(deployment.public_id), "--json", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    stored = [
        {"seq": e.seq, "event": e.kind, "payload": e.payload}
        for e in Event.objects.filter(deployment=deployment).order_by("seq")
    ]
    assert printed == stored
    assert [e["seq"] for e in printed] == list(range(1, deployment.last_event_seq + 1))
    assert printed[-1]["event"] == "deploy.failed"
    assert ws_connects(daphne, deployment) == 0  # ended: read from the database

    human = manage("follow", str(deployment.public_id)[:10], env=env)
    assert human.returncode == 1
    assert_every_step_once_in_order(human.stdout, deployment)
    assert "  test      ✗ failed" in human.stdout
    assert "  deploy    – skipped: test failed" in human.stdout
    assert f"Deployment {deployment.public_id} failed: test failed" in human.stdout

    unknown = manage("follow", "0123abcd", env=env)
    assert unknown.returncode == 2
    assert "no deployment 0123abcd" in unknown.stderr


def test_cli_resumes_after_the_server_restarts_mid_deploy(cluster, daphne, token, make_app, tmp_path):
    make_app("slow", cron_spec("slow", test="sleep 4"), DOCKERFILE)
    out, err = tmp_path / "cli.out", tmp_path / "cli.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        cli = subprocess.Popen(
            [sys.executable, "manage.py", "deploy", "slow", "-v", "2"],
            cwd=REPO_ROOT, env=cli_env(cluster, **norn_env(daphne.url, token)), stdout=stdout, stderr=stderr,
        )
        try:
            deployment = wait_for(lambda: Deployment.objects.first(), timeout=30, message="deployment")
            wait_for(lambda: ws_connects(daphne, deployment), timeout=30, message="CLI connected")
            wait_for(lambda: Deployment.objects.get(pk=deployment.pk).status == "testing", timeout=90, message="test step")
            daphne.kill()
            # Events happen while no server is there to stream them.
            wait_for(lambda: Deployment.objects.get(pk=deployment.pk).status != "testing", timeout=30, message="test to end")
            daphne.start()
            returncode = cli.wait(timeout=120)
        finally:
            if cli.poll() is None:
                cli.kill()
    stdout, stderr = out.read_text(), err.read_text()
    assert returncode == 0, stdout + stderr
    assert "Reconnected; resuming after event #" in stderr
    assert "following from the database" not in stderr
    assert ws_connects(daphne, deployment) == 2
    assert_every_step_once_in_order(stdout, deployment)
    for step in STEPS:
        assert f"  {step:<9} " in stdout
    assert stdout.count("Deployed slow ") == 1


def test_connection_lost_for_good_falls_back_to_the_database_without_repeats(cluster, daphne, token, make_app, settings):
    make_app("nightly", cron_spec("nightly", test="sleep 2"), DOCKERFILE)
    settings.NORN_URL = daphne.url
    settings.NORN_API_TOKEN = token
    deployment = request_deployment("nightly", name="tester")
    warnings, seen = [], []
    for event in client.follow_deployment(deployment, warn=warnings.append, reconnects=2):
        seen.append(event)
        if event.kind == "deploy.step" and event.payload == {"step": "build", "status": "running"}:
            daphne.kill()
    deployment.refresh_from_db()
    assert [e.seq for e in seen] == list(range(1, deployment.last_event_seq + 1))
    assert seen[-1].kind == "deploy.completed"
    assert warnings == [
        f"Norn server not reachable at {daphne.url} (connection refused; 2 reconnects failed): following from the database"
    ]


def test_live_events_lost_on_the_way_are_fetched_after_a_silence(daphne, token, make_app):
    """Publishing is best-effort: rows written without a publish (Redis down)
    still reach a connected client, which asks for a replay when nothing comes."""
    make_app("quiet", "app: quiet\nrole: worker\n")
    deployment = transitions.create(App.objects.get(name="quiet"), "HEAD")
    stream = client.LiveStream(deployment.public_id, base_url=daphne.url, token=token, resync_after=1.0)
    seen = []

    def read():
        for event in stream:
            seen.append(event)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(lambda: seen, timeout=10, message="the queued event")
    for seq, kind, payload in [
        (2, "deploy.cancelled", {"by": "nobody"}),
        (3, "deploy.failed", {"id": str(deployment.public_id), "error": "lost on the way"}),
    ]:
        Event.objects.create(deployment=deployment, seq=seq, kind=kind, payload=payload)
        Deployment.objects.filter(pk=deployment.pk).update(last_event_seq=seq)
    reader.join(timeout=15)
    assert not reader.is_alive()
    assert [(e.seq, e.kind) for e in seen] == [(1, "deploy.queued"), (2, "deploy.cancelled"), (3, "deploy.failed")]


def test_no_server_falls_back_to_the_database_and_says_so(cluster, token, make_app):
    make_app("broken", "app: broken\nrole: worker\nbuild:\n  test: exit 3\n", DOCKERFILE)
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = manage("deploy", "broken", env=cli_env(cluster, **norn_env(nowhere, token)))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Norn server not reachable at {nowhere} (connection refused): following from the database" in result.stderr
    deployment = Deployment.objects.get()
    assert_every_step_once_in_order(result.stdout, deployment)
    assert "  test      ✗ failed" in result.stdout
    assert token not in result.stdout + result.stderr

    # Ended: printed from the database without trying any server.
    tokenless = manage("follow", str(deployment.public_id), env=cli_env(cluster, **norn_env(nowhere, None)))
    assert tokenless.returncode == 1
    assert "not reachable" not in tokenless.stderr
    assert_every_step_once_in_order(tokenless.stdout, deployment)


def test_no_token_falls_back_to_the_database_and_says_so(make_app, tmp_path):
    # No worker: the deployment stays queued until the test cancels it.
    running = queued_deployment("idle", make_app)
    nowhere = f"http://127.0.0.1:{free_port()}"
    stdout, stderr, returncode = follow_until_cancelled(
        running, cli_env(**norn_env(nowhere, None)), tmp_path,
        wait_for_text=f"NORN_API_TOKEN is not set, so the Norn server at {nowhere} was not asked "
                      "(manage.py tokens create --user <you> --name cli makes one): following from the database",
    )
    assert returncode == 1, stdout + stderr
    assert f"Deployment {running.public_id} cancelled: cancelled by tester" in stdout


@pytest.mark.parametrize(
    "make_token, reason",
    [
        (lambda: "norn_" + "W" * 43,
         "refused NORN_API_TOKEN: no such token, or it was revoked (4401 not authenticated)"),
        (lambda: user_token("nosy", view=False),
         "refused NORN_API_TOKEN: its user may not view deployments (4403 forbidden)"),
        (lambda: user_token("gone", active=False),
         "refused NORN_API_TOKEN: its user may not view deployments (4403 forbidden)"),
    ],
    ids=["unknown token", "no view permission", "inactive user"],
)
def test_refused_token_falls_back_with_a_clear_message(daphne, make_app, make_token, reason, tmp_path):
    deployment = queued_deployment("web", make_app)
    bad_token = make_token()
    stdout, stderr, returncode = follow_until_cancelled(
        deployment, cli_env(**norn_env(daphne.url, bad_token)), tmp_path,
        wait_for_text=f"the Norn server at {daphne.url} {reason}: following from the database",
    )
    assert returncode == 1, stdout + stderr
    assert "Cancel requested by tester" in stdout
    assert f"Deployment {deployment.public_id} cancelled: cancelled by tester" in stdout
    assert bad_token not in stdout + stderr + daphne.output() + daphne.access_log()


def test_db_flag_reads_the_database_even_with_a_server(daphne, token, make_app, tmp_path):
    deployment = queued_deployment("web", make_app)
    stdout, stderr, returncode = follow_until_cancelled(
        deployment, cli_env(**norn_env(daphne.url, token)), tmp_path, "--db", "-v", "2",
        wait_for_text=f"Following web at HEAD (deployment {deployment.public_id}, queued)",
    )
    assert returncode == 1, stdout + stderr
    assert "Cancel requested by tester" in stdout
    assert "WebSocket" not in stderr and "following from the database" not in stderr
    assert ws_connects(daphne, deployment) == 0


def test_follow_of_an_ended_deployment_reads_only_the_database(daphne, token, make_app):
    deployment = finished_by_cancel("web", make_app)
    result = manage("follow", str(deployment.public_id), "--json", "-v", "2", env=cli_env(**norn_env(daphne.url, token)))
    assert result.returncode == 1, result.stdout + result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["seq"], e["event"]) for e in printed] == [(1, "deploy.queued"), (2, "deploy.cancelled"), (3, "deploy.failed")]
    assert "WebSocket" not in result.stderr and "from the database" not in result.stderr
    assert ws_connects(daphne, deployment) == 0


def test_queued_deployment_warns_stops_on_ctrl_c_and_ends_when_cancelled(daphne, token, make_app, tmp_path):
    """No worker: the follower says it is still queued; Ctrl-C leaves the
    deployment alone; a cancel reaches a follower live and ends it."""
    make_app("idle", "app: idle\nrole: worker\n")
    env = cli_env(**norn_env(daphne.url, token), PYTHONUNBUFFERED="1")
    out = tmp_path / "deploy.out"
    with open(out, "w") as stdout:
        cli = subprocess.Popen([sys.executable, "manage.py", "deploy", "idle"], cwd=REPO_ROOT, env=env,
                               stdout=stdout, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "Still queued, waiting for a worker" in out.read_text(), timeout=30, message="idle warning")
            cli.send_signal(signal.SIGINT)
            assert cli.wait(timeout=15) == 130
        finally:
            if cli.poll() is None:
                cli.kill()
    deployment = Deployment.objects.get()
    assert f"Stopped following; the deployment goes on (cancel it with: manage.py cancel {deployment.public_id})" in out.read_text()
    assert "Traceback" not in out.read_text()
    assert deployment.status == "queued"

    follower = subprocess.Popen([sys.executable, "manage.py", "follow", str(deployment.public_id)], cwd=REPO_ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: ws_connects(daphne, deployment) == 2, timeout=30, message="follower connected")
        transitions.request_cancel(deployment, "tester")
        stdout, stderr = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 1, stdout + stderr
    assert "Cancel requested by tester" in stdout
    assert f"Deployment {deployment.public_id} cancelled: cancelled by tester" in stdout
    assert "following from the database" not in stderr


@pytest.mark.parametrize(
    "norn_url, ws_url, shown",
    [
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/ws/deployments/ID/?after=7", "http://127.0.0.1:8000"),
        ("https://norn.example.com/", "wss://norn.example.com/ws/deployments/ID/?after=7", "https://norn.example.com"),
        # Behind a proxy under a path; credentials in the URL are never shown.
        ("https://me:pw@example.com/norn/", "wss://me:pw@example.com/norn/ws/deployments/ID/?after=7", "https://example.com/norn"),
    ],
)
def test_norn_url_gives_the_stream_url(norn_url, ws_url, shown):
    assert stream.stream_url(norn_url, "ID", 7) == ws_url
    assert stream.display_url(norn_url) == shown


def test_a_norn_url_that_is_no_url_is_refused_at_start(daphne, token, make_app):
    deployment = finished_by_cancel("web", make_app)
    result = manage("follow", str(deployment.public_id), env=cli_env(**norn_env(f"127.0.0.1:{daphne.port}", token)))
    assert result.returncode == 2
    assert f"NORN_URL='127.0.0.1:{daphne.port}' is not a server URL" in result.stderr
    assert token not in result.stderr