"""The Docker engine as the Docker runtime uses it: container names, creating a
container with its environment in a private file, inspecting one, and the limits
every docker command runs under. deploy() is in docker.py.
"""

import dataclasses
import json
from collections.abc import Callable

from deployments import containers, dockerapi, runner
from deployments.appenv import StepContext, env_file
from deployments.outcomes import StepFailed
from deployments.runner import host_env

# Where a served app's container is published (its $PORT), for the ingress
# and the health checks: this host's loopback only.
BACKEND_HOST = "127.0.0.1"
# How long to wait for the new container when the step has no timeout of its own.
DEFAULT_WAIT = 60
# One health-check request; the whole wait is bounded separately.
PROBE_TIMEOUT = 5.0
# docker stop's grace period between SIGTERM and SIGKILL.
STOP_GRACE = 10
LOG_TAIL = 20
# Per docker command. `create` may have to pull the image from the registry.
CREATE_TIMEOUT = 600
COMMAND_TIMEOUT = 60

# One inspect call, parsed as JSON, with just what deploy and status need.
# Config.Env is deliberately left out: it holds the app's secrets.
INSPECT_FORMAT = (
    '{"state": {{json .State}}, "restarts": {{json .RestartCount}}, '
    '"image_id": {{json .Image}}, "labels": {{json .Config.Labels}}}'
)


class DockerError(Exception):
    """A docker command run outside a deploy step (status, remove) failed."""


class NotReady(Exception):
    """The new container exited, failed its health check or ran out of time."""


def container_name(app_name: str) -> str:
    return f"norn-{app_name}"


def retiring_name(app_name: str) -> str:
    """The previous container's name from the switch until it is removed
    (dockerswitch.py). The dot keeps it from ever being another app's
    norn-<app>: app names have none."""
    return f"{container_name(app_name)}.retiring"


def create(ctx: StepContext, next_name: str, env: dict[str, str], labels: dict | None = None,
           backend: int | None = None) -> None:
    """docker create the new container; the environment goes in through a file.

    It joins the app's own network (containers.ensure_network), never the
    host's: Norn's database, Redis and web port are not reachable from it,
    nor are other apps' containers. `backend` (it listens on $PORT = backend)
    is published on 127.0.0.1 only, where the ingress and the health checks
    reach it.
    """
    try:
        # Asked afresh: `manage.py undeploy` may have removed it since.
        network = containers.ensure_network(ctx.app_name, cached=False)
    except (OSError, runner.CommandError) as exc:
        raise StepFailed(str(exc)) from None
    argv = [
        "docker", "create",
        "--name", next_name,
        "--network", network,
        # The app's database server is reached at host.docker.internal.
        *containers.ADD_HOST,
        *containers.limits(),
        # A tiny init as PID 1 passes SIGTERM on: many apps (busybox httpd,
        # a shell script) ignore it as PID 1, and every stop would wait out
        # the whole grace period.
        "--init",
        "--restart", "unless-stopped",
        "--label", f"norn.app={ctx.app_name}",
        "--label", f"norn.deployment={ctx.public_id}",
        "--label", f"norn.image={ctx.image}",
    ]
    if backend is not None:
        argv += ["--publish", f"{BACKEND_HOST}:{backend}:{backend}"]
    for key, value in (labels or {}).items():
        argv += ["--label", f"{key}={value}"]
    with env_file(env) as path:
        # docker reads the file here, client side, and stores the values in
        # the container's config; the file is not needed after create.
        ctx.log(f"Creating {next_name} from {ctx.image} on the network {network}")
        ctx.run([*argv, "--env-file", path, ctx.image], timeout=CREATE_TIMEOUT)


def label_int(info: dict, key: str) -> int | None:
    """An integer label of an inspected container (norn.port, norn.backend-port), or None."""
    try:
        return int((info["labels"] or {})[key])
    except (KeyError, TypeError, ValueError):
        return None


def query(ctx: StepContext, args: list[str], timeout: float = 30) -> tuple[int, str]:
    """Run a read-only `docker *args` for the step without echoing it or its
    output into the step (polling would bury the lines that matter)."""
    captured = []
    # No pgid recording either: these are short and read-only, and polling
    # would otherwise write the deployment row twice a second.
    quiet = dataclasses.replace(ctx, output=captured.append, record_pgid=None)
    result = quiet.run(["docker", *args], check=False, echo=False, timeout=timeout)
    return result.returncode, "".join(captured)


def cli(args: list[str], timeout: float = 30) -> tuple[int, str]:
    """Run `docker *args` outside a step; (returncode, output)."""
    captured = []
    try:
        result = runner.run(["docker", *args], env=host_env(), timeout=timeout, on_output=captured.append)
    except (OSError, runner.CommandError) as exc:
        raise DockerError(f"docker {' '.join(args)}: {exc}") from exc
    return result.returncode, "".join(captured)


def inspect(run: Callable[[list[str]], tuple[int, str]], name: str, error: type[Exception] = DockerError) -> dict | None:
    """The container's state, restart count, image id and labels, or None if
    there is no such container: from the engine's API on its socket, else
    from `run(args)` (a docker CLI run; returns (returncode, output))."""
    try:
        answer = dockerapi.get(f"/containers/{dockerapi.name(name)}/json")
    except dockerapi.Unreachable as exc:
        raise error(str(exc)) from None
    if answer is not None:
        status, data = answer
        if status == 404:
            return None
        if status != 200 or not isinstance(data, dict):
            message = data.get("message") if isinstance(data, dict) else data
            raise error(f"docker inspect {name} failed: {message}")
        return {"state": data.get("State") or {}, "restarts": data.get("RestartCount", 0),
                "image_id": data.get("Image", ""), "labels": (data.get("Config") or {}).get("Labels")}
    returncode, output = run(["inspect", "--type", "container", "--format", INSPECT_FORMAT, name])
    if returncode != 0:
        if "no such" in output.lower():
            return None
        raise error(f"docker inspect {name} failed: {output.strip()}")
    return json.loads(output)


def container(ctx: StepContext, name: str) -> dict | None:
    """_inspect for a deploy step: quiet, cancellable, failing with StepFailed."""
    return inspect(lambda args: query(ctx, args), name, StepFailed)


def discard(ctx: StepContext, next_name: str) -> str:
    """Remove a new container that did not make it; returns its last output lines.

    Run with a context that ignores cancels (dataclasses.replace(ctx,
    cancel_reason=None)): cleaning up must not be cut short by one.
    """
    ctx.log(f"Last {LOG_TAIL} lines of output of {next_name}:")
    logs = ctx.run(["docker", "logs", "--tail", str(LOG_TAIL), next_name], check=False, timeout=COMMAND_TIMEOUT)
    tail = runner.tail_lines(logs.tail, 10)
    ctx.log(f"Removing {next_name}")
    ctx.run(["docker", "rm", "--force", next_name], check=False, timeout=COMMAND_TIMEOUT)
    return tail
