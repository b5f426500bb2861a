"""The ingress against the real Caddy binary: routing by Host for several apps
on one port, TLS from the internal CA checked by curl --cacert, the redirect to
HTTPS, an app's own port, conflicts refused, a config Caddy cannot start kept
out, and every route kept across a restart of Caddy.

The backends are small HTTP servers on 127.0.0.1 that answer with their name,
standing in for app containers (tests/test_ingress_docker.py has real ones).
"""

import http.server
import subprocess
import threading
import time
import urllib.request

import pytest

from deployments import caddy, ingress
from deployments.caddy import Route
from deployments.models import IngressRoute
from tests.support.ingress import free_port

pytestmark = pytest.mark.django_db


class Backend:
    """An HTTP server answering every GET with its name (and the Host it got)."""

    def __init__(self, name):
        self.name = name

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = f"{name} {self.headers.get('Host')} {self.headers.get('X-Forwarded-Proto')}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backends():
    made = []

    def make(name):
        made.append(Backend(name))
        return made[-1]

    yield make
    for backend in made:
        backend.close()


def curl(*args):
    """curl's (status line code, body); traffic stays on 127.0.0.1."""
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", *args],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    body, _, code = result.stdout.rpartition("\n")
    return int(code), body.rstrip("\n")


def get(ingress_service, host, path="/"):
    return curl("-H", f"Host: {host}", f"http://127.0.0.1:{ingress_service.http_port}{path}")


def https_get(ingress_service, host, cafile, path="/"):
    port = ingress_service.https_port
    return curl("--cacert", str(cafile), "--resolve", f"{host}:{port}:127.0.0.1", f"https://{host}:{port}{path}")


def test_two_apps_on_one_port_are_routed_by_host(ingress_service, backends):
    shop, blog = backends("shop"), backends("blog")
    ingress.set_route(Route("shop", shop.port, domains=("shop.example.test", "www.shop.example.test"), https="both"))
    ingress.set_route(Route("blog", blog.port, domains=("blog.example.test",), https="both"))

    assert get(ingress_service, "shop.example.test") == (200, "shop shop.example.test http")
    assert get(ingress_service, "www.shop.example.test")[1].startswith("shop ")
    assert get(ingress_service, "blog.example.test")[1].startswith("blog ")
    code, body = get(ingress_service, "nobody.example.test")
    assert (code, body) == (404, "No app is served at nobody.example.test on this host.")


def test_https_with_the_internal_ca_is_verified_by_curl(ingress_service, backends, tmp_path):
    shop = backends("shop")
    route = Route("shop", shop.port, domains=("shop.example.test",))
    ingress.set_route(route)
    cafile = tmp_path / "ca.pem"
    cafile.write_text(caddy.root_certificate())

    # Caddy issues the certificate in the background after the change.
    assert ingress.tls_pending(route, timeout=10) == []
    # curl checks the chain against the CA and the name against the certificate.
    assert https_get(ingress_service, "shop.example.test", cafile) == (
        200, f"shop shop.example.test:{ingress_service.https_port} https"
    )
    # Without the CA curl refuses it: a real certificate check happened.
    port = ingress_service.https_port
    refused = subprocess.run(
        ["curl", "-sS", "--resolve", f"shop.example.test:{port}:127.0.0.1", f"https://shop.example.test:{port}/"],
        capture_output=True, text=True, timeout=30,
    )
    assert refused.returncode == 60, refused.stderr  # SSL certificate problem


def test_https_redirect_is_per_app(ingress_service, backends):
    shop, blog, plain = backends("shop"), backends("blog"), backends("plain")
    ingress.set_route(Route("shop", shop.port, domains=("shop.example.test",)))  # https: redirect
    ingress.set_route(Route("blog", blog.port, domains=("blog.example.test",), https="both"))
    ingress.set_route(Route("plain", plain.port, domains=("plain.example.test",), https="off"))

    code, _ = curl("-o", "/dev/null", "-D", "-", "-H", "Host: shop.example.test",
                   f"http://127.0.0.1:{ingress_service.http_port}/cart?id=7")
    assert code == 308
    headers = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-D", "-", "-H", "Host: shop.example.test",
         f"http://127.0.0.1:{ingress_service.http_port}/cart?id=7"],
        capture_output=True, text=True, timeout=30,
    ).stdout
    assert f"location: https://shop.example.test:{ingress_service.https_port}/cart?id=7" in headers.lower()
    assert get(ingress_service, "blog.example.test")[0] == 200
    assert get(ingress_service, "plain.example.test")[0] == 200


