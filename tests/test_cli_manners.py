"""Unix manners of Norn's commands as real `manage.py` processes: piped into
`head` they exit quietly (141) instead of printing a traceback or hanging,
Ctrl-C prints one line and exits 130, and the same situation gives the same
exit code in every command, as docs/cli.md's table says."""

import re
import signal
import subprocess
import sys
import time

import pytest
from django.contrib.auth.models import Permission, User
from django.db import transaction

from apps_registry.models import App
from deployments import events, transitions
from deployments.models import ApiToken, Deployment
from norn_project import cli
from tests.support.cluster import REPO_ROOT
from tests.support.commands import HANG, command_env, manage
from tests.support.servers import Daphne

pytestmark = pytest.mark.django_db(transaction=True)


def piped_into_head(args, lines, extra_env=None):
    """`manage.py ARGS | head -n LINES`: (manage.py's exit code, its stderr, head's output)."""
    command = subprocess.Popen(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=command_env(**(extra_env or {})),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    head = subprocess.Popen(["head", "-n", str(lines)], stdin=command.stdout, stdout=subprocess.PIPE)
    command.stdout.close()  # head alone holds the reading end, as in a shell pipeline
    try:
        shown = head.communicate(timeout=HANG)[0].decode()
        _, stderr = command.communicate(timeout=HANG)
    except subprocess.TimeoutExpired:
        command.kill()
        head.kill()
        raise AssertionError(f"manage.py {' '.join(args)} | head -n {lines} hung") from None
    return command.returncode, stderr.decode(), shown


@pytest.fixture
def app(make_app):
    make_app("pipey", "app: pipey\nrole: worker\n")
    return App.objects.get(name="pipey")


def chatty_deployment(app, events_count=300):
    """A deployment still running (it never ends) with far more than a pipe's
    64 KiB of events already recorded."""
    deployment = transitions.create(app, "HEAD", name="tester")
    with transaction.atomic():
        for n in range(events_count):
            events.record(deployment.pk, "deploy.log", {"step": "build", "text": f"line {n} " + "x" * 1000})
    return deployment


def assert_quiet(stderr):
    assert "Traceback" not in stderr, stderr
    assert "BrokenPipe" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr


def test_deployments_piped_into_head_exits_quietly(app):
    Deployment.objects.bulk_create(
        Deployment(app=app, ref="main", requested_by_name="tester", status=Deployment.Status.FAILED,
                   error="boom\n" + "x" * 200)
        for _ in range(1500)
    )
    code, stderr, shown = piped_into_head(["deployments", "--limit", "1500"], 1)
    assert shown.startswith("ID ")
    assert code == cli.BROKEN_PIPE
    assert_quiet(stderr)


@pytest.mark.parametrize("transport", ["database", "websocket"])
def test_follow_json_piped_into_head_exits_quietly_instead_of_hanging(app, tmp_path, transport):
    deployment = chatty_deployment(app)
    extra = {}
    server = None
    if transport == "websocket":
        user = User.objects.create_user("viewer")
        user.user_permissions.add(Permission.objects.get(codename="view_deployment"))
        server = Daphne(tmp_path / "daphne.log", tmp_path / "access.log").__enter__()
        extra = {"NORN_URL": server.url, "NORN_API_TOKEN": ApiToken.issue(user, "cli")[1]}
    try:
        started = time.monotonic()
        code, stderr, shown = piped_into_head(["follow", "--json", str(deployment.public_id)], 2, extra)
    finally:
        if server:
            server.__exit__(None, None, None)
    assert len(shown.splitlines()) == 2 and shown.startswith('{"seq": 1')
    assert code == cli.BROKEN_PIPE
    assert_quiet(stderr)
    assert time.monotonic() - started < 30
    if transport == "websocket":
        assert "following from the database" not in stderr  # it really was the live stream


def test_ctrl_c_while_following_prints_one_line_and_exits_130(app):
    deployment = transitions.create(app, "HEAD", name="tester")
    follower = subprocess.Popen(
        [sys.executable, "manage.py", "follow", str(deployment.public_id), "--db"],
        cwd=REPO_ROOT, env=command_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    first = follower.stdout.readline()
    assert first.startswith("Following pipey at HEAD"), first
    follower.send_signal(signal.SIGINT)
    try:
        stdout, stderr = follower.communicate(timeout=HANG)
    except subprocess.TimeoutExpired:
        follower.kill()
        raise AssertionError("follow did not stop on SIGINT") from None
    assert follower.returncode == cli.INTERRUPTED
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == [
        f"Stopped following; the deployment goes on (cancel it with: manage.py cancel {deployment.public_id})"
    ], stderr
    Deployment.objects.get(pk=deployment.pk, status=Deployment.Status.QUEUED)  # untouched


def test_ctrl_c_at_a_question_says_interrupted(app):
    asker = subprocess.Popen(
        [sys.executable, "manage.py", "undeploy", "pipey"], cwd=REPO_ROOT, env=command_env(),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + HANG
    # The question is printed without a newline; wait until the process reads stdin.
    while "pipe_read" not in _wchan(asker.pid):
        assert time.monotonic() < deadline and asker.poll() is None, asker.communicate()
        time.sleep(0.05)
    asker.send_signal(signal.SIGINT)
    stdout, stderr = asker.communicate(timeout=HANG)
    assert asker.returncode == cli.INTERRUPTED
    assert stderr.strip() == "interrupted" and "Traceback" not in stderr


def _wchan(pid):
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read()
    except OSError:
        return ""


def test_the_same_situation_gives_the_same_exit_code_in_every_command(app, tmp_path):
    finished = transitions.create(app, "HEAD", name="tester")
    transitions.request_cancel(finished, "tester")
    broken = tmp_path / "broken.yaml"
    broken.write_text("app: [\n")
    unknown_id = "0123abcd-0000-0000-0000-000000000000"
    situations = {
        # usage errors, unknown or malformed names and ids: refused before anything happened
        ("deployments", "--limit", "0"): cli.BAD_REQUEST,
        ("deploy",): cli.BAD_REQUEST,
        ("deploy", "nope"): cli.BAD_REQUEST,
        ("app_status", "nope"): cli.BAD_REQUEST,
        ("undeploy", "nope", "--yes"): cli.BAD_REQUEST,
        ("rollback", "nope"): cli.BAD_REQUEST,
        ("rollback", "pipey", unknown_id): cli.BAD_REQUEST,
        ("follow", unknown_id): cli.BAD_REQUEST,
        ("follow", "xyz"): cli.BAD_REQUEST,
        ("cancel", unknown_id): cli.BAD_REQUEST,
        ("restore_snapshot", "999999", "--yes"): cli.BAD_REQUEST,
        ("validate_infraspec", str(tmp_path / "missing")): cli.BAD_REQUEST,
        # it ran and did not succeed, or its state does not allow it
        ("cancel", str(finished.public_id)): cli.FAILED,
        ("follow", str(finished.public_id)): cli.FAILED,
        ("validate_infraspec", str(broken)): cli.FAILED,
        ("undeploy", "pipey"): cli.FAILED,  # no answer to the question: nothing changed
        # fine
        ("deployments",): cli.OK,
    }
    got = {args: manage(*args).returncode for args in situations}
    assert got == situations
    for args in (("deployments",), ("app_status", "pipey"), ("follow", str(finished.public_id))):
        unreachable = manage(*args, extra_env={"DATABASE_URL": "postgres://postgres@127.0.0.1:9/norn"})
        assert unreachable.returncode == cli.UNAVAILABLE, (args, unreachable.stderr)
        assert "Traceback" not in unreachable.stderr


def test_docs_table_lists_exactly_the_codes_the_commands_use():
    text = (REPO_ROOT / "docs" / "cli.md").read_text()
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", text, re.M)}
    assert documented == {cli.OK, cli.FAILED, cli.BAD_REQUEST, cli.UNAVAILABLE, cli.INTERRUPTED, cli.BROKEN_PIPE}


# The commands end with os._exit (no teardown of every module: ~0.3 s); what
# an exit must do still happens. This wrapper is the manage.py process, with
# an atexit handler and a thread that is still working when the command ends.
EXIT_WITNESS = """
import atexit, sys, threading, time
from pathlib import Path
out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))
def work():
    time.sleep(0.5)
    (out / "thread").write_text("finished")
threading.Thread(target=work).start()
# An executor's queued work is finished at exit (threading's own exit callbacks).
from concurrent.futures import ThreadPoolExecutor
pool = ThreadPoolExecutor(1)
pool.submit(time.sleep, 0.3)
pool.submit(lambda: (out / "pool").write_text("done"))
sys.argv = ["manage.py", *sys.argv[2:]]
sys.path.insert(0, ".")
import manage
manage.main()
"""


@pytest.mark.parametrize("args, code", [(["deployments"], 0), (["follow", "0123abcd"], cli.BAD_REQUEST), (["deploy", "--help"], 0)])
def test_a_command_exits_with_its_code_after_threads_and_atexit_handlers(app, tmp_path, args, code):
    transitions.create(app, "HEAD", name="tester")
    result = subprocess.run([sys.executable, "-c", EXIT_WITNESS, str(tmp_path), *args], cwd=REPO_ROOT, env=command_env(),
                            capture_output=True, text=True, timeout=HANG)
    assert result.returncode == code, result.stdout + result.stderr
    assert (tmp_path / "thread").read_text() == "finished"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "pool").read_text() == "done"
    assert "Traceback" not in result.stderr
    if args == ["deployments"]:
        assert result.stdout.strip()  # its output, flushed before the exit


def test_a_profiled_command_still_gets_its_profile_written(app, tmp_path):
    # cProfile writes its file after the program returns: no quick exit under it.
    profile = tmp_path / "deployments.prof"
    result = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(profile), "manage.py", "deployments"],
                            cwd=REPO_ROOT, env=command_env(), capture_output=True, text=True, timeout=HANG)
    assert result.returncode == 0, result.stderr
    assert profile.stat().st_size > 0
