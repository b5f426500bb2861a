"""The single-host runtime: each app is one container, `norn-<app>`, on the local Docker engine.

`deploy(ctx)` replaces it, keeping the previous container (stopped) until the new
one is running and healthy, and starting the previous one again when it is not.
"""

import contextlib
import dataclasses
import http.client
import json
import os
import tempfile
import time
import urllib.error
import urllib.request

from deployments import appdb, runner
from deployments.steps import PASSTHROUGH_ENV, StepFailed

# The new container must stay up this long before it counts as started: an app
# that dies on a bad setting usually does so within a second or two, and with
# `--restart unless-stopped` a crash shows up as a restart, not as "exited".
SETTLE_SECONDS = 2.0
POLL_INTERVAL = 0.5
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


class _NotReady(Exception):
    """The new container exited, failed its health check or ran out of time."""


def container_name(app_name):
    return f"norn-{app_name}"


def host_env():
    """The docker client's own environment: PATH, DOCKER_HOST and the like, nothing of Norn's."""
    env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


def database_env(spec):
    """DATABASE_URL and the PG* variables for the app's database, when it declares one.

    The same connection the migrate step hands to migrations.command; with
    `--network host` the container reaches the server at the same address.
    """
    postgres = (spec.get("services") or {}).get("postgres")
    if not postgres:
        return {}
    env = appdb.pg_env(postgres["database"])
    env["DATABASE_URL"] = appdb.database_url(postgres["database"])
    return env


def container_env(ctx):
    """The app's environment inside its container.

    ctx.app_env() plus the database connection and PORT, minus the host's
    PATH, HOME and friends: those describe this machine, and passing them
    would override the image's own PATH. A variable the infraspec sets itself
    is kept even when its name is one of those.
    """
    extra = database_env(ctx.spec)
    if ctx.spec.get("port"):
        extra["PORT"] = ctx.spec["port"]
    env = ctx.app_env(**extra)
    declared = set(ctx.spec.get("env") or {}) | set(extra)
    return {k: v for k, v in env.items() if k not in PASSTHROUGH_ENV or k in declared}


def env_problem(env):
    """Why `env` cannot go into a docker --env-file, or None."""
    for name, value in env.items():
        if any(c in str(value) for c in "\n\r\0"):
            return (
                f"environment variable {name} contains a line break or NUL character; "
                "the Docker runtime passes the environment through an env file, one "
                "variable per line, so such values are not supported"
            )
    return None


@contextlib.contextmanager
def env_file(env):
    """A private (mode 600) docker --env-file holding `env`, removed on exit.

    Values travel in a file, never in argv: they can hold the database
    password, and every user of the machine can read argv in ps and /proc.
    """
    problem = env_problem(env)
    if problem:
        raise ValueError(problem)
    fd, path = tempfile.mkstemp(prefix="norn-env-", suffix=".env")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            # mkstemp already creates it 0600; keep that true even if it changes.
            os.fchmod(f.fileno(), 0o600)
            f.writelines(f"{name}={value}\n" for name, value in env.items())
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# --- deploy --------------------------------------------------------------------


def deploy(ctx):
    """Replace the app's container with one running ctx.image.

    create norn-<app>-next -> stop norn-<app> -> start the new one -> wait until
    it stays running (and its health check answers) -> remove the old one and
    rename the new one to norn-<app>. When the new one does not come up, it is
    removed, the old one is started again and StepFailed says so.
    """
    if not ctx.image:
        raise StepFailed("there is no image to run: the build step did not produce one")
    name = container_name(ctx.app_name)
    next_name = f"{name}-next"
    env = container_env(ctx)
    problem = env_problem(env)
    if problem:
        raise StepFailed(problem)

    _clear_leftover(ctx, name, next_name)
    previous = _container(ctx, name)
    was_running = bool(previous and previous["state"].get("Running"))

    argv = [
        "docker", "create",
        "--name", next_name,
        # The app listens on its port directly and reaches PostgreSQL on
        # 127.0.0.1, exactly as it would when run on this host by hand.
        "--network", "host",
        "--restart", "unless-stopped",
        "--label", f"norn.app={ctx.app_name}",
        "--label", f"norn.deployment={ctx.public_id}",
        "--label", f"norn.image={ctx.image}",
    ]
    with env_file(env) as path:
        # docker reads the file here, client side, and stores the values in
        # the container's config; the file is not needed after create.
        ctx.log(f"Creating {next_name} from {ctx.image}")
        ctx.run([*argv, "--env-file", path, ctx.image], timeout=CREATE_TIMEOUT)

    try:
        if was_running:
            # Stopped, not removed: it is the way back if the new one fails.
            # With --network host both would want the same port, so the old
            # one has to let go of it before the new one starts.
            ctx.log(f"Stopping the previous container {name}; it is kept until {next_name} is up")
            ctx.run(["docker", "stop", "--time", str(STOP_GRACE), name], timeout=STOP_GRACE + COMMAND_TIMEOUT)
        ctx.log(f"Starting {next_name}")
        ctx.run(["docker", "start", next_name], timeout=COMMAND_TIMEOUT)
        _wait_until_ready(ctx, next_name)
    except _NotReady as exc:
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


