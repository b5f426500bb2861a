"""ACME end to end, offline: a second Caddy is the certificate authority (its
`acme_server`), Norn's ingress (NORN_INGRESS_TLS=acme, NORN_ACME_CA pointing at
it) gets a certificate for a domain by the TLS-ALPN challenge on port 443, and
curl trusts it with that CA's root only.

The challenge needs the domain to resolve to the ingress and the ingress on
port 443: the domain is put in /etc/hosts (for this test, taken out after) and
the ingress listens on 127.0.0.3, so it needs root; traffic stays on loopback.
"""

import contextlib
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from deployments import caddy, ingress
from deployments.caddy import Route
from tests.support.ingress import IngressService
from tests.test_ingress import Backend

pytestmark = pytest.mark.django_db

INGRESS_ADDRESS = "127.0.0.3"
CA_ADDRESS = "127.0.0.4"
HOSTS = Path("/etc/hosts")


@contextlib.contextmanager
def hosts_entry(address, name):
    """`address name` in /etc/hosts while the block runs."""
    line = f"{address} {name}  # norn test {os.getpid()}\n"
    with open(HOSTS, "a") as f:
        f.write(line)
    try:
        yield
    finally:
        text = HOSTS.read_text()
        HOSTS.write_text(text.replace(line, ""))


@contextlib.contextmanager
def service(directory, settings, **values):
    """An IngressService whose admin socket `settings` point at while it runs."""
    svc = IngressService(directory).start()
    try:
        with settings_values(settings, NORN_INGRESS_ADMIN=svc.admin, **values):
            yield svc
    finally:
        svc.stop()


@contextlib.contextmanager
def settings_values(settings, **values):
    old = {name: getattr(settings, name) for name in values}
    for name, value in values.items():
        setattr(settings, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(settings, name, value)


def acme_ca_config(admin):
    return {
        "admin": {"listen": admin},
        "apps": {
            "http": {"servers": {"acme": {
                "listen": [f"{CA_ADDRESS}:9443"],
                # No HTTP->HTTPS redirect server: it would take port 80 on every address.
                "automatic_https": {"disable_redirects": True},
                "routes": [{"match": [{"host": [CA_ADDRESS]}], "handle": [{"handler": "acme_server", "ca": "local"}]}],
            }}},
            "tls": {"automation": {"policies": [{"subjects": [CA_ADDRESS], "issuers": [{"module": "internal"}]}]}},
            "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
        },
    }


def test_a_domain_gets_its_certificate_from_an_acme_ca(tmp_path, settings):
    if os.geteuid() != 0:
        pytest.fail("the ACME test needs root: port 443 and /etc/hosts (run it with scripts/test as root)")
    domain = f"acme-{secrets.token_hex(4)}.example.net"
    backend = Backend("shop")
    try:
        # The CA: a Caddy of its own, serving ACME at https://127.0.0.4:9443/acme/local/directory.
        with service(tmp_path / "ca", settings) as ca:
            caddy.load(acme_ca_config(ca.admin))
            root = tmp_path / "acme-root.pem"
            root.write_text(caddy.root_certificate())
            directory = f"https://{CA_ADDRESS}:9443/acme/local/directory"
            ready = subprocess.run(["curl", "-sS", "--cacert", str(root), directory], capture_output=True, text=True)
            assert "newOrder" in ready.stdout, ready.stderr

            with hosts_entry(INGRESS_ADDRESS, domain), service(
                tmp_path / "ingress", settings,
                NORN_INGRESS_LISTEN=[INGRESS_ADDRESS], NORN_INGRESS_HTTP_PORT=80, NORN_INGRESS_HTTPS_PORT=443,
                NORN_INGRESS_TLS="acme", NORN_ACME_CA=directory, NORN_ACME_CA_ROOT=root,
                NORN_ACME_EMAIL="ops@example.net",
            ) as norn_ingress:
                route = Route("shop", backend.port, domains=(domain,))
                ingress.set_route(route)
                assert ingress.tls_pending(route, timeout=60) == [], norn_ingress.output()[-3000:]

                # Trusted through the ACME CA's root alone (the ingress's own
                # internal CA is another one), for the name, on port 443.
                result = subprocess.run(
                    ["curl", "-sS", "--cacert", str(root), f"https://{domain}/"],
                    capture_output=True, text=True, timeout=30,
                )
                assert (result.returncode, result.stdout) == (0, f"shop {domain} https\n"), result.stderr
                log = norn_ingress.output()
                assert '"msg":"certificate obtained successfully","identifier":"' + domain + '"' in log
                ingress.drop_route("shop")
    finally:
        backend.close()
    assert domain not in HOSTS.read_text()
