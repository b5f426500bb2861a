"""The single-host runtime: each app is one container, `norn-<app>`, on the local Docker engine.

An app with a port is served by Norn's proxy (deployments/proxy.py) on its
public port; `deploy(ctx)` starts the new container next to the old one on a
backend port, switches the proxy to it once it is healthy, then retires the old
one. Apps without a port are stopped and replaced in place.
"""

import dataclasses
import http.client
import json
import socket
import time
import urllib.error
import urllib.request

from deployments import proxy, runner
from deployments.appenv import container_env, env_file, env_problem
from deployments.outcomes import StepFailed
from deployments.runner import host_env

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
# After the switch, how long connections still open to the old container may
# take to finish before it is stopped (it then gets STOP_GRACE on top).
DRAIN_SECONDS = 5.0

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


# --- deploy --------------------------------------------------------------------


def deploy(ctx):
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
        _ensure_proxy(ctx)

    _clear_leftover(ctx, name, next_name)
    previous = _container(ctx, name)
    if ctx.kind == "rollback" and _already_in_service(ctx, name, previous):
        return
    if port:
        _replace_behind_proxy(ctx, name, next_name, previous, env, port)
        return
    _replace_in_place(ctx, name, next_name, previous, env)
    if proxy.route(ctx.app_name):
        # It used to declare a port; nothing answers on it any more.
        proxy.drop_route(ctx.app_name)
        ctx.log(f"{ctx.app_name} no longer declares a port: the proxy stopped serving its old one")


def _ensure_proxy(ctx):
    try:
        pid = proxy.ensure_running()
    except proxy.ProxyError as exc:
        raise StepFailed(
            f"the Norn proxy, which serves the app's port, is not running and could not be started: {exc}"
        ) from None
    if pid:
        ctx.log(f"Started the Norn proxy (pid {pid}); its output goes to {proxy.state_dir() / proxy.LOG_FILE}")


def _create(ctx, next_name, env, labels=None):
    """docker create the new container; the environment goes in through a file."""
    argv = [
        "docker", "create",
        "--name", next_name,
        # The app reaches PostgreSQL on 127.0.0.1 and listens on $PORT,
        # exactly as it would when run on this host by hand.
        "--network", "host",
        # A tiny init as PID 1 passes SIGTERM on: many apps (busybox httpd,
        # a shell script) ignore it as PID 1, and every stop would wait out
        # the whole grace period.
        "--init",
        "--restart", "unless-stopped",
        "--label", f"norn.app={ctx.app_name}",
        "--label", f"norn.deployment={ctx.public_id}",
        "--label", f"norn.image={ctx.image}",
    ]
    for key, value in (labels or {}).items():
        argv += ["--label", f"{key}={value}"]
    with env_file(env) as path:
        # docker reads the file here, client side, and stores the values in
        # the container's config; the file is not needed after create.
        ctx.log(f"Creating {next_name} from {ctx.image}")
        ctx.run([*argv, "--env-file", path, ctx.image], timeout=CREATE_TIMEOUT)


def _label_int(info, key):
    """An integer label of an inspected container (norn.port, norn.backend-port), or None."""
    try:
        return int((info["labels"] or {})[key])
    except (KeyError, TypeError, ValueError):
        return None


def _free_backend_port(public_port):
    """A port nothing listens on now, for the new container's $PORT.

    The kernel's pick from its ephemeral range, never a public port or a
    backend the proxy knows: those are, or are about to be, in use.
    """
    _, routes = proxy.read_routes()
    taken = {public_port} | {r["port"] for r in routes.values()} | {r["backend"] for r in routes.values()}
    for _ in range(100):
        with socket.socket() as s:
            s.bind((proxy.BACKEND_HOST, 0))
            candidate = s.getsockname()[1]
        if candidate not in taken:
            return candidate
    raise StepFailed("found no free port on 127.0.0.1 for the new container")