def test_an_apps_own_port_is_a_listener_of_the_ingress(ingress_service, backends):
    api = backends("api")
    port = free_port()
    ingress.set_route(Route("api", api.port, port=port))
    assert curl(f"http://127.0.0.1:{port}/")[1] == f"api 127.0.0.1:{port} http"

    ingress.drop_route("api")
    refused = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{port}/"], capture_output=True, text=True)
    assert refused.returncode == 7  # connection refused: the port is closed again


def test_a_previous_backend_stays_known_until_it_is_forgotten(ingress_service, backends, monkeypatch):
    old, new = backends("old"), backends("new")
    port = free_port()
    ingress.set_route(Route("api", old.port, port=port))
    ingress.set_route(Route("api", new.port, port=port), drain=True)
    assert curl(f"http://127.0.0.1:{port}/")[1].startswith("new ")
    # Its requests in flight can still be counted.
    assert ingress.route("api").draining == (old.port,)
    assert f"127.0.0.1:{old.port}" in caddy.upstreams()

    # Drained as soon as it is looked at when it has been quiet since the
    # switch long enough; from now on, only after the quiet period.
    looks = []
    counted = ingress.in_flight
    monkeypatch.setattr(ingress, "in_flight", lambda backend: looks.append(backend) or counted(backend))
    assert ingress.wait_drained(old.port, 5, since=time.monotonic() - ingress.DRAIN_QUIET) == 0
    assert looks == [old.port]
    assert ingress.wait_drained(old.port, 5) == 0
    assert len(looks) > 2

    assert ingress.forget_drained("api", old.port) is True
    assert ingress.route("api") == Route("api", new.port, port=port)
    assert caddy.request("GET", "/config/") == caddy.build(ingress.routes())
    assert f"127.0.0.1:{old.port}" not in caddy.upstreams()
    assert curl(f"http://127.0.0.1:{port}/")[1].startswith("new ")
    # Nothing to forget: nothing is loaded.
    assert ingress.forget_drained("api", old.port) is False
    assert ingress.forget_drained("nobody", old.port) is False


def test_a_domain_or_port_of_another_app_is_refused(ingress_service, backends):
    shop = backends("shop")
    port = free_port()
    ingress.set_route(Route("shop", shop.port, port=port, domains=("shop.example.test",)))

    with pytest.raises(ingress.IngressError, match="the domain shop.example.test is already served by the app shop"):
        ingress.set_route(Route("copycat", shop.port, domains=("other.example.test", "shop.example.test")))
    with pytest.raises(ingress.IngressError, match=f"port {port} is already the public port of the app shop"):
        ingress.set_route(Route("copycat", shop.port, port=port))
    with pytest.raises(ingress.IngressError, match="is the ingress's own HTTP/HTTPS port"):
        ingress.set_route(Route("copycat", shop.port, port=ingress_service.http_port))
    assert list(IngressRoute.objects.values_list("app_name", flat=True)) == ["shop"]


def test_a_port_another_program_holds_is_refused_and_changes_nothing(ingress_service, backends, tmp_path):
    shop = backends("shop")
    route = Route("shop", shop.port, domains=("shop.example.test",), https="both")
    ingress.set_route(route)
    before = caddy.request("GET", "/config/")

    # Something else holds the port the app asks for: refused before Caddy
    # sees it (Caddy 2.6 would keep part of a config it cannot start serving).
    with pytest.raises(ingress.IngressError, match=f"port {shop.port} is in use by another program on this host"):
        ingress.set_route(Route("api", shop.port, port=shop.port))
    assert ingress.route("api") is None
    assert caddy.request("GET", "/config/") == before
    cafile = tmp_path / "ca.pem"
    cafile.write_text(caddy.root_certificate())
    assert ingress.tls_pending(route, timeout=10) == []
    for _ in range(10):
        assert get(ingress_service, "shop.example.test")[0] == 200
        assert https_get(ingress_service, "shop.example.test", cafile)[0] == 200


