"""The single-host Docker runtime against the real engine: a deploy replaces the
app's container, keeps the old one until the new one is up, and restores it
when the new one crashes, is unhealthy or the deploy is cancelled."""

import json
import os
import secrets
import socket
import stat
import urllib.request

import pytest

from deployments import runner
from deployments.runtimes import docker as runtime
from deployments.steps import StepFailed
from tests.support.contexts import parse_spec, step_context
from tests.support.docker_images import docker, docker_build

# busybox sh as PID 1 ignores SIGTERM unless it traps it; without the trap
# every `docker stop` would wait out the whole grace period.
SERVE = 'CMD trap "exit 0" TERM; httpd -f -p "127.0.0.1:$PORT" -h /www & wait\n'
IMAGE_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"  # set by norn-busybox:1


@pytest.fixture(scope="module")
def images(busybox_image, tmp_path_factory):
    """Test images, built once: web servers v1/v2 (with /healthz), one without
    /healthz, a worker, one that exits at once and one that exits after 1 s."""
    token = secrets.token_hex(4)
    variants = {
        "v1": {"www/index.html": "v1\n", "www/healthz": "ok\n", "Dockerfile": "COPY www/ /www/\n" + SERVE},
        "v2": {"www/index.html": "v2\n", "www/healthz": "ok\n", "Dockerfile": "COPY www/ /www/\n" + SERVE},
        "unhealthy": {"www/index.html": "unhealthy\n", "Dockerfile": "COPY www/ /www/\n" + SERVE},
        "crash": {"Dockerfile": 'CMD echo "boom: DATABASE_HOST is not set"; exit 3\n'},
        # Up for a second, then gone: only the settle period catches it.
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


@pytest.fixture
def app():
    """A unique app name; every container labelled with it is removed afterwards."""
    name = f"rt-{secrets.token_hex(4)}"
    yield name
    ids = docker(["ps", "--all", "--quiet", "--filter", f"label=norn.app={name}"]).stdout.split()
    if ids:
        docker(["rm", "--force", *ids], check=False)


@pytest.fixture
def port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_ctx(tmp_path, app, image, port=None, healthcheck="/healthz", env=None, extra="", timeout=30):
    text = f"app: {app}\nrole: webserver\n"
    if port:
        text += f"port: {port}\nhealthcheck: {healthcheck}\n"
    if env:
        text += "env:\n" + "".join(f"  {k}: {v!r}\n" for k, v in env.items())
    return step_context(parse_spec(text + extra), workdir=tmp_path, app_dir=tmp_path, image=image, timeout=timeout)


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


def test_first_deploy_creates_the_container_and_serves_it(tmp_path, images, app, port):
    ctx = make_ctx(tmp_path, app, images["v1"], port=port)
    runtime.deploy(ctx)

    assert fetch(port) == "v1\n"
    assert containers(app) == [f"norn-{app}"]
    config = docker(
        ["inspect", "--format", "{{.HostConfig.NetworkMode}} {{.HostConfig.RestartPolicy.Name}}", f"norn-{app}"]
    ).stdout.split()
    assert config == ["host", "unless-stopped"]
    state = runtime.status(app)
    assert state["running"] and state["state"] == "running"
    assert state["image"] == images["v1"]
    assert state["deployment"] == ctx.public_id
    assert f"GET http://127.0.0.1:{port}/healthz: HTTP 200" in ctx.lines()


def test_second_deploy_replaces_the_container_and_removes_the_old_one(tmp_path, images, app, port):
    runtime.deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    old_id = container_id(f"norn-{app}")

    ctx = make_ctx(tmp_path, app, images["v2"], port=port)
    runtime.deploy(ctx)

    assert fetch(port) == "v2\n"
    assert containers(app) == [f"norn-{app}"]
    assert not exists(old_id)
    assert runtime.status(app)["image"] == images["v2"]
    lines = ctx.lines()
    stop = lines.index(f"$ docker stop --time {runtime.STOP_GRACE} norn-{app}")
    start = lines.index(f"$ docker start norn-{app}-next")
    remove = lines.index(f"$ docker rm --force norn-{app}")
    # The old container goes only after the new one was started and checked.
    assert stop < start < remove


def test_crashing_new_container_restores_the_previous_one(tmp_path, images, app, port):
    runtime.deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    old_id = container_id(f"norn-{app}")

    ctx = make_ctx(tmp_path, app, images["crash"], port=port)
    with pytest.raises(StepFailed) as failed:
        runtime.deploy(ctx)

    message = str(failed.value)
    assert f"the new container norn-{app}-next exited with status 3" in message
    assert f"The previous container norn-{app} was restored and is running again." in message
    assert "boom: DATABASE_HOST is not set" in message  # its last output
    assert "boom: DATABASE_HOST is not set" in ctx.lines()  # logged in the step too
    assert fetch(port) == "v1\n"
    assert containers(app) == [f"norn-{app}"]
    assert container_id(f"norn-{app}") == old_id
    assert runtime.status(app)["running"]


def test_unhealthy_new_container_restores_the_previous_one(tmp_path, images, app, port):
    runtime.deploy(make_ctx(tmp_path, app, images["v1"], port=port))

    ctx = make_ctx(tmp_path, app, images["unhealthy"], port=port, timeout=5)
    with pytest.raises(StepFailed) as failed:
        runtime.deploy(ctx)

    message = str(failed.value)
    assert f"the new container norn-{app}-next did not pass its health check within 5 s" in message
    assert f"GET http://127.0.0.1:{port}/healthz: HTTP 404" in message
    assert f"The previous container norn-{app} was restored and is running again." in message
    assert fetch(port) == "v1\n"
    assert containers(app) == [f"norn-{app}"]
    assert runtime.status(app)["image"] == images["v1"]


def test_failed_first_deploy_leaves_no_container_behind(tmp_path, images, app, port):
    with pytest.raises(StepFailed, match="There was no previous container to restore"):
        runtime.deploy(make_ctx(tmp_path, app, images["crash"], port=port))
    assert containers(app) == []
    assert runtime.status(app) is None


def test_cancel_while_waiting_restores_the_previous_one(tmp_path, images, app, port):
    runtime.deploy(make_ctx(tmp_path, app, images["v1"], port=port))

    ctx = make_ctx(tmp_path, app, images["unhealthy"], port=port, timeout=60)
    # Cancel once the new container is started and being waited for; the
    # roll-back's own docker commands must still run.
    ctx.cancel_reason = lambda: "cancelled by tester" if any(l.startswith("Waiting up to") for l in ctx.lines()) else None
    with pytest.raises(runner.Cancelled, match="cancelled by tester"):
        runtime.deploy(ctx)

    assert fetch(port) == "v1\n"
    assert containers(app) == [f"norn-{app}"]
    assert runtime.status(app)["image"] == images["v1"]


def test_env_values_reach_the_container_but_no_command_line(tmp_path, images, app, port, settings):
    secret = "s3cret value = with # and 'quotes'"
    password = f"pw-{secrets.token_hex(6)}"
    settings.NORN_APP_DATABASES = {**settings.NORN_APP_DATABASES, "PASSWORD": password}
    extra = "services:\n  postgres:\n    database: shop\n"
    ctx = make_ctx(tmp_path, app, images["v1"], port=port, env={"API_TOKEN": secret}, extra=extra)
    runtime.deploy(ctx)

    commands = [line for line in ctx.lines() if line.startswith("$ ")]
    assert any(line.startswith("$ docker create ") for line in commands)
    assert not [line for line in commands if secret in line or password in line]

    env = json.loads(docker(["inspect", "--format", "{{json .Config.Env}}", f"norn-{app}"]).stdout)
    assert f"API_TOKEN={secret}" in env
    assert f"PORT={port}" in env
    assert f"NORN_APP={app}" in env
    assert f"NORN_DEPLOYMENT={ctx.public_id}" in env
    assert any(e.startswith("DATABASE_URL=") and f":{password}@" in e for e in env)
    assert f"PGPASSWORD={password}" in env
    # The host's PATH (and HOME) stay on the host; the image's own PATH wins.
    assert [e for e in env if e.startswith("PATH=")] == [IMAGE_PATH]
    assert not [e for e in env if e.startswith("HOME=")]


def test_env_file_is_private_and_removed_afterwards():
    with runtime.env_file({"A": "x y=z # not a comment", "EMPTY": ""}) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with open(path) as f:
            assert f.read() == "A=x y=z # not a comment\nEMPTY=\n"
    assert not os.path.exists(path)
    with pytest.raises(ValueError, match="line break"):
        with runtime.env_file({"B": "two\nlines"}):
            pass


def test_interrupted_promotion_is_finished_not_removed(tmp_path, images, app, port):
    # What a deploy that died between `rm norn-<app>` and `rename` leaves: the
    # new container running under its temporary name.
    docker([
        "run", "--detach", "--name", f"norn-{app}-next", "--network", "host",
        "--env", f"PORT={port}", "--label", f"norn.app={app}", images["v1"],
    ])
    live_id = container_id(f"norn-{app}-next")

    # The next deploy fails: the live container must survive it.
    ctx = make_ctx(tmp_path, app, images["crash"], port=port)
    with pytest.raises(StepFailed, match="was restored and is running again"):
        runtime.deploy(ctx)
    assert "finishing an interrupted deploy" in "\n".join(ctx.lines())
    assert containers(app) == [f"norn-{app}"]
    assert container_id(f"norn-{app}") == live_id
    assert fetch(port) == "v1\n"


def test_status_and_remove(tmp_path, images, app, port):
    assert runtime.status(app) is None
    runtime.deploy(make_ctx(tmp_path, app, images["v1"], port=port))
    assert runtime.status(app)["running"]

    assert runtime.remove(app) == [f"norn-{app}"]
    assert runtime.status(app) is None
    assert containers(app) == []
    assert runtime.remove(app) == []


def test_worker_without_port_is_up_once_it_stays_running(tmp_path, images, app):
    ctx = make_ctx(tmp_path, app, images["worker"])
    runtime.deploy(ctx)
    assert runtime.status(app)["running"]
    assert any(line.startswith(f"norn-{app}-next has been running for") for line in ctx.lines())


def test_container_that_exits_within_the_settle_period_fails_the_deploy(tmp_path, images, app):
    runtime.deploy(make_ctx(tmp_path, app, images["worker"]))

    with pytest.raises(StepFailed, match=f"norn-{app}-next exited with status 0") as failed:
        runtime.deploy(make_ctx(tmp_path, app, images["short"]))

    assert "done early" in str(failed.value)
    assert "was restored and is running again" in str(failed.value)
    state = runtime.status(app)
    assert state["running"] and state["image"] == images["worker"]
