"""`manage.py deploy` and `follow` ask a running Norn server without starting
Django (deployments/remote.py): the same output and exit codes as the full
commands, and the full command whenever the fast path cannot serve."""

import json
import subprocess
import sys

import pytest
from django.contrib.auth.models import Permission, User

from apps_registry.models import App
from deployments import cli, transitions
from deployments.models import ApiToken, Deployment, Event
from tests.support.cluster import REPO_ROOT, Cluster, wait_for
from tests.support.servers import Daphne, free_port

pytestmark = pytest.mark.django_db(transaction=True)

DOCKERFILE = {"Dockerfile": "FROM norn-busybox:1\n"}
CRON = "app: {name}\nrole: cron\nbuild:\n  test: {test}\nschedule: '0 3 * * *'\ncommand: ['true']\n"
# Where the full command would find Norn's database: nowhere. A command that
# succeeds with it never started Django.
NO_DATABASE = f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"


@pytest.fixture
def cluster(tmp_path, norn_dirs, apps_dir, busybox_image):
    with Cluster(tmp_path / "qcluster.log") as running:
        yield running


@pytest.fixture
def server(tmp_path, apps_dir):
    with Daphne(tmp_path / "daphne.log", tmp_path / "access.log", extra_env={"NORN_APPS_DIR": str(apps_dir)}) as running:
        yield running