def _replace_behind_proxy(ctx, name, next_name, previous, env, port):
    """Start the new container on a backend port of its own next to the old one,
    wait until it is up and healthy, switch the proxy's route to it, and only
    then stop and remove the old one and rename the new one to norn-<app>.

    When the new one does not come up (exit, failed health check, timeout,
    cancel) it is removed; the old one was never stopped and the route never
    moved, so the app keeps serving throughout.
    """
    app = ctx.app_name
    before = proxy.route(app)
    _, routes = proxy.read_routes()
    for other, r in routes.items():
        if other != app and r["port"] == port:
            raise StepFailed(
                f"port {port} is already the public port of the app {other}; two apps cannot "
                "share one: change `port` in one of their infraspecs"
            )
    backend = _free_backend_port(port)
    _create(ctx, next_name, {**env, "PORT": backend}, {"norn.port": port, "norn.backend-port": backend})

    was_running = bool(previous and previous["state"].get("Running"))
    old_backend = _label_int(previous, "norn.backend-port") if previous else None
    # Deployed before the proxy existed: it listens on the public port itself,
    # so the proxy can only take the port over once it has stopped.
    legacy = was_running and old_backend is None
    switched = stopped_previous = False
    try:
        if was_running:
            ctx.log(f"Starting {next_name} on 127.0.0.1:{backend}; {name} keeps serving port {port} meanwhile")
        else:
            ctx.log(f"Starting {next_name} on 127.0.0.1:{backend}")
        ctx.run(["docker", "start", next_name], timeout=COMMAND_TIMEOUT)
        _wait_until_ready(ctx, next_name, backend)

        ctx.log(f"Switching port {port} to {next_name} (127.0.0.1:{backend})")
        switched = True
        status = proxy.wait_applied(proxy.set_route(app, port, backend))
        if proxy.listening(status, port) != backend:
            error = status.get("errors", {}).get(str(port), "it is not listening")
            if not legacy:
                raise _NotReady(f"the proxy cannot listen on 127.0.0.1:{port}: {error}")
            ctx.log(
                f"{name} serves port {port} itself (it was deployed before the proxy): stopping it so "
                "the proxy can take the port over. Until it has, new connections are refused; "
                "this happens once per app."
            )
            stopped_previous = True
            ctx.run(["docker", "stop", "--timeout", str(STOP_GRACE), name], timeout=STOP_GRACE + COMMAND_TIMEOUT)
            proxy.wait_status(lambda s: proxy.listening(s, port) == backend, f"listening on port {port}")
        ctx.log(f"The proxy sends new connections on port {port} to {next_name}")
    except (_NotReady, proxy.ProxyError) as exc:
        tail, kept = _back_out(ctx, name, next_name, previous, port, before, switched, stopped_previous)
        message = f"{exc}. {kept}"
        if tail:
            message += f"\nLast output of {next_name}:\n{tail}"
        raise StepFailed(message) from None
    except Exception as exc:
        # docker itself failed, or the step was cancelled or timed out.
        _, kept = _back_out(ctx, name, next_name, previous, port, before, switched, stopped_previous)
        if isinstance(exc, StepFailed):
            raise StepFailed(f"{exc}\n{kept}") from exc
        raise

    # The switch is made and acknowledged. A cancel from here on would only
    # leave two containers behind, so the rest runs to its end (every command
    # has its own timeout).
    finish = dataclasses.replace(ctx, cancel_reason=None)
    try:
        if previous and was_running and not stopped_previous:
            if old_backend is not None:
                _drain(finish, name, old_backend)
            finish.log(f"Stopping the previous container {name}")
            finish.run(["docker", "stop", "--timeout", str(STOP_GRACE), name], timeout=STOP_GRACE + COMMAND_TIMEOUT)
        if previous:
            finish.run(["docker", "rm", "--force", name], timeout=COMMAND_TIMEOUT)
        finish.run(["docker", "rename", next_name, name], timeout=COMMAND_TIMEOUT)
    except StepFailed as exc:
        raise StepFailed(
            f"{next_name} is in service on port {port}, but finishing the replacement failed: {exc}\n"
            "The next deploy of the app finishes it."
        ) from None
    ctx.log(f"{name} is running {ctx.image}, serving port {port} through the proxy (backend 127.0.0.1:{backend})")


def _drain(ctx, name, backend):
    """Give connections still open to the old container a moment to finish."""
    status = proxy.read_status()
    still_open = proxy.open_connections(status, backend) if status else 0
    if not still_open:
        return
    ctx.log(f"Waiting up to {DRAIN_SECONDS:g} s for {still_open} open connection(s) to {name} to finish")
    try:
        proxy.wait_status(
            lambda s: not proxy.open_connections(s, backend), "the old connections closed", timeout=DRAIN_SECONDS
        )
    except proxy.ProxyError:
        ctx.log(f"Connections to {name} are still open after {DRAIN_SECONDS:g} s; stopping it anyway")


