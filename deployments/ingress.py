"""The single host's ingress: which app answers where, kept in the database
(IngressRoute) and pushed whole to Caddy (deployments/caddy.py) on every change.

An app is reached through its `domains` (by Host, on the ingress's HTTP and
HTTPS ports, NORN_INGRESS_HTTP_PORT/HTTPS_PORT) and/or its own `port`; the
ingress forwards to the app's current container on 127.0.0.1:<backend>. The
Docker runtime switches an app's route only once the new container passed its
health check (runtimes/dockerswitch.py); the old backend stays known to Caddy
(set_route's drain) until the old container's requests finished
(wait_drained) and it is gone (forget_drained), after the deployment ended.

Every change runs under one PostgreSQL advisory lock, reads all rows, loads
the config they make and commits only when Caddy took it: two workers
switching two apps never load each other's stale table, and a config Caddy
refuses (a port something else holds) leaves the rows and the running config
as they were.

Norn never starts Caddy: it is a service of its own (norn-ingress.service).
"""

import socket
import ssl
import time

from django.conf import settings
from django.db import connection, transaction

from deployments import caddy
from deployments.caddy import AdminError, Route
from deployments.models import IngressRoute

__all__ = [
    "AdminError", "IngressError", "Route", "alive", "apply", "drop_route", "forget_drained", "route", "routes",
    "set_route",
]

# pg_advisory_xact_lock key: "norn-ingress".
_LOCK_KEY = 0x6E6F726E_1A
DRAIN_POLL = 0.05
# How long the old backend must have had no request in flight (wait_drained).
DRAIN_QUIET = 0.25


class IngressError(Exception):
    """The route cannot be set: another app has the domain or port, or Caddy refused or is down."""


def _route(row: IngressRoute) -> Route:
    return Route(
        app=row.app_name, backend=row.backend, port=row.port, domains=tuple(row.domains), https=row.https,
        draining=tuple(row.draining),
    )


def routes() -> list[Route]:
    return [_route(row) for row in IngressRoute.objects.all()]


def route(app: str) -> Route | None:
    row = IngressRoute.objects.filter(app_name=app).first()
    return _route(row) if row else None


def alive() -> str | None:
    """None when Caddy's admin API answers, else why not (a sentence for the user)."""
    try:
        caddy.request("GET", "/config/admin", timeout=3.0)
    except AdminError as exc:
        return str(exc)
    return None


def claims_problem(new: Route) -> str | None:
    """Why `new` cannot be served (a domain or port another app has, or one of
    the ingress's own ports), or None."""
    if new.port in (settings.NORN_INGRESS_HTTP_PORT, settings.NORN_INGRESS_HTTPS_PORT):
        return (
            f"port {new.port} is the ingress's own HTTP/HTTPS port, where apps are reached by their "
            "domains: use domains, or another port"
        )
    for other in IngressRoute.objects.exclude(app_name=new.app):
        if new.port and other.port == new.port:
            return (
                f"port {new.port} is already the public port of the app {other.app_name}; two apps cannot "
                "share one: change `port` in one of their infraspecs"
            )
        taken = sorted(set(new.domains) & set(other.domains))
        if taken:
            return (
                f"the domain {taken[0]} is already served by the app {other.app_name}; a domain belongs to "
                "one app: remove it from one of their infraspecs"
            )
    return None


def _running() -> dict:
    """The config Caddy runs now (what it listens on, what to load again)."""
    try:
        return caddy.request("GET", "/config/") or {}
    except AdminError as exc:
        raise IngressError(str(exc)) from None


def _taken_problem(config: dict, running: dict) -> str | None:
    taken = caddy.ports_taken(config, running)
    if not taken:
        return None
    return (
        f"port {taken[0]} is in use by another program on this host, so the ingress cannot listen on it: "
        "stop that program or choose another port"
    )


def port_problem(new: Route) -> str | None:
    """Why the ingress could not listen where `new` needs it (another program
    on this host holds the port), or None; ports Caddy itself listens on are
    its own."""
    others = [route for route in routes() if route.app != new.app]
    return _taken_problem(caddy.build([*others, new]), _running())


def _load_all() -> None:
    """Load the config the rows make.

    A port something else holds is refused before Caddy sees it
    (caddy.ports_taken). When Caddy refuses the config anyway, the config it
    ran is loaded again, forced, so that its TLS app is provisioned afresh.
    """
    running = _running()
    config = caddy.build(routes())
    problem = _taken_problem(config, running)
    if problem:
        raise IngressError(problem)
    try:
        caddy.load(config)
    except AdminError as exc:
        try:
            caddy.load(running, force=True)
        except AdminError:
            pass
        raise IngressError(str(exc)) from None


