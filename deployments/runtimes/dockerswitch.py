"""Replacing a served app (it has a port or domains) behind the ingress: the new
container starts on a port of its own ($PORT, published on 127.0.0.1), must
pass its checks there (dockerready.py), and only then does the ingress send
new requests to it. A new container that fails never receives a request.

From the switch the new container is norn-<app> and the deployment is
deployed; the old one, renamed norn-<app>.retiring, is retired after the
deployment ended (Context.defer, like Kubernetes terminating old pods after a
rollout): its requests in flight finish, then it is stopped and removed.
When the worker dies first, the app's next deploy or `manage.py undeploy`
removes it (docker.py).
"""

import dataclasses
import functools
import socket
import time

from deployments import caddy, ingress
from deployments.appenv import StepContext
from deployments.outcomes import StepFailed
from deployments.runtimes.dockerengine import (
    BACKEND_HOST,
    COMMAND_TIMEOUT,
    STOP_GRACE,
    DockerError,
    NotReady,
    cli,
    create,
    discard,
    label_int,
    retiring_name,
)
from deployments.runtimes.dockerready import DeathWatch, probe, wait_until_ready

__all__ = ["already_in_service", "replace_behind_ingress", "require_ingress", "retire", "wait_until_ready"]

# After the switch, how long requests still in flight to the old container
# may take to finish before it is stopped (it then gets STOP_GRACE on top).
# Its retirement runs after the deployment ended, so none of this holds up
# "deployed".
DRAIN_SECONDS = 10.0
# How long a deploy waits for the certificates of domains new to the app.
TLS_WAIT = 10.0


def wanted_route(ctx: StepContext, backend: int = 0) -> ingress.Route:
    spec = ctx.spec
    return ingress.Route(app=ctx.app_name, backend=backend, port=spec.port, domains=tuple(spec.domains), https=spec.https)


def where(route: ingress.Route) -> str:
    """'port 8080 and shop.example.com' - where the app is reached."""
    parts = ([f"port {route.port}"] if route.port else []) + list(route.domains)
    return " and ".join(parts)


def require_ingress(ctx: StepContext) -> None:
    """Fail the step at once, before anything changes, when the ingress does
    not answer or the app's domains or port are another app's."""
    why = ingress.alive()
    if why:
        raise StepFailed(f"{why}. It serves {where(wanted_route(ctx))}; nothing was changed.")
    wanted = wanted_route(ctx)
    problem = ingress.claims_problem(wanted) or ingress.port_problem(wanted)
    if problem:
        raise StepFailed(f"{problem}; nothing was changed.")


def _free_backend_port() -> int:
    """A port nothing listens on now, for the new container's $PORT: the
    kernel's pick, never a port the ingress already uses."""
    # A retiring container's backend too: it is still published until it is gone.
    taken = {p for r in ingress.routes() for p in (r.port, r.backend, *r.draining)}
    for _ in range(100):
        with socket.socket() as s:
            s.bind((BACKEND_HOST, 0))
            candidate = s.getsockname()[1]
        if candidate not in taken:
            return candidate
    raise StepFailed(f"found no free port on {BACKEND_HOST} for the new container")