def _back_out(ctx, name, next_name, previous, port, before, switched, stopped_previous):
    """Undo a replacement behind the proxy that did not get through.

    Puts the route back when it was switched, removes the new container and
    starts the old one again if it had to be stopped. Returns (the new
    container's last output lines, a sentence saying what serves the app).
    """
    # These must run even when the failure was a cancel or a step timeout:
    # with the step's cancel probe, runner.run would kill them too.
    safe = dataclasses.replace(ctx, cancel_reason=None)
    if switched:
        # New connections go back to the old container before the new one goes.
        try:
            if before:
                version = proxy.set_route(ctx.app_name, before["port"], before["backend"])
            else:
                version = proxy.drop_route(ctx.app_name)
            proxy.wait_applied(version)
            safe.log(f"Switched port {port} back to {name}" if before else f"Removed the route of port {port}")
        except proxy.ProxyError as exc:
            safe.log(f"Could not put the proxy's route back: {exc}")
    # No inspect first: if the engine is failing, that must not hide the
    # original error; rm --force of a missing container is harmless.
    safe.log(f"Last {LOG_TAIL} lines of output of {next_name}:")
    logs = safe.run(["docker", "logs", "--tail", str(LOG_TAIL), next_name], check=False, timeout=COMMAND_TIMEOUT)
    tail = runner.tail_lines(logs.tail, 10)
    safe.log(f"Removing {next_name}")
    safe.run(["docker", "rm", "--force", next_name], check=False, timeout=COMMAND_TIMEOUT)

    if previous is None:
        return tail, "There was no previous container to fall back to."
    if not previous["state"].get("Running"):
        return tail, f"The previous container {name} was not running before this deploy and was left stopped."
    if stopped_previous:
        safe.log(f"Starting the previous container {name} again")
        result = safe.run(["docker", "start", name], check=False, timeout=COMMAND_TIMEOUT)
        if result.returncode != 0:
            return tail, f"Starting the previous container {name} again failed too; the app is not running."
        return tail, f"The previous container {name} was started again and serves port {port} itself."
    if before and before["backend"] == _label_int(previous, "norn.backend-port"):
        return tail, (
            f"The previous container {name} kept serving port {port} throughout: it was never stopped"
            + (", and the proxy sends new connections to it again." if switched else
               ", and the proxy's route never left it.")
        )
    return tail, f"The previous container {name} was left running as it was."


def _replace_in_place(ctx, name, next_name, previous, env):
    """For apps without a port: create norn-<app>-next -> stop norn-<app> ->
    start the new one -> wait until it stays running -> remove the old one and
    rename the new one. When the new one does not come up, it is removed and
    the old one is started again. (Nothing is served, so a gap costs nothing,
    and two copies of a worker must not run at once.)
    """
    was_running = bool(previous and previous["state"].get("Running"))
    _create(ctx, next_name, env)
    try:
        if was_running:
            # Stopped, not removed: it is the way back if the new one fails.
            ctx.log(f"Stopping the previous container {name}; it is kept until {next_name} is up")
            ctx.run(["docker", "stop", "--timeout", str(STOP_GRACE), name], timeout=STOP_GRACE + COMMAND_TIMEOUT)
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


def _roll_back(ctx, name, next_name, previous, was_running):
    """Remove the new container and bring the previous one back as it was
    (_replace_in_place). Returns (the new container's last output lines, a
    sentence saying what happened to the previous container).
    """
    safe = dataclasses.replace(ctx, cancel_reason=None)
    safe.log(f"Last {LOG_TAIL} lines of output of {next_name}:")
    logs = safe.run(["docker", "logs", "--tail", str(LOG_TAIL), next_name], check=False, timeout=COMMAND_TIMEOUT)
    tail = runner.tail_lines(logs.tail, 10)
    safe.log(f"Removing {next_name}")
    safe.run(["docker", "rm", "--force", next_name], check=False, timeout=COMMAND_TIMEOUT)
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
    leftover = _container(ctx, next_name)
    if leftover is None:
        return
    current = _container(ctx, name)
    route = proxy.route(ctx.app_name)
    backend = _label_int(leftover, "norn.backend-port")
    routed_here = bool(route and backend is not None and route["backend"] == backend)
    if leftover["state"].get("Running") and (current is None or routed_here):
        ctx.log(f"{next_name} is the one in service: finishing an interrupted deploy")
        if current is not None:
            ctx.run(["docker", "rm", "--force", name], timeout=COMMAND_TIMEOUT)
        ctx.run(["docker", "rename", next_name, name], timeout=COMMAND_TIMEOUT)
    else:
        ctx.log(f"Removing {next_name}, left over from an interrupted deploy")
        ctx.run(["docker", "rm", "--force", next_name], timeout=COMMAND_TIMEOUT)


