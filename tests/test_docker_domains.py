"""Apps reached by their domains through the real ingress (Caddy) and the real
Docker engine: two apps on the ingress's one HTTP and one HTTPS port, routed by
Host, HTTPS verified with the internal CA; a client requesting a domain without
pause sees no failed request through ten deploys (failed ones among them) and a
restart of the ingress; a container that dies right after its start is caught
without a fixed wait.
"""

import http.client
import secrets
import socket
import ssl
import subprocess
import threading

import pytest

from deployments import caddy, ingress
from deployments.outcomes import StepFailed
from deployments.runtimes import docker as runtime
from norn_project import checks
from tests.support.contexts import parse_spec, step_context
from tests.support.docker_images import docker_build
from tests.test_docker_runtime import containers, deploy, images, remove_app_containers  # noqa: F401 (images: a fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def app():
    name = f"dm-{secrets.token_hex(4)}"
    yield name
    remove_app_containers(name)


def ctx_for(tmp_path, app, image, domains, https="both", timeout=30):
    text = f"app: {app}\nrole: webserver\nhealthcheck: /healthz\nhttps: {https}\ndomains:\n"
    text += "".join(f"  - {d}\n" for d in domains)
    return step_context(parse_spec(text), workdir=tmp_path, app_dir=tmp_path, image=image, timeout=timeout)


def get(ingress_service, host, cafile=None):
    """(status, body) for GET / of `host` through the ingress; a new connection each time."""
    if cafile:
        context = ssl.create_default_context(cafile=str(cafile))
        conn = http.client.HTTPSConnection("127.0.0.1", ingress_service.https_port, timeout=10, context=context)
        # SNI and the certificate's name check use the domain, the TCP connection goes to 127.0.0.1.
        conn.sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", ingress_service.https_port), timeout=10), server_hostname=host,
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", ingress_service.http_port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def write_ca(tmp_path):
    cafile = tmp_path / "ca.pem"
    cafile.write_text(caddy.root_certificate())
    return cafile


def test_two_apps_share_the_ingress_ports_by_host_with_https(tmp_path, images, app, ingress_service):
    other = f"{app}-b"
    try:
        deploy(ctx_for(tmp_path, app, images["v1"], [f"{app}.example.test", f"www.{app}.example.test"]))
        ctx = ctx_for(tmp_path, other, images["v2"], [f"{other}.example.test"], https="redirect")
        deploy(ctx)
        assert f"The ingress has a certificate for {other}.example.test" in ctx.lines()
        cafile = write_ca(tmp_path)

        assert get(ingress_service, f"{app}.example.test") == (200, "v1\n")
        assert get(ingress_service, f"www.{app}.example.test", cafile) == (200, "v1\n")
        assert get(ingress_service, f"{other}.example.test", cafile) == (200, "v2\n")
        # https: redirect sends plain HTTP to HTTPS; https: both serves both.
        assert get(ingress_service, f"{other}.example.test")[0] == 308
        result = subprocess.run(
            ["curl", "-sS", "--cacert", str(cafile), "--resolve",
             f"{other}.example.test:{ingress_service.https_port}:127.0.0.1",
             f"https://{other}.example.test:{ingress_service.https_port}/"],
            capture_output=True, text=True, timeout=30,
        )
        assert (result.returncode, result.stdout) == (0, "v2\n"), result.stderr
        status = runtime.status(other)
        assert status["domains"] == [f"{other}.example.test"] and status["port"] is None
        # A third app cannot take a domain the first one has.
        with pytest.raises(StepFailed, match=f"the domain {app}.example.test is already served by the app {app}"):
            deploy(ctx_for(tmp_path, f"{app}-c", images["v2"], [f"{app}.example.test"]))
    finally:
        remove_app_containers(other)
        remove_app_containers(f"{app}-c")