def test_restarting_the_ingress_keeps_every_route(ingress_service, backends, tmp_path):
    shop, blog = backends("shop"), backends("blog")
    port = free_port()
    route = Route("shop", shop.port, domains=("shop.example.test",))
    ingress.set_route(route)
    ingress.set_route(Route("blog", blog.port, port=port, domains=("blog.example.test",), https="both"))
    cafile = tmp_path / "ca.pem"
    cafile.write_text(caddy.root_certificate())
    assert ingress.tls_pending(route, timeout=10) == []
    assert https_get(ingress_service, "shop.example.test", cafile)[0] == 200

    assert ingress_service.stop() < 10
    assert ingress.alive().startswith("the ingress (Caddy) is not answering at unix/")
    ingress_service.start()

    # Caddy resumed its saved config: the same routes, the same CA (and the
    # certificate, loaded again from its storage).
    assert caddy.request("GET", "/config/") == caddy.build(ingress.routes())
    assert ingress.tls_pending(route, timeout=10) == []
    assert https_get(ingress_service, "shop.example.test", cafile)[1].startswith("shop shop.example.test:")
    assert get(ingress_service, "blog.example.test")[1].startswith("blog ")
    assert curl(f"http://127.0.0.1:{port}/")[1].startswith("blog ")


def test_sync_gives_a_reset_ingress_its_routes_back(ingress_service, backends):
    shop = backends("shop")
    ingress.set_route(Route("shop", shop.port, domains=("shop.example.test",), https="both"))
    caddy.load({"admin": {"listen": ingress_service.admin}})  # as a fresh install would run
    assert get_or_none(ingress_service, "shop.example.test") is None

    ingress.apply()
    assert get(ingress_service, "shop.example.test")[0] == 200


def get_or_none(ingress_service, host):
    try:
        with urllib.request.urlopen(
            urllib.request.Request(f"http://127.0.0.1:{ingress_service.http_port}/", headers={"Host": host}), timeout=5
        ) as response:
            return response.status
    except OSError:
        return None


def test_operator_certificate_files_are_served_for_their_names(ingress_service, backends, tmp_path, settings):
    shop = backends("shop")
    certs = tmp_path / "certs"
    certs.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=shop.example.test",
         "-addext", "subjectAltName=DNS:shop.example.test",
         "-keyout", str(certs / "shop.key"), "-out", str(certs / "shop.crt")],
        check=True, capture_output=True,
    )
    settings.NORN_INGRESS_CERTIFICATES = certs
    route = Route("shop", shop.port, domains=("shop.example.test",))
    ingress.set_route(route)
    assert ingress.tls_pending(route, timeout=10) == []

    # The operator's self-signed certificate is what is served: it verifies
    # against itself, not against the internal CA.
    assert https_get(ingress_service, "shop.example.test", certs / "shop.crt")[0] == 200


def test_acme_mode_loads_an_acme_issuer_and_keeps_private_names_internal(ingress_service, settings):
    settings.NORN_INGRESS_TLS = "acme"
    settings.NORN_ACME_EMAIL = "ops@example.com"
    settings.NORN_ACME_CA = "https://127.0.0.1:1/acme/directory"
    routes = [Route("shop", 1, domains=("shop.example.com", "shop.localhost"))]
    policies = caddy.build(routes)["apps"]["tls"]["automation"]["policies"]
    assert policies == [
        {"subjects": ["shop.localhost"], "issuers": [{"module": "internal", "ca": "local"}]},
        {"issuers": [{"module": "acme", "email": "ops@example.com", "ca": "https://127.0.0.1:1/acme/directory"}]},
    ]
    # Real Caddy takes it (it validates every module's config when loading).
    caddy.load(caddy.build(routes))


def test_ingress_that_does_not_answer_is_named(settings, tmp_path):
    settings.NORN_INGRESS_ADMIN = f"unix/{tmp_path}/nothing.sock"
    assert ingress.alive() == (
        f"the ingress (Caddy) is not answering at unix/{tmp_path}/nothing.sock (No such file or directory): "
        "start norn-ingress.service (scripts/services in development)"
    )


def test_the_admin_lists_routes_read_only(ingress_service, backends, admin_client):
    shop = backends("shop")
    ingress.set_route(Route("shop", shop.port, port=free_port(), domains=("shop.example.test",)), "abcdef12-0000")
    page = admin_client.get("/admin/deployments/ingressroute/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "shop.example.test, port " in text and f"127.0.0.1:{shop.port}" in text
    assert admin_client.get("/admin/deployments/ingressroute/add/").status_code == 403
    assert admin_client.post("/admin/deployments/ingressroute/shop/delete/", {"post": "yes"}).status_code == 403
    assert ingress.route("shop") is not None
