"""Where app code runs on the local Docker engine: throwaway containers for
build.test, migrations.command and cron runs, and the per-app network
(`norn-<app>`) that they and the app's own container join.

App code never runs as a process of Norn's: it would see Norn's environment
(/proc/$PPID/environ), files and loopback services.
"""

import contextlib
import re
from collections.abc import Callable, Mapping

from django.conf import settings

from deployments import dockerapi, runner
from deployments.appenv import env_file, env_problem
from deployments.runner import host_env

# The address an app's code reaches its database server (and nothing else of
# the host's) at: the host's docker0 gateway, where the apps' PostgreSQL
# cluster listens (scripts/services).
HOST_ALIAS = "host.docker.internal"
ADD_HOST = ["--add-host", f"{HOST_ALIAS}:host-gateway"]
# Where build.test finds the checked-out tree.
WORKSPACE = "/workspace"
# What a throwaway container's purpose label says.
PURPOSES = ("test", "migrate", "cron", "cleanup")
COMMAND_TIMEOUT = 60

# What docker run says when the image cannot start the command.
# (The first from runc, the second from the --init process, tini.)
_NO_SHELL = re.compile(r'exec: "?/bin/sh"?: (stat /bin/sh: )?no such file|exec /bin/sh failed: No such file', re.I)

Run = Callable[[list[str], float], runner.Result]
Engine = Callable[[str, dict, float | None], runner.Result | None]

# Networks this process created or found, so each run does not ask again; one
# removed behind its back (manage.py undeploy elsewhere) is created again when
# docker run reports it missing (run()).
_known_networks: set[str] = set()
_NETWORK_MISSING = re.compile(r"network \S+ not found", re.I)


class NoShell(Exception):
    """The image has no /bin/sh to run a shell command with."""


def network_name(app_name: str) -> str:
    return f"norn-{app_name}"


def limits() -> list[str]:
    """Every app container's limits and privileges (settings.NORN_CONTAINER_*).

    No capabilities (not even chown or binding ports below 1024) and no
    setuid escalation; swap counts against the memory limit.
    """
    memory = settings.NORN_CONTAINER_MEMORY
    return [
        "--cpus", settings.NORN_CONTAINER_CPUS,
        "--memory", memory, "--memory-swap", memory,
        "--pids-limit", str(settings.NORN_CONTAINER_PIDS),
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
    ]


def host_config(network: str, workspace: str | None) -> dict:
    """limits(), ADD_HOST, the network and the workspace's mount as the engine's
    API spells them (a container's HostConfig, for enginerun), with --rm and
    --init."""
    memory = settings.NORN_CONTAINER_MEMORY_BYTES
    config = {
        "AutoRemove": True,
        "Init": True,
        "NetworkMode": network,
        "ExtraHosts": [f"{HOST_ALIAS}:host-gateway"],
        "NanoCpus": round(float(settings.NORN_CONTAINER_CPUS) * 1e9),
        "Memory": memory,
        "MemorySwap": memory,
        "PidsLimit": settings.NORN_CONTAINER_PIDS,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
    }
    if workspace:
        config["Binds"] = [f"{workspace}:{WORKSPACE}"]
    return config


def docker(args: list[str], timeout: float = COMMAND_TIMEOUT) -> tuple[int, str]:
    """`docker *args` outside any step's cancel probe: (returncode, output)."""
    captured = []
    result = runner.run(["docker", *args], env=host_env(), timeout=timeout, on_output=captured.append)
    return result.returncode, "".join(captured)


def ensure_network(app_name: str, *, cached: bool = True) -> str:
    """Create the app's bridge network `norn-<app>` unless it exists; its name.

    Docker keeps bridge networks apart: a container on one cannot reach a
    container on another, so apps reach each other only through the ingress.
    Safe when two workers race: the loser's "already exists" is success.
    cached=False asks the engine even when this process knew the network.
    """
    name = network_name(app_name)
    if cached and name in _known_networks:
        return name
    if _network_exists(name):
        _known_networks.add(name)
        return name
    returncode, output = docker([
        "network", "create", "--driver", "bridge",
        "--label", f"norn.app={app_name}", "--label", "norn.network=app", name,
    ])
    if returncode != 0 and "already exists" not in output:
        raise runner.CommandError(f"could not create the Docker network {name}: {output.strip()}")
    _known_networks.add(name)
    return name


def _network_exists(name: str) -> bool:
    """Asked of the engine's API when it is on a unix socket, else of the CLI."""
    try:
        answer = dockerapi.get(f"/networks/{dockerapi.name(name)}")
    except dockerapi.Unreachable as exc:
        raise runner.CommandError(str(exc)) from None
    if answer is not None:
        return answer[0] == 200
    return docker(["network", "inspect", "--format", "{{.Name}}", name])[0] == 0