class Client:
    """Requests the domain without pause over HTTP and HTTPS, new connection
    each time, as the app's users would; pause() holds it still."""

    def __init__(self, ingress_service, host, cafile):
        self.args = (ingress_service, host)
        self.cafile = cafile
        self.answers, self.failures = [], []
        self.running = threading.Event()
        self.stopped = threading.Event()
        self.idle = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        n = 0
        while not self.stopped.is_set():
            if not self.running.is_set():
                self.idle.set()
                self.running.wait(0.1)
                continue
            self.idle.clear()
            n += 1
            try:
                status, body = get(*self.args, cafile=self.cafile if n % 2 else None)
                (self.answers if status == 200 else self.failures).append(body if status == 200 else status)
            except Exception as exc:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(exc))
            self.stopped.wait(0.01)

    def start(self):
        self.running.set()
        self.thread.start()

    def pause(self):
        self.running.clear()
        self.idle.wait(10)

    def stop(self):
        self.stopped.set()
        self.running.set()
        self.thread.join(10)


def test_no_request_fails_through_ten_deploys_and_an_ingress_restart(tmp_path, images, app, ingress_service):
    # Without it every route switch may reset a connection or two (Caddy's
    # listeners are re-created on each config change); scripts/services sets it.
    with open(checks.TCP_MIGRATE_REQ) as f:
        assert f.read().strip() == "1", "net.ipv4.tcp_migrate_req is not 1: run scripts/services"
    domain = f"{app}.example.test"
    deploy(ctx_for(tmp_path, app, images["v1"], [domain]))
    client = Client(ingress_service, domain, write_ca(tmp_path))
    client.start()
    outcomes = []
    try:
        plan = ["v2", "unhealthy", "v1", "crash", "v2", "v1", "unhealthy", "v2", "crash", "v1"]
        for number, variant in enumerate(plan, 1):
            try:
                deploy(ctx_for(tmp_path, app, images[variant], [domain], timeout=3))
                outcomes.append(variant)
            except StepFailed:
                outcomes.append(f"{variant} failed")
            if number == 5:
                # The ingress restarted mid-way (clients wait while it is down).
                client.pause()
                ingress_service.stop()
                ingress_service.start()
                assert caddy.request("GET", "/config/") == caddy.build(ingress.routes())
                client.running.set()
    finally:
        client.stop()

    assert outcomes == [
        "v2", "unhealthy failed", "v1", "crash failed", "v2", "v1", "unhealthy failed", "v2", "crash failed", "v1",
    ]
    assert client.failures == []
    assert len(client.answers) > 200
    assert set(client.answers) == {"v1\n", "v2\n"}
    assert get(ingress_service, domain) == (200, "v1\n")
    assert containers(app) == [f"norn-{app}"]


def test_a_container_that_dies_right_after_its_start_is_caught_at_once(tmp_path, images, app, busybox_image,
                                                                      ingress_service):
    domain = f"{app}.example.test"
    deploy(ctx_for(tmp_path, app, images["v1"], [domain]))
    directory = tmp_path / "dies"
    (directory / "www").mkdir(parents=True)
    (directory / "www" / "healthz").write_text("ok\n")
    # It answers its health check for a moment, then exits 4.
    (directory / "Dockerfile").write_text(
        f"FROM {busybox_image}\nCOPY www/ /www/\n"
        'CMD httpd -p "$PORT" -h /www; sleep 0.15; echo "lost the database"; exit 4\n'
    )
    image = docker_build(directory, f"norn-test-dm-{secrets.token_hex(4)}:dies")
    try:
        ctx = ctx_for(tmp_path, app, image, [domain])
        with pytest.raises(StepFailed) as failed:
            deploy(ctx)
    finally:
        subprocess.run(["docker", "rmi", "--force", image], capture_output=True)
    message = str(failed.value)
    assert f"the new container norn-{app}-next exited with status 4" in message
    assert "lost the database" in message
    assert not any(line.startswith("Switching") for line in ctx.lines())
    assert get(ingress_service, domain) == (200, "v1\n")
