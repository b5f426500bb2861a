"""The single-host runtime: each app is one container, `norn-<app>`, on the local Docker engine.

An app with a port is served by Norn's proxy (deployments/proxy.py) on its
public port; `deploy(ctx)` starts the new container next to the old one on a
backend port, switches the proxy to it once it is healthy, then retires the old
one (dockerswitch.py). Apps without a port are stopped and replaced in place.
dockerengine.py has the container basics.
"""

import dataclasses

from deployments import containers, proxy, runner
from deployments.appenv import StepContext, container_env, env_problem
from deployments.outcomes import StepFailed
from deployments.runtimes import dockerswitch
from deployments.runtimes.dockerengine import (
    COMMAND_TIMEOUT,
    STOP_GRACE,
    DockerError,
    NotReady,
    cli,
    container,
    container_name,
    create,
    inspect,
    label_int,
    discard,
)

__all__ = ["DockerError", "Error", "deploy", "remove", "status"]

# What status() and remove() raise when the engine cannot be asked.
Error = DockerError


# --- deploy --------------------------------------------------------------------


def deploy(ctx: StepContext) -> None:
    """Put ctx.image into service as the container norn-<app>.

    An app with a port is replaced behind the proxy (_replace_behind_proxy):
    the old container serves until the new one is up, so there is no gap and
    a failed deploy never takes the app down. Without a port (workers) the old
    container is stopped, the new one started, and the old one started again
    when the new one does not come up (_replace_in_place).
    """
    if not ctx.image:
        raise StepFailed("there is no image to run: the build step did not produce one")
    name = container_name(ctx.app_name)
    next_name = f"{name}-next"
    env = container_env(ctx)
    problem = env_problem(env)
    if problem:
        raise StepFailed(problem)
    port = ctx.spec.port
    if port:
        # Before anything changes: without the proxy the switch cannot happen.
        dockerswitch.require_proxy(ctx)

    _clear_leftover(ctx, name, next_name)
    previous = container(ctx, name)
    if ctx.kind == "rollback" and dockerswitch.already_in_service(ctx, name, previous):
        return
    if port:
        dockerswitch.replace_behind_proxy(ctx, name, next_name, previous, env, port)
        return
    _replace_in_place(ctx, name, next_name, previous, env)
    if proxy.route(ctx.app_name):
        # It used to declare a port; nothing answers on it any more.
        proxy.drop_route(ctx.app_name)
        ctx.log(f"{ctx.app_name} no longer declares a port: the proxy stopped serving its old one")


def _replace_in_place(ctx, name, next_name, previous, env):
    """For apps without a port: create norn-<app>-next -> stop norn-<app> ->
    start the new one -> wait until it stays running -> remove the old one and
    rename the new one. When the new one does not come up, it is removed and
    the old one is started again. (Nothing is served, so a gap costs nothing,
    and two copies of a worker must not run at once.)
    """
    was_running = bool(previous and previous["state"].get("Running"))
    create(ctx, next_name, env)
    try:
        if was_running:
            # Stopped, not removed: it is the way back if the new one fails.
            ctx.log(f"Stopping the previous container {name}; it is kept until {next_name} is up")
            ctx.run(["docker", "stop", "--timeout", str(STOP_GRACE), name], timeout=STOP_GRACE + COMMAND_TIMEOUT)
        ctx.log(f"Starting {next_name}")
        ctx.run(["docker", "start", next_name], timeout=COMMAND_TIMEOUT)
        dockerswitch.wait_until_ready(ctx, next_name)
    except NotReady as exc:
        tail, restored = _roll_back(ctx, name, next_name, previous, was_running)
        message = f"{exc}. {restored}"
        if tail:
            message += f"\nLast output of {next_name}:\n{tail}"
        raise StepFailed(message) from None
    except Exception as exc:
        # docker itself failed, or the step was cancelled or timed out.
        _, restored = _roll_back(ctx, name, next_name, previous, was_running)
        if isinstance(exc, StepFailed):
            raise StepFailed(f"{exc}\n{restored}") from exc
        raise

    if previous:
        ctx.log(f"{next_name} is up; removing the previous container {name}")
        ctx.run(["docker", "rm", "--force", name], timeout=COMMAND_TIMEOUT)
    ctx.run(["docker", "rename", next_name, name], timeout=COMMAND_TIMEOUT)
    ctx.log(f"{name} is running {ctx.image}")


