"""The steps' throwaway containers run through the Docker engine's API
(deployments/enginerun.py): the same container the docker client would run,
without the client's process, and the client where the API cannot do it."""

import json
import os
import threading
import time

import pytest

from deployments import containers, enginerun, runner
from deployments.steps import test as test_step
from tests.support.docker_images import docker
from tests.test_step_containers import app, make_ctx, removed  # noqa: F401  (app: the fixture)

pytestmark = pytest.mark.django_db


def inspect_while_running(name, found):
    """docker inspect of container `name` once it runs (it is removed at its end)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = docker(["inspect", "--type", "container", name], check=False)
        if answer.returncode == 0:
            found.append(answer.stdout)
            return
        time.sleep(0.05)


def run_both(app, busybox_image, workspace):  # noqa: F811
    seen = {}
    for way in ("engine", "client"):
        name = f"{app}-{way}"
        found = []
        watcher = threading.Thread(target=inspect_while_running, args=(name, found))
        watcher.start()
        engine = None
        if way == "engine":
            def engine(name, body, timeout):
                return enginerun.run(name=name, body=body, timeout=timeout, on_output=None,
                                     should_cancel=None, redact=runner.Redactor())
        result = containers.run(
            lambda argv, timeout: runner.run(argv, env=runner.host_env(), timeout=timeout),
            name=name, app_name=app, purpose="test", deployment="d-1", image=busybox_image,
            command=["sleep 2; exit 4"], env={"ONE": "1", "TWO": "two words"}, timeout=60,
            workspace=str(workspace), shell=True, engine=engine,
        )
        watcher.join()
        assert result.returncode == 4, (way, result)
        assert found, f"the {way}'s container was never seen running"
        seen[way] = json.loads(found[0])[0]
    return seen


def test_the_engines_container_is_the_clients(tmp_path, app, busybox_image):  # noqa: F811
    """Same limits, privileges, network, mounts, labels and environment; and
    removed at its end, as --rm removes the client's."""
    seen = run_both(app, busybox_image, tmp_path)
    engine, client = seen["engine"], seen["client"]
    for key in ("Init", "NanoCpus", "Memory", "MemorySwap", "PidsLimit", "CapDrop", "SecurityOpt",
                "NetworkMode", "ExtraHosts", "Binds", "AutoRemove"):
        assert engine["HostConfig"][key] == client["HostConfig"][key], key
    assert engine["HostConfig"]["CapDrop"] == ["ALL"] and engine["HostConfig"]["AutoRemove"] is True
    for key in ("Labels", "WorkingDir", "Entrypoint", "Cmd", "Image", "User"):
        assert engine["Config"][key] == client["Config"][key], key
    assert set(engine["Config"]["Env"]) == set(client["Config"]["Env"])
    assert {"ONE=1", "TWO=two words"} <= set(engine["Config"]["Env"])
    assert removed("d-1")


def test_a_step_runs_its_container_without_a_docker_client(tmp_path, app, busybox_image):  # noqa: F811
    ctx = make_ctx(tmp_path, app, busybox_image, test="echo started; sleep 2; echo done")
    clients = []

    def look():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for pid in os.listdir("/proc"):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        argv = f.read().split(b"\0")
                except OSError:
                    continue
                if argv[:2] == [b"docker", b"run"] and any(app.encode() in part for part in argv):
                    clients.append(argv)
            time.sleep(0.05)

    watcher = threading.Thread(target=look)
    watcher.start()
    test_step.run(ctx)
    watcher.join()
    assert clients == []
    assert "started\n" in ctx.text() and "done\n" in ctx.text()


def test_an_image_the_engine_does_not_have_is_left_to_the_client(app):  # noqa: F811
    """The client pulls a missing image; the API would only refuse it."""
    body = {"Image": "norn-no-such-image:1", "Cmd": ["true"], "HostConfig": containers.host_config("bridge", None)}
    assert enginerun.run(name=f"{app}-missing", body=body, timeout=10, on_output=None, should_cancel=None,
                         redact=runner.Redactor()) is None
    assert docker(["ps", "--all", "--quiet", "--filter", f"name={app}-missing"]).stdout.split() == []


def test_a_refusal_reads_as_the_clients(app, busybox_image):  # noqa: F811
    """A container the engine will not create (a name already taken) fails as
    `docker run` does: exit 125 with the engine's message in the output."""
    taken = f"{app}-taken"
    docker(["create", "--name", taken, "--label", f"norn.app={app}", busybox_image, "true"])
    out = []
    body = {"Image": busybox_image, "Cmd": ["true"], "HostConfig": containers.host_config("bridge", None)}
    result = enginerun.run(name=taken, body=body, timeout=10, on_output=out.append, should_cancel=None,
                           redact=runner.Redactor())
    assert result.returncode == 125
    assert out and out[0].startswith("docker: Error response from daemon: ") and "already in use" in out[0]