def apply() -> None:
    """Push the routes as they are to Caddy (manage.py ingress sync)."""
    with transaction.atomic():
        _lock()
        _load_all()


def _lock() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])


def set_route(new: Route, deployment: str = "", drain: bool = False) -> Route | None:
    """Serve `new` from now on; returns the app's previous route (None if it
    had none). drain: keep counting the requests in flight to the previous
    backend (wait_drained) until forget_drained; without it, and for a
    backend that did not change, the route has none draining. Raises
    IngressError and changes nothing when a domain or port is another app's,
    or Caddy refuses the config or does not answer."""
    with transaction.atomic():
        _lock()
        problem = claims_problem(new)
        if problem:
            raise IngressError(problem)
        row = IngressRoute.objects.filter(app_name=new.app).first()
        previous = _route(row) if row else None
        draining = [previous.backend] if drain and previous and previous.backend != new.backend else []
        IngressRoute.objects.update_or_create(app_name=new.app, defaults={
            "backend": new.backend, "port": new.port, "domains": list(new.domains),
            "https": new.https, "deployment": deployment, "draining": draining,
        })
        _load_all()
    return previous


def put_back(app: str, previous: Route | None, deployment: str = "") -> None:
    """Undo a set_route: the previous route again, or none."""
    if previous is None:
        drop_route(app)
    else:
        set_route(previous, deployment)


def forget_drained(app: str, backend: int) -> bool:
    """The app's previous backend `backend` (set_route's drain) is gone:
    Caddy need not know it any more. False (and nothing loaded) when the
    route does not hold it. Raises IngressError (and keeps it) when Caddy does
    not take the change."""
    with transaction.atomic():
        _lock()
        row = IngressRoute.objects.filter(app_name=app).first()
        if row is None or backend not in row.draining:
            return False
        row.draining = [b for b in row.draining if b != backend]
        row.save()
        _load_all()
    return True


def drop_route(app: str) -> bool:
    """Stop serving the app (its domains answer 404, its port closes); False
    if it had no route. Raises IngressError (and keeps the route) when Caddy
    does not take the change."""
    with transaction.atomic():
        _lock()
        deleted, _ = IngressRoute.objects.filter(app_name=app).delete()
        if deleted:
            _load_all()
    return bool(deleted)


def in_flight(backend: int) -> int:
    """Requests Caddy is still sending to 127.0.0.1:<backend> (0 when it no
    longer knows that upstream: after a switch, only a backend set_route was
    told to drain stays known)."""
    return caddy.upstreams().get(f"127.0.0.1:{backend}", 0)


def wait_drained(backend: int, timeout: float, quiet: float = DRAIN_QUIET, since: float | None = None) -> int:
    """Wait until no request to 127.0.0.1:<backend> has been in flight for
    `quiet` seconds, at most `timeout` seconds from `since` (a
    time.monotonic() of the switch; default: now); returns how many still
    were in flight at the end (0: drained).

    The quiet period covers requests on connections the previous config
    accepted just before the switch (a TLS handshake still under way): Caddy
    serves them with that config, so they reach the old backend moments
    after the switch. It counts from `since` as long as none is in flight
    at the first look: one that came and went since then needs no wait.
    """
    start = time.monotonic() if since is None else since
    deadline = start + timeout
    idle_since = start
    while True:
        try:
            left = in_flight(backend)
        except AdminError:
            return 0
        now = time.monotonic()
        idle_since = (idle_since if idle_since is not None else now) if not left else None
        if (idle_since is not None and now - idle_since >= quiet) or now >= deadline:
            return left
        time.sleep(DRAIN_POLL)


def tls_pending(route: Route, timeout: float) -> list[str]:
    """Wait until the ingress presents a certificate for each of the route's
    domains (Caddy obtains them in the background after a config change),
    at most `timeout` seconds; returns the names still without one."""
    if not caddy.serves_https(route):
        return []
    address = (settings.NORN_INGRESS_LISTEN or ["127.0.0.1"])[0]
    address = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)
    context = ssl.create_default_context()
    # Whether the certificate is trusted is the client's business (the
    # internal CA, or one being obtained from ACME); here: is one served.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    pending = list(route.domains)
    while pending:
        for name in list(pending):
            try:
                with socket.create_connection((address, settings.NORN_INGRESS_HTTPS_PORT), timeout=2) as raw:
                    with context.wrap_socket(raw, server_hostname=name):
                        pending.remove(name)
            except (OSError, ssl.SSLError):
                pass
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(DRAIN_POLL)
    return pending