def remove_network(app_name: str) -> bool:
    """Remove the app's network (manage.py undeploy); False if it had none."""
    _known_networks.discard(network_name(app_name))
    returncode, output = docker(["network", "rm", network_name(app_name)])
    # A cron run still in progress keeps it ("active endpoints"): the next
    # undeploy removes it.
    if returncode != 0 and not any(s in output for s in ("not found", "No such", "active endpoints")):
        raise runner.CommandError(f"could not remove the Docker network {network_name(app_name)}: {output.strip()}")
    return returncode == 0


def run(execute: Run, *, name: str, app_name: str, purpose: str, deployment: str | None, image: str,
        command: list[str], env: Mapping[str, object], timeout: float | None,
        workspace: str | None = None, shell: bool = False, labels: Mapping[str, object] | None = None,
        engine: Engine | None = None) -> runner.Result:
    """Run `command` once in a throwaway container of `image` and remove it.

    `execute(argv, timeout)` runs the docker client (a step's ctx.run, which
    streams the output and obeys the step's cancel, or runner.run for cron).
    `engine(name, body, timeout)`, when given, runs it through the engine's
    API instead (enginerun.run, with the step's output and cancel), the same
    container from the same settings; where it returns None (no unix socket,
    an image to pull) the docker client runs it.
    The container: on the app's network, the image's own user, only `env`
    (in the API request's body, or a private env file for the client), the
    limits(), labelled with the app, the
    purpose and the pipeline's `deployment` (so crash recovery finds it; None
    for cron runs, which belong to no deployment). `workspace`, a
    host directory, is mounted read-write as the working directory.
    shell=True runs `command` with the image's /bin/sh whatever its
    entrypoint; NoShell says when it has none.

    The docker client dying (cancel, timeout, a killed worker) does not stop
    the container: it is force-removed here whenever the run did not end by
    itself, and by recovery.fail when the worker itself is gone.
    """
    assert purpose in PURPOSES
    problem = env_problem(env)
    if problem:
        raise ValueError(problem)
    network = ensure_network(app_name)
    all_labels = {"norn.app": app_name, "norn.purpose": purpose,
                  **({"norn.deployment": deployment} if deployment else {}), **(labels or {})}
    if engine is not None:
        body = {
            "Image": image, "Cmd": ["-c", *command] if shell else list(command),
            "Env": [f"{key}={value}" for key, value in env.items()],
            "Labels": {key: str(value) for key, value in all_labels.items()},
            "AttachStdout": True, "AttachStderr": True,
            "HostConfig": host_config(network, workspace),
            **({"Entrypoint": ["/bin/sh"]} if shell else {}), **({"WorkingDir": WORKSPACE} if workspace else {}),
        }
        result = engine(name, body, timeout)
        if result is not None and result.returncode == 125 and _NETWORK_MISSING.search(result.tail):
            _known_networks.discard(network_name(app_name))
            body["HostConfig"]["NetworkMode"] = ensure_network(app_name)
            result = engine(name, body, timeout)
        if result is not None:
            return _checked(result, shell, image)
    argv = ["docker", "run", "--rm", "--init", "--name", name]
    for key, value in all_labels.items():
        argv += ["--label", f"{key}={value}"]
    argv += ["--network", network, *ADD_HOST, *limits()]
    if workspace:
        argv += ["--volume", f"{workspace}:{WORKSPACE}", "--workdir", WORKSPACE]
    if shell:
        argv += ["--entrypoint", "/bin/sh"]
    finished = False
    try:
        with env_file(env) as path:
            argv += ["--env-file", path, image]
            argv += ["-c", *command] if shell else command
            result = execute(argv, timeout)
            if result.returncode == 125 and _NETWORK_MISSING.search(result.tail):
                _known_networks.discard(network_name(app_name))
                ensure_network(app_name)
                result = execute(argv, timeout)
        finished = True
    finally:
        if not finished:
            remove(name)
    return _checked(result, shell, image)


def _checked(result: runner.Result, shell: bool, image: str) -> runner.Result:
    if shell and result.returncode in (126, 127) and _NO_SHELL.search(result.tail):
        raise NoShell(f"the image {image} has no /bin/sh")
    return result


def remove(name: str) -> None:
    """Kill and remove container `name`; a missing one is fine."""
    with contextlib.suppress(OSError, runner.CommandError):
        docker(["rm", "--force", name])


def remove_for_deployment(public_id: str) -> list[str]:
    """Kill and remove the throwaway containers of deployment `public_id`
    (never its app's own container, which has no purpose label); their names."""
    try:
        returncode, output = docker([
            "ps", "--all", "--format", "{{.Names}}",
            "--filter", f"label=norn.deployment={public_id}", "--filter", "label=norn.purpose",
        ])
    except (OSError, runner.CommandError):
        return []
    names = output.split() if returncode == 0 else []
    for name in names:
        remove(name)
    return names