def replace_behind_ingress(ctx: StepContext, name: str, next_name: str, previous: dict | None,
                           env: dict[str, str]) -> None:
    """Start the new container next to the old one, wait until it is ready,
    switch the ingress to it and rename it norn-<app>; the old one is renamed
    norn-<app>.retiring and retired once the deployment ended (retire).

    Until the switch the old container serves alone; when the new one does
    not come up (it dies, fails its check, times out, is cancelled) it is
    removed and the route never moved. When it dies right after the switch,
    the route is put back while the old one still runs.
    """
    backend = _free_backend_port()
    new = wanted_route(ctx, backend)
    labels = {"norn.backend-port": backend, "norn.domains": ",".join(new.domains), "norn.https": new.https}
    if new.port:
        labels["norn.port"] = new.port
    create(ctx, next_name, {**env, "PORT": backend}, labels, backend)

    was_running = bool(previous and previous["state"].get("Running"))
    old_backend = label_int(previous, "norn.backend-port") if was_running else None
    serving = f"; {name} keeps serving meanwhile" if was_running else ""
    with DeathWatch(next_name) as watch:
        try:
            ctx.log(f"Starting {next_name} on {BACKEND_HOST}:{backend}{serving}")
            ctx.run(["docker", "start", next_name], timeout=COMMAND_TIMEOUT)
            wait_until_ready(ctx, next_name, backend, watch)
            ctx.log(f"Switching {where(new)} to {next_name} ({BACKEND_HOST}:{backend})")
            before = ingress.set_route(new, ctx.public_id, drain=was_running)
            switched_at = time.monotonic()
        except (NotReady, ingress.IngressError) as exc:
            tail = discard(dataclasses.replace(ctx, cancel_reason=None), next_name)
            message = f"{exc}. {_kept(name, previous)}"
            if tail:
                message += f"\nLast output of {next_name}:\n{tail}"
            raise StepFailed(message) from None
        except Exception as exc:
            # docker itself failed, or the step was cancelled or timed out.
            discard(dataclasses.replace(ctx, cancel_reason=None), next_name)
            if isinstance(exc, StepFailed):
                raise StepFailed(f"{exc}\n{_kept(name, previous)}") from exc
            raise
        ctx.log(f"The ingress sends new requests for {where(new)} to {next_name}")
        _await_certificates(ctx, new, before)

        # The switch is made. A cancel from here on would only leave two
        # containers behind, so the rest runs to its end (every command has
        # its own timeout).
        finish = dataclasses.replace(ctx, cancel_reason=None)
        if watch.died.is_set():
            _switch_back(finish, name, next_name, previous, before, watch)
    try:
        if previous:
            retiring = retiring_name(ctx.app_name)
            finish.run(["docker", "rename", name, retiring], timeout=COMMAND_TIMEOUT)
            # Deferred at once: from here the old container only has to go,
            # even if the rename below fails.
            ctx.defer(functools.partial(retire, ctx.app_name, retiring, old_backend, switched_at))
        finish.run(["docker", "rename", next_name, name], timeout=COMMAND_TIMEOUT)
    except StepFailed as exc:
        raise StepFailed(
            f"{next_name} serves {where(new)}, but finishing the replacement failed: {exc}\n"
            "The next deploy of the app finishes it."
        ) from None
    ctx.log(f"{name} is running {ctx.image}, serving {where(new)} through the ingress ({BACKEND_HOST}:{backend})")
    if previous:
        ctx.log(f"The previous container is now {retiring}: once the deployment ended and its requests "
                "in flight finished, it is stopped and removed")


def _await_certificates(ctx, new, before):
    """For domains the app did not have, wait a little for the ingress to
    present a certificate (Caddy gets them in the background); never fails."""
    added = set(new.domains) - set(before.domains if before else ())
    if not added or not caddy.serves_https(new):
        return
    pending = ingress.tls_pending(dataclasses.replace(new, domains=tuple(sorted(added))), TLS_WAIT)
    if pending:
        ctx.log(
            f"No certificate yet for {', '.join(pending)} after {TLS_WAIT:g} s: the ingress keeps trying "
            "(ACME needs the name's DNS to point at this host and port 80 or 443 reachable); "
            "`manage.py ingress status` and its log say more"
        )
    else:
        ctx.log(f"The ingress has a certificate for {', '.join(sorted(added))}")


def retire(app: str, retiring: str, backend: int | None, since: float | None, log) -> None:
    """Retire the previous container `retiring`: let the requests still in
    flight to it (on `backend`; None when it serves none) finish, and those
    on connections the ingress accepted just before the switch (at
    time.monotonic() `since`; None: not known) arrive, then stop and remove
    it and have the ingress forget its backend.

    Deferred after a replacement, and run by the app's next deploy when it
    finds one still there (docker.py). What docker or the ingress refuse is
    logged with `log(text)`, not raised: the next deploy or `manage.py
    undeploy` removes what is left.
    """
    if backend is not None:
        _drain(retiring, backend, since, log)
    stopping = time.monotonic()
    stop = _docker(["stop", "--timeout", str(STOP_GRACE), retiring], STOP_GRACE + COMMAND_TIMEOUT, log)
    removed = stop if stop == "gone" else _docker(["rm", "--force", retiring], COMMAND_TIMEOUT, log)
    if removed == "failed":
        log(f"{retiring} was not removed: the next deploy of {app} or `manage.py undeploy` removes it")
        return
    if removed == "gone":
        log(f"{retiring} is already gone: removed meanwhile")
    else:
        done = "Stopped and removed" if stop == "ok" else "Removed"
        log(f"{done} the previous container {retiring} in {time.monotonic() - stopping:.2f} s")
    if backend is not None:
        try:
            ingress.forget_drained(app, backend)
        except ingress.IngressError as exc:
            log(f"The ingress still lists {BACKEND_HOST}:{backend} as draining: {exc}")


