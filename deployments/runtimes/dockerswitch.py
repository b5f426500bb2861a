"""Replacing an app that has a port behind Norn's proxy (deployments/proxy.py): the
new container starts on a backend port of its own, must stay up and pass its health
check there, and only then does the proxy's route switch to it; the old one drains
and goes. Also the health checks themselves, used by every replacement.
"""

import dataclasses
import http.client
import socket
import time
import urllib.error
import urllib.request

from deployments import proxy, runner
from deployments.appenv import StepContext
from deployments.outcomes import StepFailed
from deployments.runtimes.dockerengine import (
    COMMAND_TIMEOUT,
    DEFAULT_WAIT,
    POLL_INTERVAL,
    PROBE_TIMEOUT,
    SETTLE_SECONDS,
    STOP_GRACE,
    NotReady,
    container,
    create,
    label_int,
    discard,
)

# After the switch, how long connections still open to the old container may
# take to finish before it is stopped (it then gets STOP_GRACE on top).
DRAIN_SECONDS = 5.0


def require_proxy(ctx: StepContext) -> None:
    """Fail the step at once, before anything changes, when the proxy that
    serves the app's public port is not running. Norn never starts it: it is a
    service of its own, and a process a worker started would outlive the worker."""
    if not proxy.alive():
        raise StepFailed(
            f"{proxy.NOT_RUNNING}. It serves the app's public port {ctx.spec.port} and switches it to the "
            "new container; nothing was changed."
        )


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


def replace_behind_proxy(ctx: StepContext, name: str, next_name: str, previous: dict | None,
                         env: dict[str, str], port: int) -> None:
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
    create(ctx, next_name, {**env, "PORT": backend}, {"norn.port": port, "norn.backend-port": backend}, backend)

    was_running = bool(previous and previous["state"].get("Running"))
    old_backend = label_int(previous, "norn.backend-port") if previous else None
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
        wait_until_ready(ctx, next_name, backend)

        ctx.log(f"Switching port {port} to {next_name} (127.0.0.1:{backend})")
        switched = True
        status = proxy.wait_applied(proxy.set_route(app, port, backend))
        if proxy.listening(status, port) != backend:
            error = status.get("errors", {}).get(str(port), "it is not listening")
            if not legacy:
                raise NotReady(f"the proxy cannot listen on 127.0.0.1:{port}: {error}")
            ctx.log(
                f"{name} serves port {port} itself (it was deployed before the proxy): stopping it so "
                "the proxy can take the port over. Until it has, new connections are refused; "
                "this happens once per app."
            )
            stopped_previous = True
            ctx.run(["docker", "stop", "--timeout", str(STOP_GRACE), name], timeout=STOP_GRACE + COMMAND_TIMEOUT)
            proxy.wait_status(lambda s: proxy.listening(s, port) == backend, f"listening on port {port}")
        ctx.log(f"The proxy sends new connections on port {port} to {next_name}")
    except (NotReady, proxy.ProxyError) as exc:
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
    tail = discard(safe, next_name)

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
    if before and before["backend"] == label_int(previous, "norn.backend-port"):
        return tail, (
            f"The previous container {name} kept serving port {port} throughout: it was never stopped"
            + (", and the proxy sends new connections to it again." if switched else
               ", and the proxy's route never left it.")
        )
    return tail, f"The previous container {name} was left running as it was."


def already_in_service(ctx: StepContext, name: str, previous: dict | None) -> bool:
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
        backend = label_int(previous, "norn.backend-port")
        if backend is None or label_int(previous, "norn.port") != port:
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


# How long a connection must stay open to count as accepted (accepts()).
ACCEPT_SETTLE = 0.3


def accepts(port: int, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """(True if 127.0.0.1:port accepts a TCP connection, what happened).

    Docker's port publisher accepts every connection itself and closes it at
    once when nothing listens in the container, so a connection only counts
    when it stays open (or the app speaks first).
    """
    try:
        with socket.create_connection((proxy.BACKEND_HOST, port), timeout=timeout) as conn:
            conn.settimeout(ACCEPT_SETTLE)
            try:
                if conn.recv(1) == b"":
                    return False, f"{proxy.BACKEND_HOST}:{port}: closed at once (nothing listens in the container yet)"
            except TimeoutError:
                pass
            return True, f"{proxy.BACKEND_HOST}:{port} accepts connections"
    except OSError as exc:
        return False, f"{proxy.BACKEND_HOST}:{port}: {exc.strerror or exc}"


def wait_until_ready(ctx: StepContext, next_name: str, backend: int | None = None) -> None:
    """Return once the container has stayed running for SETTLE_SECONDS and,
    when it serves on `backend`, answers there (its health check, or at least
    a TCP connection: the proxy must not switch to a port nobody listens on);
    raise NotReady otherwise."""
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
        info = container(ctx, next_name)
        if info is None:
            raise NotReady(f"the new container {next_name} disappeared while starting")
        state = info["state"]
        if info["restarts"] or state.get("Status") in ("exited", "dead", "restarting"):
            detail = f" ({state['Error']})" if state.get("Error") else ""
            raise NotReady(
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
                raise NotReady(
                    f"the new container {next_name} did not pass its health check within {limit:g} s ({answer})"
                )
            if answer is not None:
                raise NotReady(
                    f"the new container {next_name} did not accept connections within {limit:g} s ({answer})"
                )
            raise NotReady(f"the new container {next_name} was not running steadily within {limit:g} s")
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


def probe(url: str, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
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
