"""The single-host Docker runtime against the real engine and the real ingress
(Caddy): an app with a port is served by the ingress, and a deploy starts the
new container next to the old one, switches the ingress only once it is ready
and never interrupts the public port, even when the new container crashes, is
unhealthy or the deploy is cancelled. Workers are replaced in place.
(tests/test_docker_domains.py: apps reached by their domains.)"""

import json
import os
import re
import secrets
import socket
import stat
import threading
import time
import urllib.request

import pytest

from deployments import appdb, appenv, ingress, runner
from deployments import containers as oneoff
from deployments.runtimes import docker as runtime
from deployments.caddy import Route
from deployments.runtimes import dockerengine, dockerready, dockerswitch
from deployments.outcomes import StepFailed
from tests.support.contexts import parse_spec, run_deferred, step_context
from tests.support.docker_images import docker, docker_build

# busybox sh as PID 1 ignores SIGTERM unless it traps it; without the trap
# every `docker stop` would wait out the whole grace period. The app listens
# on every interface of its container: Docker publishes $PORT on the host's
# 127.0.0.1 (the container is on its app's network, not the host's).
SERVE = 'CMD trap "exit 0" TERM; httpd -f -p "$PORT" -h /www & wait\n'
IMAGE_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"  # set by norn-busybox:1
# A request that takes 4 s to answer (busybox httpd runs CGI scripts).
SLOW_CGI = '#!/bin/sh\nsleep 4\nprintf "Content-Type: text/plain\\r\\n\\r\\n%s-slow\\n" "$VERSION"\n'

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def images(busybox_image, tmp_path_factory):
    """Test images, built once: web servers v1/v2 (with /healthz), one without
    /healthz, a worker, one that exits at once and one that exits after 1 s."""
    token = secrets.token_hex(4)
    variants = {
        **{
            version: {
                "www/index.html": f"{version}\n", "www/healthz": "ok\n", "www/cgi-bin/slow": SLOW_CGI,
                "Dockerfile": f"COPY www/ /www/\nRUN chmod +x /www/cgi-bin/slow\nENV VERSION={version}\n" + SERVE,
            }
            for version in ("v1", "v2")
        },
        "unhealthy": {"www/index.html": "unhealthy\n", "Dockerfile": "COPY www/ /www/\n" + SERVE},
        "crash": {"Dockerfile": 'CMD echo "boom: DATABASE_HOST is not set"; exit 3\n'},
        # Up for a second, then gone (and never serving).
        "short": {"Dockerfile": 'CMD sleep 1; echo "done early"; exit 0\n'},
        "worker": {"Dockerfile": 'CMD trap "exit 0" TERM; sleep 3600 & wait\n'},
    }
    built = {}
    try:
        for variant, files in variants.items():
            directory = tmp_path_factory.mktemp(variant)
            for rel, content in files.items():
                if rel == "Dockerfile":
                    content = f"FROM {busybox_image}\n{content}"
                (directory / rel).parent.mkdir(parents=True, exist_ok=True)
                (directory / rel).write_text(content)
            built[variant] = docker_build(directory, f"norn-test-rt-{token}:{variant}")
        yield built
    finally:
        for tag in built.values():
            docker(["rmi", "--force", tag], check=False)


def remove_app_containers(name):
    ids = docker(["ps", "--all", "--quiet", "--filter", f"label=norn.app={name}"]).stdout.split()
    if ids:
        docker(["rm", "--force", *ids], check=False)
    docker(["network", "rm", f"norn-{name}"], check=False)


