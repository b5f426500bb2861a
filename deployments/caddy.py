"""Caddy, the single host's ingress, as Norn speaks to it: its admin API and the
JSON config Norn loads into it (deployments/ingress.py decides what to load).

Caddy runs as a service of its own (norn-ingress.service, or scripts/services
in development) with `caddy run --resume`: every config Norn loads is saved
by Caddy and is what it starts with after a restart. Norn only ever loads a
whole config (POST /load), which Caddy applies gracefully: listeners stay
open, requests in flight finish on the old config, and a config that cannot
start (a port someone else holds) is refused with the old one kept running.

https://caddyserver.com/docs/api and https://caddyserver.com/docs/json/
"""

import http.client
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from norn_project.services import SocketHTTPConnection

ADMIN_TIMEOUT = 10.0
# How long a config change waits for requests in flight on the old one.
GRACE_PERIOD = "10s"
# Names that no public CA will certify: served by Caddy's internal CA even
# when NORN_INGRESS_TLS is acme.
PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".test", ".home.arpa")
PRIVATE_NAMES = ("localhost",)


class AdminError(Exception):
    """Caddy's admin API could not be reached, or refused a request."""


def not_answering(admin: str, why: str) -> str:
    return (
        f"the ingress (Caddy) is not answering at {admin} ({why}): start norn-ingress.service "
        "(scripts/services in development)"
    )


def request(method: str, path: str, body=None, timeout: float = ADMIN_TIMEOUT, headers: dict | None = None):
    """One admin API request; the decoded JSON answer (None for an empty one).

    Raises AdminError naming the address when Caddy does not answer, and with
    Caddy's own error message when it refuses (a config it cannot start).
    """
    admin = settings.NORN_INGRESS_ADMIN
    if admin.startswith("unix//"):
        conn = SocketHTTPConnection(admin[len("unix/"):], timeout)
        # Caddy accepts only an empty Host on its unix socket.
        host = ""
    else:
        host_part, _, port = admin.rpartition(":")
        conn = SocketHTTPConnection((host_part.strip("[]"), int(port)), timeout)
        host = admin
    payload = json.dumps(body).encode() if body is not None else None
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if payload is not None:
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(payload)))
        conn.endheaders(payload)
        response = conn.getresponse()
        raw = response.read(16 * 1024 * 1024)
    except (OSError, http.client.HTTPException) as exc:
        raise AdminError(not_answering(admin, getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)) from None
    finally:
        conn.close()
    if response.status >= 400:
        try:
            message = json.loads(raw).get("error") or raw.decode(errors="replace")
        except (ValueError, AttributeError):
            message = raw.decode(errors="replace")
        raise AdminError(f"Caddy refused {method} {path} (HTTP {response.status}): {message.strip()[:2000]}")
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise AdminError(f"Caddy's answer to {method} {path} is not JSON") from None


