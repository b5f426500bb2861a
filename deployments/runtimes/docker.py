"""The single-host runtime: each app is one container, `norn-<app>`, on the local Docker engine.

An app with a port or domains is served by the ingress (Caddy,
deployments/ingress.py); `deploy(ctx)` starts the new container next to the
old one on a port of its own, switches the ingress to it once it is ready,
and the old one, `norn-<app>.retiring`, is retired after the deployment ended
(dockerswitch.py). Apps that serve nothing (workers) are stopped and replaced
in place. dockerengine.py has the container basics.
"""

import dataclasses

from deployments import containers, ingress, runner
from deployments.appenv import StepContext, container_env, env_problem
from deployments.outcomes import StepFailed
from deployments.runtimes import dockerready, dockerswitch
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
    retiring_name,
)

__all__ = ["DockerError", "Error", "deploy", "remove", "status"]

# What status() and remove() raise when the engine cannot be asked.
Error = DockerError


# --- deploy --------------------------------------------------------------------


def deploy(ctx: StepContext) -> None:
    """Put ctx.image into service as the container norn-<app>.

    An app with a port or domains is replaced behind the ingress
    (dockerswitch.replace_behind_ingress): the old container serves until the
    new one is ready, so there is no gap and a failed deploy never takes the
    app down. An app that serves nothing (a worker): the old
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
    served = bool(ctx.spec.port or ctx.spec.domains)
    if served:
        # Before anything changes: without the ingress the switch cannot happen.
        dockerswitch.require_ingress(ctx)

    _clear_leftover(ctx, name, next_name)
    previous = container(ctx, name)
    if ctx.kind == "rollback" and dockerswitch.already_in_service(ctx, name, previous):
        return
    if served:
        dockerswitch.replace_behind_ingress(ctx, name, next_name, previous, env)
        return
    _replace_in_place(ctx, name, next_name, previous, env)
    if ingress.route(ctx.app_name):
        # It used to declare a port or domains; nothing answers there any more.
        try:
            ingress.drop_route(ctx.app_name)
            ctx.log(f"{ctx.app_name} no longer declares a port or domains: the ingress stopped serving them")
        except ingress.IngressError as exc:
            ctx.log(f"{ctx.app_name} no longer declares a port or domains, but the ingress kept its old route: {exc}")


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
        dockerready.wait_until_ready(ctx, next_name)
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
    """Deal with what an interrupted deploy left behind.

    A norn-<app>.retiring is the previous container of an earlier deploy
    (the ingress left it at the switch) that was not retired yet: that
    deploy's worker died first, or is still at it while another worker took
    this deployment. It is retired here, its requests in flight allowed to
    finish first (dockerswitch.retire).

    A norn-<app>-next is the live app, not litter, when the deploy died after
    the switch: the ingress routes to it, or (serving nothing) the old
    container is already gone. Then the promotion is finished; otherwise it
    is removed.
    """
    retiring = retiring_name(ctx.app_name)
    old = container(ctx, retiring)
    if old is not None:
        ctx.log(f"{retiring}, the previous container of an earlier deploy, is still there: retiring it first")
        backend = label_int(old, "norn.backend-port") if old["state"].get("Running") else None
        dockerswitch.retire(ctx.app_name, retiring, backend, None, ctx.log)
    leftover = container(ctx, next_name)
    if leftover is None:
        return
    current = container(ctx, name)
    route = ingress.route(ctx.app_name)
    backend = label_int(leftover, "norn.backend-port")
    routed_here = bool(route and backend is not None and route.backend == backend)
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
    started_at, finished_at, exit_code, restarts, port (its own public port
    on the ingress), domains, and backend_port (where the container itself
    listens on 127.0.0.1; None for apps that serve nothing). Raises
    DockerError when the engine cannot be asked.
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
        "domains": [d for d in labels.get("norn.domains", "").split(",") if d],
        "backend_port": label_int(info, "norn.backend-port"),
    }


def remove(app_name: str) -> list[str]:
    """Stop serving the app's domains and port, and stop and remove its
    container (and a leftover -next or .retiring one) and its network.

    Returns the names removed; raises DockerError when docker fails or the
    ingress does not take the change (then nothing is removed).
    """
    # The route first: the ingress stops sending requests (its port closes,
    # its domains answer 404) rather than to a container that is going away.
    try:
        ingress.drop_route(app_name)
    except ingress.IngressError as exc:
        raise DockerError(f"the ingress kept the route of {app_name}: {exc}") from None
    removed = []
    for name in (container_name(app_name), f"{container_name(app_name)}-next", retiring_name(app_name)):
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


def served_containers() -> list[tuple[ingress.Route, str]]:
    """(route, deployment id) for every running norn-<app> container that
    serves a port or domains, read from its labels (manage.py ingress adopt)."""
    returncode, output = cli(["ps", "--filter", "label=norn.backend-port", "--format", "{{.Names}}"])
    if returncode != 0:
        raise DockerError(f"docker ps failed: {output.strip()}")
    found = []
    for name in sorted(output.split()):
        info = inspect(cli, name)
        labels = (info or {}).get("labels") or {}
        app = labels.get("norn.app", "")
        if not info or name != container_name(app) or not info["state"].get("Running"):
            continue
        found.append((ingress.Route(
            app=app,
            backend=label_int(info, "norn.backend-port"),
            port=label_int(info, "norn.port"),
            domains=tuple(d for d in labels.get("norn.domains", "").split(",") if d),
            https=labels.get("norn.https") or "redirect",
        ), labels.get("norn.deployment", "")))
    return found