def _roll_back(ctx, name, next_name, previous, was_running):
    """Remove the new container and bring the previous one back as it was
    (_replace_in_place). Returns (the new container's last output lines, a
    sentence saying what happened to the previous container).
    """
    safe = dataclasses.replace(ctx, cancel_reason=None)
    tail = discard(safe, next_name)
    if previous is None:
        return tail, "There was no previous container to fall back to."
    if not was_running:
        return tail, f"The previous container {name} was not running before this deploy and was left stopped."
    safe.log(f"Starting the previous container {name} again")
    result = safe.run(["docker", "start", name], check=False, timeout=COMMAND_TIMEOUT)
    if result.returncode != 0:
        return tail, f"Starting the previous container {name} again failed too; the app is not running."
    return tail, f"The previous container {name} was restored and is running again."


def _clear_leftover(ctx, name, next_name):
    """Deal with a norn-<app>-next that an interrupted deploy left behind.

    It is the live app, not litter, when the deploy died after the switch:
    the proxy routes to it, or (without a port) the old container is already
    gone. Then the promotion is finished; otherwise it is removed.
    """
    leftover = container(ctx, next_name)
    if leftover is None:
        return
    current = container(ctx, name)
    route = proxy.route(ctx.app_name)
    backend = label_int(leftover, "norn.backend-port")
    routed_here = bool(route and backend is not None and route["backend"] == backend)
    if leftover["state"].get("Running") and (current is None or routed_here):
        ctx.log(f"{next_name} is the one in service: finishing an interrupted deploy")
        if current is not None:
            ctx.run(["docker", "rm", "--force", name], timeout=COMMAND_TIMEOUT)
        ctx.run(["docker", "rename", next_name, name], timeout=COMMAND_TIMEOUT)
    else:
        ctx.log(f"Removing {next_name}, left over from an interrupted deploy")
        ctx.run(["docker", "rm", "--force", next_name], timeout=COMMAND_TIMEOUT)


# --- status and removal (manage.py app_status, manage.py undeploy) ---------------


def status(app_name: str) -> dict | None:
    """What the engine says about the app's container, or None when it has none.

    A dict: container, image (as deployed), image_id, deployment (its public
    id), state (docker's: running, exited, restarting...), running,
    started_at, finished_at, exit_code, restarts, port (the public port the
    proxy serves it on) and backend_port (where the container itself
    listens; both None for apps without a port). Raises DockerError when the
    engine cannot be asked.
    """
    name = container_name(app_name)
    info = inspect(cli, name)
    if info is None:
        return None
    state, labels = info["state"], info["labels"] or {}
    return {
        "container": name,
        "image": labels.get("norn.image", ""),
        "image_id": info["image_id"],
        "deployment": labels.get("norn.deployment", ""),
        "state": state.get("Status", ""),
        "running": bool(state.get("Running")),
        "started_at": state.get("StartedAt"),
        "finished_at": state.get("FinishedAt"),
        "exit_code": state.get("ExitCode"),
        "restarts": info["restarts"],
        "port": label_int(info, "norn.port"),
        "backend_port": label_int(info, "norn.backend-port"),
    }


def remove(app_name: str) -> list[str]:
    """Stop serving the app's public port, and stop and remove its container
    (and a leftover -next one) and its network.

    Returns the names removed; raises DockerError when docker fails.
    """
    # The route first: the proxy closes the port (connection refused) rather
    # than accepting connections for a backend that is going away.
    proxy.drop_route(app_name)
    removed = []
    for name in (container_name(app_name), f"{container_name(app_name)}-next"):
        if inspect(cli, name) is None:
            continue
        returncode, output = cli(["rm", "--force", name], timeout=COMMAND_TIMEOUT + STOP_GRACE)
        if returncode != 0:
            raise DockerError(f"docker rm --force {name} failed: {output.strip()}")
        removed.append(name)
    # The app's network goes with its last container (a cron app's runs use it too,
    # and recreate it on demand).
    try:
        containers.remove_network(app_name)
    except (OSError, runner.CommandError) as exc:
        raise DockerError(str(exc)) from exc
    return removed
