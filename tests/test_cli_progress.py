"""On a terminal, `deploy`/`follow` redraw a step's line in place (its
"running" line becomes its outcome, one line per step); piped, they print
plain lines. The full command and the Django-free fast path write the same
bytes under a pseudo-terminal (pty.openpty), as they do piped."""

import os
import pty
import re
import select
import subprocess
import sys

import pytest
from django.contrib.auth.models import Permission, User
from django.db import transaction

from apps_registry.models import App
from deployments import events, stream, transitions
from deployments.models import ApiToken, Deployment
from tests.support.cluster import REPO_ROOT
from tests.support.commands import HANG, command_env
from tests.support.servers import Daphne, free_port

pytestmark = pytest.mark.django_db(transaction=True)

STEPS = ("clone", "build", "test")
COLOUR = re.compile(r"\x1b\[[0-9;]*m")
NO_DATABASE = f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"


@pytest.fixture
def deployed(make_app):
    """A deployment that ended (deployed), its events recorded as a worker records them."""
    make_app("web", "app: web\nrole: worker\n")
    deployment = transitions.create(App.objects.get(name="web"), "main", name="tester")
    with transaction.atomic():
        for n, step in enumerate(STEPS):
            events.record(deployment.pk, events.STEP, {"step": step, "status": "running"})
            events.record(deployment.pk, "deploy.log", {"step": step, "text": "working"})
            if step == "test":
                events.record(deployment.pk, events.STEP, {"step": step, "status": "skipped", "reason": "no tests"})
            else:
                events.record(deployment.pk, events.STEP, {"step": step, "status": "succeeded", "duration": n + 0.25})
        events.record(deployment.pk, events.COMPLETED, {"kind": "deploy", "app": "web", "commit_sha": "c" * 40,
                                                        "image": "web:" + "c" * 40})
        Deployment.objects.filter(pk=deployment.pk).update(status="deployed")
    deployment.refresh_from_db()
    return deployment


def under_a_terminal(args, env):
    """`manage.py ARGS` with its stdout on a pseudo-terminal: (exit code, what the terminal got, stderr)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env,
                               stdin=subprocess.DEVNULL, stdout=terminal, stderr=subprocess.PIPE)
    os.close(terminal)
    got = b""
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], HANG)
            if not ready:
                raise AssertionError(f"manage.py {' '.join(args)} hung under a terminal")
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            got += chunk
        stderr = process.communicate(timeout=HANG)[1].decode()
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    return process.returncode, got.decode(), stderr


def screen(output):
    """The lines a terminal shows after `output`: REDRAW replaces the line above; colours dropped."""
    lines = []
    for chunk in COLOUR.sub("", output).replace("\r\n", "\n").split("\n"):
        while chunk.startswith(stream.REDRAW):
            lines.pop()
            chunk = chunk[len(stream.REDRAW):]
        lines.append(chunk)
    return lines[:-1] if lines and lines[-1] == "" else lines


def full_env(**extra):
    return {**command_env(**extra), "TERM": "xterm"}


def test_a_terminal_shows_one_line_per_step_and_a_pipe_every_line(deployed):
    code, output, stderr = under_a_terminal(["follow", str(deployed.public_id), "--db"], full_env())
    assert code == 0, output + stderr
    assert screen(output) == [
        f"Following web at main (deployment {deployed.public_id}, deployed)",
        "  clone     ✓ succeeded in 0.2s",
        "  build     ✓ succeeded in 1.2s",
        "  test      – skipped: no tests",
        f"Deployed web {'c' * 12} as web:{'c' * 40}",
    ]
    assert output.count(stream.REDRAW) == 3
    assert "\x1b[32;1m" in output  # a terminal gets colours too

    piped = subprocess.run([sys.executable, "manage.py", "follow", str(deployed.public_id), "--db"], cwd=REPO_ROOT,
                           env=full_env(), capture_output=True, text=True, timeout=HANG)
    assert piped.returncode == 0, piped.stderr
    assert "\x1b" not in piped.stdout
    assert piped.stdout.splitlines()[1:] == [
        "  clone     … running", "  clone     ✓ succeeded in 0.2s",
        "  build     … running", "  build     ✓ succeeded in 1.2s",
        "  test      … running", "  test      – skipped: no tests",
        f"Deployed web {'c' * 12} as web:{'c' * 40}",
    ]


def test_json_and_a_dumb_terminal_get_plain_lines(deployed):
    code, output, _ = under_a_terminal(["follow", str(deployed.public_id), "--db", "--json"], full_env())
    assert code == 0 and stream.REDRAW not in output
    assert len(output.strip().splitlines()) == deployed.last_event_seq
    code, output, _ = under_a_terminal(["follow", str(deployed.public_id), "--db", "--no-color"],
                                       {**full_env(), "TERM": "dumb"})
    assert code == 0 and "\x1b" not in output
    assert len(screen(output)) == 8


def test_the_fast_path_draws_the_same_bytes_on_a_terminal(deployed, tmp_path):
    user = User.objects.create_user("viewer")
    user.user_permissions.add(Permission.objects.get(codename="view_deployment"))
    token = ApiToken.issue(user, "cli")[1]
    with Daphne(tmp_path / "daphne.log", tmp_path / "access.log") as server:
        fast = under_a_terminal(["follow", str(deployed.public_id)],
                                full_env(NORN_URL=server.url, NORN_API_TOKEN=token, DATABASE_URL=NO_DATABASE))
    full = under_a_terminal(["follow", str(deployed.public_id), "--db"], full_env())
    assert fast[0] == full[0] == 0, fast[2] + full[2]
    assert fast[1] == full[1]
    assert stream.REDRAW in fast[1]


def test_an_interruption_keeps_the_running_line():
    """A warning written between a step's start and its end (the server went
    away, a note on stderr) leaves the running line as it is: the outcome
    gets a line of its own."""
    progress = stream.Progress(in_place=True)
    start = stream.StreamedEvent(1, "deploy.step", {"step": "build", "status": "running"})
    end = stream.StreamedEvent(2, "deploy.step", {"step": "build", "status": "failed", "duration": 2.0,
                                                  "error": "exit 2\nno such file"})
    assert progress.render(start) == [("", "  build     … running", None)]
    progress.moved()
    assert progress.render(end)[0] == ("", "  build     ✗ failed in 2.0s", stream.ERROR)
    progress.render(start)
    assert progress.render(end) == [
        (stream.REDRAW, "  build     ✗ failed in 2.0s", stream.ERROR),
        ("", "            exit 2", None), ("", "            no such file", None),
    ]
    plain = stream.Progress(in_place=False)
    assert [p for p, _, _ in plain.render(start) + plain.render(end)] == ["", "", "", ""]


def test_a_retargeted_deploy_says_which_commit_it_deploys_now():
    event = stream.StreamedEvent(2, "deploy.retargeted", {"ref": "b" * 40, "previous_ref": "a" * 40})
    assert stream.describe(event) == [(f"A newer push: deploying {'b' * 12} instead of {'a' * 12}", stream.WARNING)]