def _clear_leftover(ctx, name, next_name):
    """Deal with a norn-<app>-next that an interrupted deploy left behind."""
    leftover = _container(ctx, next_name)
    if leftover is None:
        return
    current = _container(ctx, name)
    if current is None and leftover["state"].get("Running"):
        # Interrupted between removing the old container and the rename: this
        # one is the live app, not litter. Finish the promotion.
        ctx.log(f"{next_name} is running and {name} does not exist: finishing an interrupted deploy")
        ctx.run(["docker", "rename", next_name, name], timeout=COMMAND_TIMEOUT)
    else:
        ctx.log(f"Removing {next_name}, left over from an interrupted deploy")
        ctx.run(["docker", "rm", "--force", next_name], timeout=COMMAND_TIMEOUT)


def _wait_until_ready(ctx, next_name):
    """Return once the container has stayed running for SETTLE_SECONDS and, when
    the spec has a port and a health check, answers it; raise _NotReady otherwise."""
    limit = ctx.timeout or DEFAULT_WAIT
    port, path = ctx.spec.get("port"), ctx.spec.get("healthcheck")
    url = f"http://127.0.0.1:{port}{path}" if port and path else None
    ctx.log(
        f"Waiting up to {limit:g} s for {next_name} to stay running for {SETTLE_SECONDS:g} s"
        + (f" and for GET {url} to answer 2xx or 3xx" if url else "")
    )
    deadline = time.monotonic() + limit
    up_since = None
    answer = last_logged = None
    while True:
        info = _container(ctx, next_name)
        if info is None:
            raise _NotReady(f"the new container {next_name} disappeared while starting")
        state = info["state"]
        if info["restarts"] or state.get("Status") in ("exited", "dead", "restarting"):
            detail = f" ({state['Error']})" if state.get("Error") else ""
            raise _NotReady(
                f"the new container {next_name} exited with status {state.get('ExitCode')}{detail}"
            )
        now = time.monotonic()
        if state.get("Status") == "running":
            up_since = up_since or now
            if now - up_since >= SETTLE_SECONDS:
                if url is None:
                    ctx.log(f"{next_name} has been running for {now - up_since:.1f} s")
                    return
                healthy, answer = probe(url, timeout=max(0.5, min(PROBE_TIMEOUT, deadline - now)))
                if answer != last_logged:
                    ctx.log(f"GET {url}: {answer}")
                    last_logged = answer
                if healthy:
                    return
        if time.monotonic() >= deadline:
            if answer is not None:
                raise _NotReady(
                    f"the new container {next_name} did not pass its health check within "
                    f"{limit:g} s (GET {url}: {answer})"
                )
            raise _NotReady(f"the new container {next_name} was not running steadily within {limit:g} s")
        reason = ctx.cancel_reason() if ctx.cancel_reason else None
        if reason:
            raise runner.Cancelled(reason)
        time.sleep(POLL_INTERVAL)