@pytest.fixture
def deployer():
    user = User.objects.create_user("deployer")
    for codename in ("view_deployment", "start_deployment"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return ApiToken.issue(user, "cli")[1]


def manage(*args, env, timeout=180):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def fast_env(cluster, server, token, **extra):
    return {**cluster.env, "NORN_URL": server.url, "NORN_API_TOKEN": token, "DATABASE_URL": NO_DATABASE, **extra}


def test_deploy_and_follow_need_no_database_when_the_server_answers(cluster, server, deployer, make_app):
    make_app("nightly", CRON.format(name="nightly", test="echo testing"), DOCKERFILE)
    env = fast_env(cluster, server, deployer)
    result = manage("deploy", "nightly", "-v", "2", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    deployment = Deployment.objects.get()
    assert (deployment.requested_by.username, deployment.requested_via) == ("deployer", "cli")
    assert result.stdout.startswith(f"Deploying nightly at HEAD (deployment {deployment.public_id})\n")
    assert f"Following over WebSocket: ws://127.0.0.1:{server.port}/ws/deployments/{deployment.public_id}/" in result.stderr
    assert "database" not in result.stderr
    assert f"Deployed nightly {deployment.commit_sha[:12]} as nightly:{deployment.commit_sha}" in result.stdout
    assert deployer not in result.stdout + result.stderr + server.output() + server.access_log()

    # Ended: followed by a prefix of its id, the same lines as the full command
    # prints from the database, without a stream.
    fast = manage("follow", str(deployment.public_id)[:8], env=env)
    full = manage("follow", str(deployment.public_id)[:8], "--db", env=cluster.env)
    assert fast.returncode == full.returncode == 0, fast.stderr + full.stderr
    assert fast.stdout == full.stdout
    assert result.stdout.endswith(fast.stdout.split("\n", 1)[1])  # every line the deploy printed
    fast_json = manage("follow", str(deployment.public_id), "--json", env=env)
    full_json = manage("follow", str(deployment.public_id), "--json", "--db", env=cluster.env)
    assert fast_json.stdout == full_json.stdout
    stored = [{"seq": e.seq, "event": e.kind, "payload": e.payload} for e in deployment.events.order_by("seq")]
    assert [json.loads(line) for line in fast_json.stdout.splitlines()] == stored


def test_no_wait_prints_the_id_and_a_failure_exits_1(cluster, server, deployer, make_app):
    make_app("broken", CRON.format(name="broken", test="echo about to fail; exit 3"), DOCKERFILE)
    env = fast_env(cluster, server, deployer)
    queued = manage("deploy", "broken", "--no-wait", env=env)
    assert queued.returncode == 0, queued.stderr
    deployment = Deployment.objects.get(public_id=queued.stdout.strip())
    followed = manage("follow", str(deployment.public_id), env=env)
    assert followed.returncode == 1, followed.stdout + followed.stderr
    assert "  test      ✗ failed" in followed.stdout
    assert f"Deployment {deployment.public_id} failed: test failed" in followed.stdout


@pytest.mark.parametrize(
    "args, error",
    [
        (("deploy", "nope"), "unknown app 'nope'"),
        (("deploy", "web", "bad..ref"), "'bad..ref' is not a valid git ref"),
        (("follow", "0123abcd"), "no deployment 0123abcd"),
        (("follow", "xyz"), "'xyz' is not a deployment id"),
    ],
    ids=["unknown app", "bad ref", "unknown deployment", "not an id"],
)
def test_refusals_say_what_the_full_command_says(server, deployer, make_app, args, error, settings):
    make_app("web", "app: web\nrole: worker\n")
    full_env = {k: v for k, v in server.env.items() if k not in ("NORN_URL", "NORN_API_TOKEN")}
    full = manage(*args, env={**full_env, "NORN_APPS_DIR": str(settings.NORN_APPS_DIR)})
    fast = manage(*args, env={**full_env, "NORN_URL": server.url, "NORN_API_TOKEN": deployer,
                              "DATABASE_URL": NO_DATABASE})
    assert fast.returncode == full.returncode == cli.BAD_REQUEST, fast.stderr + full.stderr
    assert error in fast.stderr and error in full.stderr
    assert fast.stderr.strip().splitlines()[-1] == full.stderr.strip().splitlines()[-1]
    assert fast.stdout == full.stdout == ""
    assert not Deployment.objects.exists()


def test_a_token_that_may_not_deploy_leaves_it_to_the_full_command(cluster, server, make_app):
    """The full command works on the database itself; only the stream needs the token."""
    make_app("nightly", CRON.format(name="nightly", test="exit 0"), DOCKERFILE)
    viewer = User.objects.create_user("viewer")
    viewer.user_permissions.add(Permission.objects.get(codename="view_deployment"))
    token = ApiToken.issue(viewer, "cli")[1]
    result = manage("deploy", "nightly", env={**cluster.env, "NORN_URL": server.url, "NORN_API_TOKEN": token})
    assert result.returncode == 0, result.stdout + result.stderr
    deployment = Deployment.objects.get()
    assert deployment.requested_by is None and deployment.requested_via == "cli"  # queued by the full command


def test_no_server_leaves_it_to_the_full_command(cluster, deployer, make_app):
    make_app("nightly", CRON.format(name="nightly", test="exit 0"), DOCKERFILE)
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = manage("deploy", "nightly", env={**cluster.env, "NORN_URL": nowhere, "NORN_API_TOKEN": deployer})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Norn server not reachable at {nowhere} (connection refused): following from the database" in result.stderr


def test_a_deploy_request_without_an_answer_is_not_sent_again(tmp_path):
    """The server took the request and closed: it may have queued it, so the
    full command does not queue it a second time."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def take_and_hang_up():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()

    threading.Thread(target=take_and_hang_up, daemon=True).start()
    try:
        env = {"PATH": "/usr/bin:/bin", "NORN_URL": f"http://127.0.0.1:{listener.getsockname()[1]}",
               "NORN_API_TOKEN": "norn_" + "x" * 43, "DATABASE_URL": NO_DATABASE}
        result = manage("deploy", "web", env=env, timeout=60)
    finally:
        listener.close()
    assert result.returncode == cli.UNAVAILABLE, result.stdout + result.stderr
    assert "gave no answer" in result.stderr and "may have been queued: see manage.py deployments" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_fast_path_imports_nothing_of_django():
    probe = (
        "import sys; import deployments.remote; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'channels', 'psycopg', 'websockets', 'http', 'email'}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_help_comes_without_django_and_lists_the_commands_arguments():
    result = subprocess.run([sys.executable, "-X", "importtime", "manage.py", "deploy", "--help"], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0
    assert "usage: manage.py deploy" in result.stdout and "--no-wait" in result.stdout and "--db" in result.stdout
    assert "| django" not in result.stderr  # -X importtime lists every module imported


def test_the_rest_of_a_deployment_comes_from_the_database_when_the_server_goes(make_app, capsys):
    """The fast path's fallback mid-follow (cli.continue_from_database): after
    the events it printed, the rest, each once."""
    make_app("web", "app: web\nrole: worker\n")
    deployment = transitions.create(App.objects.get(name="web"), "HEAD", name="tester")
    transitions.request_cancel(deployment, "tester")
    assert Event.objects.filter(deployment=deployment).count() == 3
    code = cli.continue_from_database(str(deployment.public_id), after=1, as_json=True, verbosity=1,
                                      no_color=True, force_color=False)
    assert code == cli.FAILED
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["seq"], e["event"]) for e in printed] == [(2, "deploy.cancelled"), (3, "deploy.failed")]


def test_a_deployment_waiting_in_the_queue_is_explained(server, deployer, make_app, tmp_path):
    """No worker: after 5 s the fast path asks the server why, as the full command asks the database."""
    make_app("web", "app: web\nrole: worker\n")
    out = tmp_path / "out"
    env = {**server.env, "NORN_URL": server.url, "NORN_API_TOKEN": deployer, "DATABASE_URL": NO_DATABASE,
           "PYTHONUNBUFFERED": "1"}
    with open(out, "w") as stdout:
        follower = subprocess.Popen([sys.executable, "manage.py", "deploy", "web"], cwd=REPO_ROOT, env=env,
                                    stdout=stdout, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "Still queued" in out.read_text(), timeout=30, message="the queued warning")
            transitions.request_cancel(Deployment.objects.get(), "tester")
            assert follower.wait(timeout=30) == cli.FAILED
        finally:
            if follower.poll() is None:
                follower.kill()
    text = out.read_text()
    assert "Still queued, waiting for a worker: is manage.py qcluster running?" in text
    assert "cancelled: cancelled by tester" in text


def test_follow_names_the_commit_as_the_full_command_does(server, deployer, make_app):
    """The header's commit line ("Commit <sha>: <subject> (<author>)") comes
    from the API on the fast path and from the database otherwise: the same bytes."""
    make_app("web", "app: web\nrole: worker\n")
    deployment = transitions.create(App.objects.get(name="web"), "main", name="tester")
    transitions.request_cancel(deployment, "tester")
    Deployment.objects.filter(pk=deployment.pk).update(
        commit_sha="d" * 40, commit_subject="Speed up the report", commit_author="Grace Hopper")
    fast = manage("follow", str(deployment.public_id),
                  env={**server.env, "NORN_URL": server.url, "NORN_API_TOKEN": deployer, "DATABASE_URL": NO_DATABASE})
    full = manage("follow", str(deployment.public_id), "--db", env=server.env)
    assert fast.returncode == full.returncode == cli.FAILED, fast.stderr + full.stderr
    assert fast.stdout.splitlines()[1] == f"Commit {'d' * 12}: Speed up the report (Grace Hopper)"
    assert fast.stdout == full.stdout