def _drain(retiring, backend, since, log):
    try:
        left = ingress.in_flight(backend)
    except ingress.AdminError as exc:
        log(f"Not waiting for requests in flight to {retiring}: the ingress did not say how many there are ({exc})")
        return
    if left:
        log(f"Waiting up to {DRAIN_SECONDS:g} s for {left} request(s) in flight to {retiring} to finish")
    started = time.monotonic() if since is None else since
    left = ingress.wait_drained(backend, DRAIN_SECONDS, since=started)
    waited = time.monotonic() - started
    after = "after the switch" if since is not None else "of waiting"
    if left:
        log(f"{left} request(s) to {retiring} still in flight {waited:.1f} s {after}; stopping it anyway")
    else:
        log(f"No request in flight to {retiring} for {ingress.DRAIN_QUIET:g} s: drained {waited:.2f} s {after}")


def _docker(args, timeout, log) -> str:
    """Run `docker *args` on the retiring container, logged as a step runs
    it: "ok", "gone" (there is no such container) or "failed" (logged)."""
    log(f"$ docker {' '.join(args)}")
    try:
        returncode, output = cli(args, timeout=timeout)
    except DockerError as exc:
        returncode, output = 1, str(exc)
    if returncode == 0:
        return "ok"
    if "no such container" in output.lower():
        return "gone"
    log(output.strip() or f"exit status {returncode}")
    return "failed"


def _switch_back(ctx, name, next_name, previous, before, watch):
    """The new container died right after the switch: send the traffic back
    to the old one (still running) and fail."""
    crashed = f"the new container {next_name} exited with status {watch.exit_code} right after the switch"
    if before is not None and previous and previous["state"].get("Running"):
        try:
            ingress.put_back(ctx.app_name, before)
            ctx.log(f"Switched back to {name}")
            kept = f"The ingress sends requests to the previous container {name} again."
        except ingress.IngressError as exc:
            kept = f"Switching back to {name} failed too: {exc}"
    else:
        kept = "There was no running previous container to switch back to."
    tail = discard(ctx, next_name)
    message = f"{crashed}. {kept}"
    if tail:
        message += f"\nLast output of {next_name}:\n{tail}"
    raise StepFailed(message)


def _kept(name, previous) -> str:
    """What serves the app after a replacement that did not get through."""
    if previous is None:
        return "There was no previous container to fall back to."
    if not previous["state"].get("Running"):
        return f"The previous container {name} was not running before this deploy and was left stopped."
    return f"The previous container {name} kept serving throughout: the ingress never left it."


def already_in_service(ctx: StepContext, name: str, previous: dict | None) -> bool:
    """For a rollback: True (and logged) when norn-<app> already runs ctx.image
    and answers. That is the usual case after a deploy failed its health
    check: its new container was removed and this one never stopped serving.
    """
    if previous is None or previous["state"].get("Status") != "running":
        return False
    if (previous["labels"] or {}).get("norn.image") != ctx.image:
        return False
    if ctx.spec.port or ctx.spec.domains:
        backend = label_int(previous, "norn.backend-port")
        if backend is None:
            return False
        path = ctx.spec.healthcheck
        healthy, answer = probe(f"http://{BACKEND_HOST}:{backend}{path or '/'}", strict=bool(path))
        if not healthy:
            ctx.log(f"{name} runs {ctx.image} but does not answer ({answer}): replacing it")
            return False
        try:
            # Normally a no-op; after a lost or changed route it points it back.
            ingress.set_route(wanted_route(ctx, backend), (previous["labels"] or {}).get("norn.deployment", ""))
        except ingress.IngressError as exc:
            raise StepFailed(f"the ingress did not take the route of {name}: {exc}") from None
    ctx.log(
        f"{name} already runs {ctx.image} and is healthy: it is in service, nothing to do. "
        "(The failed deploy's container was already replaced back by this one.)"
    )
    return True