def _roll_back(ctx, name, next_name, previous, was_running):
    """Remove the new container and bring the previous one back as it was.

    Returns (the new container's last output lines, a sentence saying what
    happened to the previous container).
    """
    # These commands must run even when the failure was a cancel or a step
    # timeout: with the step's cancel probe, runner.run would kill them too.
    safe = dataclasses.replace(ctx, cancel_reason=None)
    # No inspect first: if the engine is failing, that must not hide the
    # original error; rm --force of a missing container is harmless.
    safe.log(f"Last {LOG_TAIL} lines of output of {next_name}:")
    logs = safe.run(["docker", "logs", "--tail", str(LOG_TAIL), next_name], check=False, timeout=COMMAND_TIMEOUT)
    tail = runner.tail_lines(logs.tail, 10)
    safe.log(f"Removing {next_name}")
    safe.run(["docker", "rm", "--force", next_name], check=False, timeout=COMMAND_TIMEOUT)
    if previous is None:
        return tail, "There was no previous container to restore."
    if not was_running:
        return tail, f"The previous container {name} was not running before this deploy and was left stopped."
    safe.log(f"Starting the previous container {name} again")
    result = safe.run(["docker", "start", name], check=False, timeout=COMMAND_TIMEOUT)
    if result.returncode != 0:
        return tail, f"Starting the previous container {name} again failed too; the app is not running."
    return tail, f"The previous container {name} was restored and is running again."


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect already shows the app is serving; following it could lead
    # away from 127.0.0.1.
    def redirect_request(self, *args, **kwargs):
        return None


# No proxies: the health check is for this host's own port.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)


def probe(url, timeout=PROBE_TIMEOUT):
    """GET `url` once; (True if it answered 2xx or 3xx, what it answered)."""
    try:
        with _opener.open(url, timeout=timeout) as response:
            return True, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        exc.close()
        return 300 <= exc.code < 400, f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return False, str(exc.reason)
    except (OSError, http.client.HTTPException) as exc:
        return False, str(exc) or exc.__class__.__name__


# --- inspecting ----------------------------------------------------------------


def _query(ctx, args, timeout=30):
    """Run a read-only `docker *args` for the step without echoing it or its
    output into the step (polling would bury the lines that matter)."""
    captured = []
    # No pgid recording either: these are short and read-only, and polling
    # would otherwise write the deployment row twice a second.
    quiet = dataclasses.replace(ctx, output=captured.append, record_pgid=None)
    result = quiet.run(["docker", *args], check=False, echo=False, timeout=timeout)
    return result.returncode, "".join(captured)


def _cli(args, timeout=30):
    """Run `docker *args` outside a step; (returncode, output)."""
    captured = []
    try:
        result = runner.run(["docker", *args], env=host_env(), timeout=timeout, on_output=captured.append)
    except (OSError, runner.CommandError) as exc:
        raise DockerError(f"docker {' '.join(args)}: {exc}") from exc
    return result.returncode, "".join(captured)


def _inspect(run, name, error=DockerError):
    """The container's state, restart count, image id and labels, or None if
    there is no such container. `run(args)` returns (returncode, output)."""
    returncode, output = run(["inspect", "--type", "container", "--format", INSPECT_FORMAT, name])
    if returncode != 0:
        if "no such" in output.lower():
            return None
        raise error(f"docker inspect {name} failed: {output.strip()}")
    return json.loads(output)


def _container(ctx, name):
    """_inspect for a deploy step: quiet, cancellable, failing with StepFailed."""
    return _inspect(lambda args: _query(ctx, args), name, StepFailed)


def status(app_name):
    """What the engine says about the app's container, or None when it has none.

    A dict: container, image (as deployed), image_id, deployment (its public
    id), state (docker's: running, exited, restarting...), running,
    started_at, finished_at, exit_code, restarts. Raises DockerError when the
    engine cannot be asked.
    """
    name = container_name(app_name)
    info = _inspect(_cli, name)
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
    }


def remove(app_name):
    """Stop and remove the app's container (and a leftover -next one).

    Returns the names removed; raises DockerError when docker fails.
    """
    removed = []
    for name in (container_name(app_name), f"{container_name(app_name)}-next"):
        if _inspect(_cli, name) is None:
            continue
        returncode, output = _cli(["rm", "--force", name], timeout=COMMAND_TIMEOUT + STOP_GRACE)
        if returncode != 0:
            raise DockerError(f"docker rm --force {name} failed: {output.strip()}")
        removed.append(name)
    return removed