@pytest.fixture
def app():
    """A unique app name; every container labelled with it is removed afterwards."""
    name = f"rt-{secrets.token_hex(4)}"
    yield name
    remove_app_containers(name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port():
    return free_port()


def deploy(ctx):
    """deploy(ctx), then the work it deferred, as the worker runs them:
    the deployment's end (the previous container's retirement) included."""
    try:
        runtime.deploy(ctx)
    finally:
        run_deferred(ctx)


def make_ctx(tmp_path, app, image, port=None, healthcheck="/healthz", env=None, extra="", timeout=30, kind="deploy"):
    text = f"app: {app}\nrole: webserver\n"
    if port:
        text += f"port: {port}\n"
        if healthcheck:
            text += f"healthcheck: {healthcheck}\n"
    if env:
        text += "env:\n" + "".join(f"  {k}: {v!r}\n" for k, v in env.items())
    ctx = step_context(parse_spec(text + extra), workdir=tmp_path, app_dir=tmp_path, image=image, timeout=timeout)
    ctx.kind = kind
    return ctx


def fetch(port, path="/index.html"):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read().decode()


def containers(app):
    """Names of all containers (running or not) labelled as the app's."""
    out = docker(["ps", "--all", "--filter", f"label=norn.app={app}", "--format", "{{.Names}}"]).stdout
    return sorted(out.split())


def container_id(name):
    return docker(["inspect", "--type", "container", "--format", "{{.Id}}", name]).stdout.strip()


def exists(container):
    return docker(["inspect", "--type", "container", container], check=False).returncode == 0


def refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


class Poller:
    """GET http://127.0.0.1:<port>/ every 50 ms in a thread, recording each
    answer (or the error) in order: what a user of the app would have seen."""

    def __init__(self, port):
        self.port = port
        self.answers = []
        self.failures = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while not self._stop.is_set():
            try:
                with opener.open(f"http://127.0.0.1:{self.port}/", timeout=5) as response:
                    self.answers.append(response.read().decode())
            except Exception as exc:  # noqa: BLE001 - every failure counts
                self.failures.append(f"{time.strftime('%X')} {exc!r}")
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def test_first_deploy_serves_the_public_port_through_the_ingress(tmp_path, images, app, port):
    ctx = make_ctx(tmp_path, app, images["v1"], port=port)
    deploy(ctx)

    assert fetch(port) == "v1\n"
    assert containers(app) == [f"norn-{app}"]
    config = docker(
        ["inspect", "--format", "{{.HostConfig.NetworkMode}} {{.HostConfig.RestartPolicy.Name}}", f"norn-{app}"]
    ).stdout.split()
    # Its own network, never the host's.
    assert config == [f"norn-{app}", "unless-stopped"]
    state = runtime.status(app)
    assert state["running"] and state["state"] == "running"
    assert state["image"] == images["v1"]
    assert state["deployment"] == ctx.public_id
    backend = state["backend_port"]
    assert state["port"] == port and backend not in (None, port)
    # The container itself listens on its backend port, published on the
    # host's 127.0.0.1 only; the ingress listens on the public one.
    assert fetch(backend) == "v1\n"
    ports = json.loads(docker(["inspect", "--format", "{{json .HostConfig.PortBindings}}", f"norn-{app}"]).stdout)
    assert ports == {f"{backend}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(backend)}]}
    assert ingress.route(app) == Route(app, backend, port=port)
    lines = ctx.lines()
    assert f"GET http://127.0.0.1:{backend}/healthz: HTTP 200" in lines
    # Ready after three passes in a row, with no fixed wait before them.
    assert any(line.startswith(f"norn-{app}-next passed 3 checks in a row") for line in lines)


def running(container):
    return docker(["inspect", "--format", "{{.State.Running}}", container]).stdout.strip() == "true"


def test_second_deploy_switches_then_retires_the_old_container_after_the_step(tmp_path, images, app, port):
    deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    old_id = container_id(f"norn-{app}")
    old_backend = runtime.status(app)["backend_port"]

    ctx = make_ctx(tmp_path, app, images["v2"], port=port)
    runtime.deploy(ctx)

    # The step is over: the new container is norn-<app> and serves; the old
    # one still runs, renamed, until the deferred work retires it.
    assert fetch(port) == "v2\n"
    state = runtime.status(app)
    assert state["image"] == images["v2"] and state["running"]
    assert state["backend_port"] != old_backend
    assert containers(app) == [f"norn-{app}", f"norn-{app}.retiring"]
    assert container_id(f"norn-{app}.retiring") == old_id and running(old_id)
    assert ingress.route(app).draining == (old_backend,)
    assert len(ctx.deferred) == 1
    assert not [line for line in ctx.lines() if line.startswith(("$ docker stop", "$ docker rm"))]

    run_deferred(ctx)

    assert containers(app) == [f"norn-{app}"]
    assert not exists(old_id)
    assert ingress.route(app) == Route(app, state["backend_port"], port=port)  # draining nothing
    assert fetch(port) == "v2\n"
    lines = ctx.lines()
    start = lines.index(f"$ docker start norn-{app}-next")
    switch = next(i for i, line in enumerate(lines) if line.startswith(f"Switching port {port} to norn-{app}-next"))
    retiring = lines.index(f"$ docker rename norn-{app} norn-{app}.retiring")
    rename = lines.index(f"$ docker rename norn-{app}-next norn-{app}")
    drained = next(i for i, line in enumerate(lines)
                   if line.startswith(f"No request in flight to norn-{app}.retiring for 0.25 s: drained "))
    stop = lines.index(f"$ docker stop --timeout {dockerengine.STOP_GRACE} norn-{app}.retiring")
    remove = lines.index(f"$ docker rm --force norn-{app}.retiring")
    # The old container stops only once the new one was checked, the ingress
    # moved and the step ended.
    assert start < switch < retiring < rename < drained < stop < remove
    assert lines[remove + 1].startswith(f"Stopped and removed the previous container norn-{app}.retiring in ")


def test_failed_deploys_never_interrupt_the_public_port(tmp_path, images, app, port):
    deploy(make_ctx(tmp_path, app, images["v1"], port=port))

    with Poller(port) as unhealthy_polls:
        with pytest.raises(StepFailed, match="did not pass its health check within 5 s") as unhealthy:
            deploy(make_ctx(tmp_path, app, images["unhealthy"], port=port, timeout=5))
    with Poller(port) as crash_polls:
        with pytest.raises(StepFailed, match=f"norn-{app}-next exited with status 3") as crash:
            deploy(make_ctx(tmp_path, app, images["crash"], port=port))

    for polls in (unhealthy_polls, crash_polls):
        assert polls.failures == []
        assert set(polls.answers) == {"v1\n"}
    # The unhealthy one was waited for (5 s): many polls, every one answered.
    assert len(unhealthy_polls.answers) > 20
    for failed in (unhealthy, crash):
        assert f"The previous container norn-{app} kept serving throughout: the ingress never left it." in str(failed.value)
    assert fetch(port) == "v1\n"
    assert containers(app) == [f"norn-{app}"]

    with Poller(port) as good_polls:
        deploy(make_ctx(tmp_path, app, images["v2"], port=port))
        time.sleep(0.3)  # a few polls after the switch
    assert good_polls.failures == []
    answers = good_polls.answers
    assert answers[0] == "v1\n" and answers[-1] == "v2\n"
    # Once switched, it stays switched: v1 ... v1 v2 ... v2.
    switched_at = answers.index("v2\n")
    assert set(answers[:switched_at]) == {"v1\n"} and set(answers[switched_at:]) == {"v2\n"}


def test_crashing_new_container_is_removed_and_the_old_one_kept(tmp_path, images, app, port):
    deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    old_id = container_id(f"norn-{app}")

    ctx = make_ctx(tmp_path, app, images["crash"], port=port)
    with pytest.raises(StepFailed) as failed:
        deploy(ctx)

    message = str(failed.value)
    assert f"the new container norn-{app}-next exited with status 3" in message
    assert f"The previous container norn-{app} kept serving throughout: the ingress never left it." in message
    assert "boom: DATABASE_HOST is not set" in message  # its last output
    assert "boom: DATABASE_HOST is not set" in ctx.lines()  # logged in the step too
    assert not [line for line in ctx.lines() if line.startswith(("$ docker stop", "Switching port"))]
    assert fetch(port) == "v1\n"
    assert containers(app) == [f"norn-{app}"]
    assert container_id(f"norn-{app}") == old_id
    assert runtime.status(app)["running"]


def test_unhealthy_new_container_is_removed_and_the_old_one_kept(tmp_path, images, app, port):
    deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    backend = runtime.status(app)["backend_port"]

    ctx = make_ctx(tmp_path, app, images["unhealthy"], port=port, timeout=5)
    with pytest.raises(StepFailed) as failed:
        deploy(ctx)

    message = str(failed.value)
    assert re.search(
        rf"the new container norn-{app}-next did not pass its health check within 5 s "
        r"\(GET http://127\.0\.0\.1:\d+/healthz: HTTP 404\)",
        message,
    )
    assert f"The previous container norn-{app} kept serving throughout: the ingress never left it." in message
    assert fetch(port) == "v1\n"
    assert containers(app) == [f"norn-{app}"]
    assert runtime.status(app)["image"] == images["v1"]
    assert ingress.route(app) == Route(app, backend, port=port)


def test_failed_first_deploy_leaves_nothing_behind(tmp_path, images, app, port):
    with pytest.raises(StepFailed, match="There was no previous container to fall back to"):
        deploy(make_ctx(tmp_path, app, images["crash"], port=port))
    assert containers(app) == []
    assert runtime.status(app) is None
    assert ingress.route(app) is None
    assert refused(port)


def test_public_port_held_by_another_program_fails_the_deploy_before_anything_starts(tmp_path, images, app, port):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(StepFailed) as failed:
            deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    assert str(failed.value) == (
        f"port {port} is in use by another program on this host, so the ingress cannot listen on it: "
        "stop that program or choose another port; nothing was changed."
    )
    assert containers(app) == []
    assert ingress.route(app) is None


def test_cancel_while_waiting_keeps_the_previous_one_serving(tmp_path, images, app, port):
    deploy(make_ctx(tmp_path, app, images["v1"], port=port))

    ctx = make_ctx(tmp_path, app, images["unhealthy"], port=port, timeout=60)
    # Cancel once the new container is started and being waited for; the
    # clean-up's own docker commands must still run.
    ctx.cancel_reason = lambda: "cancelled by tester" if any(l.startswith("Waiting up to") for l in ctx.lines()) else None
    with Poller(port) as polls:
        with pytest.raises(runner.Cancelled, match="cancelled by tester"):
            deploy(ctx)

    assert polls.failures == [] and set(polls.answers) == {"v1\n"}
    assert fetch(port) == "v1\n"
    assert containers(app) == [f"norn-{app}"]
    assert runtime.status(app)["image"] == images["v1"]


def test_a_request_in_flight_to_the_old_container_finishes_before_it_stops(tmp_path, images, app, port):
    deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    ctx = make_ctx(tmp_path, app, images["v2"], port=port)
    answer = []
    client = threading.Thread(target=lambda: answer.append(fetch(port, "/cgi-bin/slow")))
    client.start()
    deadline = time.monotonic() + 10
    old_backend = runtime.status(app)["backend_port"]
    while not ingress.in_flight(old_backend):  # the ingress is sending it to v1
        assert time.monotonic() < deadline
        time.sleep(0.02)
    runtime.deploy(ctx)
    # Switched, with the request still in flight to the old container (it
    # takes 4 s): the step did not wait for it.
    assert fetch(port) == "v2\n"
    assert ingress.in_flight(old_backend) == 1
    assert client.is_alive()

    run_deferred(ctx)
    client.join(timeout=10)

    # v1 answered it, after the switch, before it was stopped.
    assert answer == ["v1-slow\n"]
    lines = ctx.lines()
    drain = lines.index(f"Waiting up to {dockerswitch.DRAIN_SECONDS:g} s for 1 request(s) in flight to "
                        f"norn-{app}.retiring to finish")
    assert lines.index(f"The ingress sends new requests for port {port} to norn-{app}-next") < drain
    assert drain < lines.index(f"$ docker stop --timeout {dockerengine.STOP_GRACE} norn-{app}.retiring")
    assert containers(app) == [f"norn-{app}"]
    assert fetch(port) == "v2\n"


def test_env_values_reach_the_container_but_no_command_line(tmp_path, images, app, port, settings):
    secret = "s3cret value = with # and 'quotes'"
    password = appdb.password(app)  # the app's own role's
    extra = "services:\n  postgres:\n    database: shop\n"
    ctx = make_ctx(tmp_path, app, images["v1"], port=port, env={"API_TOKEN": secret}, extra=extra)
    deploy(ctx)

    commands = [line for line in ctx.lines() if line.startswith("$ ")]
    assert any(line.startswith("$ docker create ") for line in commands)
    assert not [line for line in commands if secret in line or password in line]

    env = json.loads(docker(["inspect", "--format", "{{json .Config.Env}}", f"norn-{app}"]).stdout)
    assert f"API_TOKEN={secret}" in env
    # The app listens on its backend port; the public one is the ingress's.
    assert [e for e in env if e.startswith("PORT=")] == [f"PORT={runtime.status(app)['backend_port']}"]
    assert f"NORN_APP={app}" in env
    assert f"NORN_DEPLOYMENT={ctx.public_id}" in env
    assert any(e.startswith(f"DATABASE_URL=postgres://{appdb.role_name(app)}:{password}@") for e in env)
    assert f"PGPASSWORD={password}" in env
    admin_password = settings.NORN_APP_DATABASES.get("PASSWORD")
    assert not admin_password or not [e for e in env if admin_password in e]
    # The host's PATH (and HOME) stay on the host; the image's own PATH wins.
    assert [e for e in env if e.startswith("PATH=")] == [IMAGE_PATH]
    assert not [e for e in env if e.startswith("HOME=")]


def test_env_file_is_private_and_removed_afterwards():
    with appenv.env_file({"A": "x y=z # not a comment", "EMPTY": ""}) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with open(path) as f:
            assert f.read() == "A=x y=z # not a comment\nEMPTY=\n"
    assert not os.path.exists(path)
    with pytest.raises(ValueError, match="line break"):
        with appenv.env_file({"B": "two\nlines"}):
            pass


def run_next(app, image, port):
    """What a deploy interrupted before its clean-up leaves: norn-<app>-next
    running on a backend port of its own. Returns (its id, its backend port)."""
    backend = free_port()
    docker([
        "run", "--detach", "--name", f"norn-{app}-next", "--network", oneoff.ensure_network(app),
        "--publish", f"127.0.0.1:{backend}:{backend}", "--env", f"PORT={backend}",
        "--label", f"norn.app={app}", "--label", f"norn.port={port}", "--label", f"norn.backend-port={backend}",
        image,
    ])
    deadline = time.monotonic() + 10
    while not dockerready.probe(f"http://127.0.0.1:{backend}/", strict=False)[0]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return container_id(f"norn-{app}-next"), backend


def test_interrupted_deploy_after_the_switch_is_finished_not_undone(tmp_path, images, app, port):
    deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    # The deploy died right after switching the route to its new container.
    live_id, backend = run_next(app, images["v2"], port)
    ingress.set_route(Route(app, backend, port=port))
    assert fetch(port) == "v2\n"

    # The next deploy fails: the live container must survive it.
    ctx = make_ctx(tmp_path, app, images["crash"], port=port)
    with Poller(port) as polls:
        with pytest.raises(StepFailed, match="kept serving throughout"):
            deploy(ctx)
    assert f"norn-{app}-next is the one in service: finishing an interrupted deploy" in ctx.lines()
    assert polls.failures == [] and set(polls.answers) == {"v2\n"}
    assert containers(app) == [f"norn-{app}"]
    assert container_id(f"norn-{app}") == live_id
    assert fetch(port) == "v2\n"


def test_interrupted_deploy_before_the_switch_is_removed(tmp_path, images, app, port):
    deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    leftover_id, _ = run_next(app, images["unhealthy"], port)  # never got the route

    ctx = make_ctx(tmp_path, app, images["v2"], port=port)
    deploy(ctx)
    assert f"Removing norn-{app}-next, left over from an interrupted deploy" in ctx.lines()
    assert not exists(leftover_id)
    assert containers(app) == [f"norn-{app}"]
    assert fetch(port) == "v2\n"


def leave_retiring(tmp_path, app, image, port):
    """A deploy whose worker died before its deferred work: norn-<app>.retiring
    (the previous container, still running) stays. Returns its id."""
    ctx = make_ctx(tmp_path, app, image, port=port)
    runtime.deploy(ctx)
    ctx.deferred.clear()
    assert running(f"norn-{app}.retiring")
    return container_id(f"norn-{app}.retiring")


def test_a_container_left_retiring_is_retired_by_the_next_deploy(tmp_path, images, app, port):
    deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    left_id = leave_retiring(tmp_path, app, images["v2"], port)

    ctx = make_ctx(tmp_path, app, images["v1"], port=port)
    with Poller(port) as polls:
        deploy(ctx)
    assert polls.failures == []
    lines = ctx.lines()
    first = lines.index(f"norn-{app}.retiring, the previous container of an earlier deploy, is still there: "
                        "retiring it first")
    assert first < lines.index(f"$ docker stop --timeout {dockerengine.STOP_GRACE} norn-{app}.retiring")
    assert not exists(left_id)
    assert containers(app) == [f"norn-{app}"]
    assert fetch(port) == "v1\n"


def test_a_deploy_interrupted_between_its_renames_is_finished_by_the_next(tmp_path, images, app, port):
    deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    left_id = leave_retiring(tmp_path, app, images["v2"], port)
    # It died after renaming the old container, before renaming the new one.
    docker(["rename", f"norn-{app}", f"norn-{app}-next"])
    live_id = container_id(f"norn-{app}-next")

    ctx = make_ctx(tmp_path, app, images["crash"], port=port)
    with Poller(port) as polls:
        with pytest.raises(StepFailed, match="kept serving throughout"):
            deploy(ctx)
    assert polls.failures == [] and set(polls.answers) == {"v2\n"}
    assert f"norn-{app}-next is the one in service: finishing an interrupted deploy" in ctx.lines()
    assert not exists(left_id)
    assert containers(app) == [f"norn-{app}"]
    assert container_id(f"norn-{app}") == live_id


def test_undeploy_removes_a_container_left_retiring(tmp_path, images, app, port):
    deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    ctx = make_ctx(tmp_path, app, images["v2"], port=port)
    runtime.deploy(ctx)  # its deferred work runs only after the undeploy

    assert runtime.remove(app) == [f"norn-{app}", f"norn-{app}.retiring"]
    assert containers(app) == []
    assert ingress.route(app) is None
    assert refused(port)

    # The late retirement finds nothing left to do, and says so.
    run_deferred(ctx)
    assert f"norn-{app}.retiring is already gone: removed meanwhile" in ctx.lines()
    assert containers(app) == []


def test_a_deploy_fails_at_once_when_the_ingress_is_down(tmp_path, images, app, port, ingress_service):
    deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    ingress_service.stop()
    assert refused(port)

    with pytest.raises(StepFailed) as failed:
        deploy(make_ctx(tmp_path, app, images["v2"], port=port))
    assert str(failed.value) == (
        f"the ingress (Caddy) is not answering at {ingress_service.admin} (No such file or directory): start "
        f"norn-ingress.service (scripts/services in development). It serves port {port}; nothing was changed."
    )
    # Norn started nothing in its place, and nothing of the deploy was done.
    assert ingress.alive() is not None
    assert containers(app) == [f"norn-{app}"]

    ingress_service.start()
    assert fetch(port) == "v1\n"  # Caddy resumed its route
    deploy(make_ctx(tmp_path, app, images["v2"], port=port))
    assert fetch(port) == "v2\n"


def test_two_apps_cannot_share_a_public_port(tmp_path, images, app, port):
    deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    other = f"{app}-b"
    try:
        with pytest.raises(StepFailed, match=f"port {port} is already the public port of the app {app}"):
            deploy(make_ctx(tmp_path, other, images["v2"], port=port))
        assert containers(other) == []
    finally:
        remove_app_containers(other)
    assert fetch(port) == "v1\n"


def test_rollback_to_the_image_in_service_does_nothing(tmp_path, images, app, port):
    deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    live_id = container_id(f"norn-{app}")
    with pytest.raises(StepFailed):
        deploy(make_ctx(tmp_path, app, images["unhealthy"], port=port, timeout=4))

    ctx = make_ctx(tmp_path, app, images["v1"], port=port, kind="rollback")
    deploy(ctx)
    assert (
        f"norn-{app} already runs {images['v1']} and is healthy: it is in service, nothing to do. "
        "(The failed deploy's container was already replaced back by this one.)"
    ) in ctx.lines()
    assert not [line for line in ctx.lines() if line.startswith("$ docker")]
    assert container_id(f"norn-{app}") == live_id
    assert fetch(port) == "v1\n"

    # A rollback to another image is a real replacement.
    ctx = make_ctx(tmp_path, app, images["v2"], port=port, kind="rollback")
    deploy(ctx)
    assert fetch(port) == "v2\n"
    assert container_id(f"norn-{app}") != live_id


def test_status_and_remove(tmp_path, images, app, port):
    assert runtime.status(app) is None
    deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    assert runtime.status(app)["running"]

    assert runtime.remove(app) == [f"norn-{app}"]
    assert runtime.status(app) is None
    assert containers(app) == []
    assert ingress.route(app) is None
    assert refused(port)
    assert runtime.remove(app) == []


def test_port_without_healthcheck_waits_until_the_app_answers_http(tmp_path, images, app, port):
    ctx = make_ctx(tmp_path, app, images["v1"], port=port, healthcheck=None)
    deploy(ctx)
    backend = runtime.status(app)["backend_port"]
    assert f"GET http://127.0.0.1:{backend}/: HTTP 200" in ctx.lines()
    assert fetch(port) == "v1\n"

    with pytest.raises(StepFailed, match=f"norn-{app}-next exited with status 0"):
        deploy(make_ctx(tmp_path, app, images["short"], port=port, healthcheck=None))
    assert fetch(port) == "v1\n"


def test_worker_without_port_is_up_once_it_stays_running(tmp_path, images, app):
    ctx = make_ctx(tmp_path, app, images["worker"])
    deploy(ctx)
    state = runtime.status(app)
    assert state["running"]
    assert state["port"] is None and state["backend_port"] is None
    assert any(line.startswith(f"norn-{app}-next has been running for") for line in ctx.lines())
    assert not any("ingress" in line.lower() for line in ctx.lines())


def test_worker_that_exits_within_its_first_seconds_fails_the_deploy(tmp_path, images, app):
    deploy(make_ctx(tmp_path, app, images["worker"]))

    with pytest.raises(StepFailed, match=f"norn-{app}-next exited with status 0") as failed:
        deploy(make_ctx(tmp_path, app, images["short"]))

    assert "done early" in str(failed.value)
    assert "was restored and is running again" in str(failed.value)
    state = runtime.status(app)
    assert state["running"] and state["image"] == images["worker"]


def test_app_that_drops_its_port_loses_its_route(tmp_path, images, app, port):
    deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    ctx = make_ctx(tmp_path, app, images["worker"])
    deploy(ctx)
    assert ingress.route(app) is None
    assert f"{app} no longer declares a port or domains: the ingress stopped serving them" in ctx.lines()
    assert refused(port)