# --- the config ------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """Where the ingress sends one app's traffic: 127.0.0.1:backend, reached
    through `domains` (by Host, on the ingress's HTTP and HTTPS ports) and/or
    the app's own `port`."""

    app: str
    backend: int
    port: int | None = None
    domains: tuple[str, ...] = ()
    https: str = "redirect"
    # The app's previous backends, kept known to Caddy after a switch so that
    # their requests still in flight are counted (upstreams()): Caddy forgets
    # an upstream no config refers to, in-flight requests and all. Dropped
    # once the old container is gone (ingress.forget_drained).
    draining: tuple[int, ...] = ()

    @property
    def dial(self) -> str:
        return f"127.0.0.1:{self.backend}"


def private_name(domain: str) -> bool:
    return domain in PRIVATE_NAMES or domain.endswith(PRIVATE_SUFFIXES)


def serves_https(route: Route) -> bool:
    return bool(route.domains) and route.https != "off" and settings.NORN_INGRESS_TLS != "off"


def _listen(port: int) -> list[str]:
    hosts = settings.NORN_INGRESS_LISTEN or [""]
    return [f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in hosts]


def _proxy_to(route: Route, dial: str | None = None) -> dict:
    return {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": dial or route.dial}],
        "transport": {"protocol": "http", "dial_timeout": "5s"},
    }


def _draining(route: Route) -> list[dict]:
    """Routes that never match (.invalid), referring to the app's draining backends."""
    return [
        {"match": [{"host": [f"{route.app}.draining.invalid"]}], "handle": [_proxy_to(route, f"127.0.0.1:{backend}")]}
        for backend in route.draining
    ]


def _redirect_to_https() -> dict:
    port = settings.NORN_INGRESS_HTTPS_PORT
    authority = "{http.request.host}" + ("" if port == 443 else f":{port}")
    return {
        "handler": "static_response",
        "status_code": 308,
        "headers": {"Location": [f"https://{authority}{{http.request.uri}}"]},
    }


_NOT_FOUND = {
    "handle": [{
        "handler": "static_response",
        "status_code": 404,
        "headers": {"Content-Type": ["text/plain; charset=utf-8"]},
        "body": "No app is served at {http.request.host} on this host.\n",
    }],
}


def _tls_app(routes: Iterable[Route]) -> dict:
    """Certificates: the operator's files for the names they cover, else
    Caddy's internal CA or ACME (NORN_INGRESS_TLS)."""
    internal = {"module": "internal", "ca": "local"}
    if settings.NORN_INGRESS_TLS == "internal":
        policies = [{"issuers": [internal]}]
    else:
        acme = {"module": "acme"}
        if settings.NORN_ACME_EMAIL:
            acme["email"] = settings.NORN_ACME_EMAIL
        if settings.NORN_ACME_CA:
            acme["ca"] = settings.NORN_ACME_CA
        if settings.NORN_ACME_CA_ROOT:
            acme["trusted_roots_pem_files"] = [str(settings.NORN_ACME_CA_ROOT)]
        private = sorted({d for r in routes for d in r.domains if private_name(d)})
        policies = ([{"subjects": private, "issuers": [internal]}] if private else []) + [{"issuers": [acme]}]
    tls = {"automation": {"policies": policies}}
    files = certificate_files()
    if files:
        tls["certificates"] = {"load_files": [{"certificate": str(c), "key": str(k)} for c, k in files]}
    return tls


def certificate_files() -> list[tuple[Path, Path]]:
    """(NAME.crt, NAME.key) pairs in NORN_INGRESS_CERTIFICATES, sorted."""
    directory = settings.NORN_INGRESS_CERTIFICATES
    if not directory or not directory.is_dir():
        return []
    return [(crt, crt.with_suffix(".key")) for crt in sorted(directory.glob("*.crt")) if crt.with_suffix(".key").is_file()]


def build(routes: Iterable[Route]) -> dict:
    """The whole Caddy config for these routes (and Norn's settings)."""
    routes = sorted(routes, key=lambda r: r.app)
    http_routes, https_routes, servers = [], [], {}
    for route in routes:
        http_routes.extend(_draining(route))
        if route.domains:
            match = [{"host": list(route.domains)}]
            if serves_https(route):
                https_routes.append({"match": match, "handle": [_proxy_to(route)], "terminal": True})
            redirect = serves_https(route) and route.https == "redirect"
            http_routes.append({
                "match": match, "terminal": True,
                "handle": [_redirect_to_https() if redirect else _proxy_to(route)],
            })
        if route.port:
            servers[f"port-{route.port}"] = {
                "listen": _listen(route.port),
                "routes": [{"handle": [_proxy_to(route)]}],
                "automatic_https": {"disable": True},
            }
    servers["http"] = {
        "listen": _listen(settings.NORN_INGRESS_HTTP_PORT),
        "routes": [*http_routes, _NOT_FOUND],
        # Norn adds the redirects itself, per app (https: redirect).
        "automatic_https": {"disable_redirects": True},
    }
    apps = {"http": {
        "http_port": settings.NORN_INGRESS_HTTP_PORT,
        "https_port": settings.NORN_INGRESS_HTTPS_PORT,
        "grace_period": GRACE_PERIOD,
        "servers": servers,
    }}
    if settings.NORN_INGRESS_TLS != "off":
        servers["https"] = {
            "listen": _listen(settings.NORN_INGRESS_HTTPS_PORT),
            "routes": [*https_routes, _NOT_FOUND],
            "automatic_https": {"disable_redirects": True},
        }
        apps["tls"] = _tls_app(routes)
        # Never touch the host's trust store (Caddy would, running as root).
        apps["pki"] = {"certificate_authorities": {"local": {"install_trust": False}}}
    return {"admin": {"listen": settings.NORN_INGRESS_ADMIN}, "apps": apps}


def listening_ports() -> set[int]:
    """TCP ports something on this host listens on (/proc/net/tcp, tcp6)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "0A":  # LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def _ports(config: dict) -> set[int]:
    servers = ((config.get("apps") or {}).get("http") or {}).get("servers") or {}
    return {int(address.rsplit(":", 1)[1]) for server in servers.values() for address in server.get("listen", [])}


def ports_taken(config: dict, running: dict | None) -> list[int]:
    """Ports `config` would listen on that the running config does not, but
    something else on this host already listens on.

    Checked before loading because Caddy 2.6 handles a config whose listener
    cannot bind badly: it reports the error and keeps the old config, but the
    servers of the refused config that had already started keep answering
    part of the connections (TLS handshakes among them fail) until Caddy is
    restarted.
    """
    new = _ports(config) - _ports(running or {})
    return sorted(new & listening_ports()) if new else []


def load(config: dict, force: bool = False) -> None:
    """Make `config` Caddy's running (and saved) config; AdminError if refused.

    Caddy skips a config equal to the running one unless forced (`caddy
    reload --force` sends the same header).
    """
    request("POST", "/load", config, headers={"Cache-Control": "must-revalidate"} if force else None)


def upstreams() -> dict[str, int]:
    """{"127.0.0.1:<backend>": requests in flight} for every upstream Caddy knows."""
    return {u["address"]: int(u.get("num_requests", 0)) for u in request("GET", "/reverse_proxy/upstreams") or []}


def root_certificate() -> str:
    """The internal CA's root certificate (PEM), for clients to trust."""
    answer = request("GET", "/pki/ca/local") or {}
    return answer.get("root_certificate", "")