def _already_in_service(ctx, name, previous):
    """For a rollback: True (and logged) when norn-<app> already runs ctx.image
    and is healthy. That is the usual case after a deploy failed its health
    check: its new container was removed and this one never stopped serving.
    """
    if previous is None or previous["state"].get("Status") != "running":
        return False
    if (previous["labels"] or {}).get("norn.image") != ctx.image:
        return False
    port = ctx.spec.port
    if port:
        backend = _label_int(previous, "norn.backend-port")
        if backend is None or _label_int(previous, "norn.port") != port:
            # Not behind the proxy on this port yet: a real replacement moves it there.
            return False
        healthy, answer = _check(ctx, backend)
        if not healthy:
            ctx.log(f"{name} runs {ctx.image} but does not answer ({answer}): replacing it")
            return False
        try:
            # Normally a no-op; after a lost routes file it points the port back.
            status = proxy.wait_applied(proxy.set_route(ctx.app_name, port, backend))
        except proxy.ProxyError as exc:
            raise StepFailed(f"the Norn proxy did not take the route of port {port}: {exc}") from None
        if proxy.listening(status, port) != backend:
            return False
    ctx.log(
        f"{name} already runs {ctx.image} and is healthy: it is in service, nothing to do. "
        "(The failed deploy's container was already replaced back by this one.)"
    )
    return True


def _check(ctx, backend):
    """(healthy, what it answered) for a container serving on `backend`: its
    health check when the spec has one, else whether it accepts connections."""
    path = ctx.spec.healthcheck
    if path:
        url = f"http://{proxy.BACKEND_HOST}:{backend}{path}"
        healthy, answer = probe(url)
        return healthy, f"GET {url}: {answer}"
    return accepts(backend)


def accepts(port, timeout=PROBE_TIMEOUT):
    """(True if 127.0.0.1:port accepts a TCP connection, what happened)."""
    try:
        with socket.create_connection((proxy.BACKEND_HOST, port), timeout=timeout):
            return True, f"{proxy.BACKEND_HOST}:{port} accepts connections"
    except OSError as exc:
        return False, f"{proxy.BACKEND_HOST}:{port}: {exc.strerror or exc}"


def _wait_until_ready(ctx, next_name, backend=None):
    """Return once the container has stayed running for SETTLE_SECONDS and,
    when it serves on `backend`, answers there (its health check, or at least
    a TCP connection: the proxy must not switch to a port nobody listens on);
    raise _NotReady otherwise."""
    limit = ctx.timeout or DEFAULT_WAIT
    path = ctx.spec.healthcheck
    url = f"http://{proxy.BACKEND_HOST}:{backend}{path}" if backend and path else None
    if url:
        wanted = f" and for GET {url} to answer 2xx or 3xx"
    elif backend:
        wanted = f" and to accept connections on {proxy.BACKEND_HOST}:{backend}"
    else:
        wanted = ""
    ctx.log(f"Waiting up to {limit:g} s for {next_name} to stay running for {SETTLE_SECONDS:g} s{wanted}")
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
                if backend is None:
                    ctx.log(f"{next_name} has been running for {now - up_since:.1f} s")
                    return
                timeout = max(0.5, min(PROBE_TIMEOUT, deadline - now))
                if url:
                    healthy, answer = probe(url, timeout=timeout)
                    answer = f"GET {url}: {answer}"
                else:
                    healthy, answer = accepts(backend, timeout=timeout)
                if answer != last_logged:
                    ctx.log(answer)
                    last_logged = answer
                if healthy:
                    return
        if time.monotonic() >= deadline:
            if answer is not None and url:
                raise _NotReady(
                    f"the new container {next_name} did not pass its health check within {limit:g} s ({answer})"
                )
            if answer is not None:
                raise _NotReady(
                    f"the new container {next_name} did not accept connections within {limit:g} s ({answer})"
                )
            raise _NotReady(f"the new container {next_name} was not running steadily within {limit:g} s")
        reason = ctx.cancel_reason() if ctx.cancel_reason else None
        if reason:
            raise runner.Cancelled(reason)
        time.sleep(POLL_INTERVAL)


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
    started_at, finished_at, exit_code, restarts, port (the public port the
    proxy serves it on) and backend_port (where the container itself
    listens; both None for apps without a port). Raises DockerError when the
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
        "port": _label_int(info, "norn.port"),
        "backend_port": _label_int(info, "norn.backend-port"),
    }


def remove(app_name):
    """Stop serving the app's public port, and stop and remove its container
    (and a leftover -next one).

    Returns the names removed; raises DockerError when docker fails.
    """
    # The route first: the proxy closes the port (connection refused) rather
    # than accepting connections for a backend that is going away.
    proxy.drop_route(app_name)
    removed = []
    for name in (container_name(app_name), f"{container_name(app_name)}-next"):
        if _inspect(_cli, name) is None:
            continue
        returncode, output = _cli(["rm", "--force", name], timeout=COMMAND_TIMEOUT + STOP_GRACE)
        if returncode != 0:
            raise DockerError(f"docker rm --force {name} failed: {output.strip()}")
        removed.append(name)
    return removed
