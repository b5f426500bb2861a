"""`manage.py ingress status|sync|adopt|ca` against the real Caddy (and, for
adopt, the real Docker engine)."""

import io
import secrets

import pytest
from django.core.management import CommandError, call_command

from deployments import caddy, ingress
from deployments.caddy import Route
from deployments.models import IngressRoute
from deployments.runtimes import docker as runtime
from norn_project.cli import FAILED, UNAVAILABLE
from tests.test_docker_domains import ctx_for, get
from tests.test_docker_runtime import images, remove_app_containers  # noqa: F401 (images: a fixture)
from tests.test_ingress import Backend

pytestmark = pytest.mark.django_db


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("ingress", *args, stdout=out, stderr=err)
    return out.getvalue()


def failure(*args):
    with pytest.raises(CommandError) as failed:
        run(*args)
    return failed.value.returncode, str(failed.value)


@pytest.fixture
def backend():
    made = Backend("shop")
    yield made
    made.close()


def test_status_shows_the_routes_and_whether_caddy_runs_them(ingress_service, backend):
    ingress.set_route(Route("shop", backend.port, domains=("shop.example.test",)), "0123456789abcdef")
    text = run("status")
    assert f"Ingress (Caddy) at {ingress_service.admin}: answering" in text
    assert (
        f"  listening on 127.0.0.1: HTTP {ingress_service.http_port}, "
        f"HTTPS {ingress_service.https_port} (certificates: internal)"
    ) in text
    assert "  Caddy runs Norn's routes" in text
    assert (
        f"shop: shop.example.test (https: redirect) -> 127.0.0.1:{backend.port} (deployment 01234567), "
        "0 request(s) in flight"
    ) in text

    # Caddy lost its config (a reinstall): status says so and fails; sync fixes it.
    caddy.load({"admin": {"listen": ingress_service.admin}})
    code, message = failure("status")
    assert (code, message) == (FAILED, "the ingress's config differs from Norn's routes")
    assert run("sync") == "Loaded 1 route(s) into the ingress.\n"
    assert "  Caddy runs Norn's routes" in run("status")


def test_ca_prints_the_internal_root_certificate(ingress_service, backend):
    ingress.set_route(Route("shop", backend.port, domains=("shop.example.test",)))
    pem = run("ca")
    assert pem.startswith("-----BEGIN CERTIFICATE-----\n") and pem.endswith("-----END CERTIFICATE-----\n")


def test_a_down_ingress_is_exit_code_3(settings, tmp_path):
    settings.NORN_INGRESS_ADMIN = f"unix/{tmp_path}/none.sock"
    for action in ("status", "sync", "adopt", "ca"):
        code, message = failure(action)
        assert code == UNAVAILABLE
        assert message.startswith(f"the ingress (Caddy) is not answering at unix/{tmp_path}/none.sock")


def test_adopt_routes_running_containers_by_their_labels(tmp_path, images, ingress_service):
    app = f"ad-{secrets.token_hex(4)}"
    domain = f"{app}.example.test"
    try:
        runtime.deploy(ctx_for(tmp_path, app, images["v1"], [domain], https="both"))
        # The next deploy's worker died before retiring the previous container:
        # it still runs, as norn-<app>.retiring, and must not be taken for the app.
        runtime.deploy(ctx_for(tmp_path, app, images["v2"], [domain], https="both"))
        assert runtime.status(app)["image"] == images["v2"]
        backend = runtime.status(app)["backend_port"]
        # Norn's database restored from before the deploy, the ingress reinstalled.
        IngressRoute.objects.all().delete()
        caddy.load({"admin": {"listen": ingress_service.admin}})
        with pytest.raises(ConnectionRefusedError):  # it listens on nothing
            get(ingress_service, domain)

        text = run("adopt")
        assert f"{app}: routed to 127.0.0.1:{backend}" in text
        assert text.count(f"{app}:") == 1
        assert ingress.route(app) == Route(app, backend, domains=(domain,), https="both")
        assert get(ingress_service, domain) == (200, "v2\n")
        # Again: nothing more to do.
        assert f"{app}: already routed to 127.0.0.1:{backend}" in run("adopt")
    finally:
        remove_app_containers(app)
