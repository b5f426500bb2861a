"""The Docker runtime's switch through the whole pipeline (a worker's
pipeline.execute, the real engine and the real ingress): a webserver
deployment is deployed once its new container serves every new request,
while the old one still answers the request it had; the worker retires the
old one after the deployment's end, before it returns.
(tests/test_docker_runtime.py has the runtime on its own.)"""

import secrets
import socket
import threading
import urllib.request

import pytest

from deployments import deferred, ingress, pipeline
from deployments.models import Deployment
from deployments.requests import request_deployment
from deployments.runtimes import docker as runtime
from tests.support.cluster import execute_in_thread, wait_for
from tests.support.docker_images import docker

pytestmark = pytest.mark.django_db(transaction=True)

# /cgi-bin/hold answers only once /www/release exists in its container (at
# most 60 s), naming the container that answered.
HOLD = (
    "#!/bin/sh\n"
    "i=0\n"
    "while [ ! -e /www/release ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done\n"
    'printf "Content-Type: text/plain\\r\\n\\r\\nheld by %s\\n" "$HOSTNAME"\n'
)
DOCKERFILE = (
    "FROM norn-busybox:1\nCOPY www/ /www/\nRUN chmod +x /www/cgi-bin/hold\n"
    'CMD trap "exit 0" TERM; httpd -f -p "$PORT" -h /www & wait\n'
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(port, path="/index.html", timeout=5):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
        return response.read().decode()


def inspect(container, template):
    return docker(["inspect", "--type", "container", "--format", template, container]).stdout.strip()


def exists(container):
    return docker(["inspect", "--type", "container", container], check=False).returncode == 0


def test_deployed_before_the_old_container_stops_which_finishes_its_request(make_app, norn_dirs, busybox_image):
    app = f"rt-{secrets.token_hex(4)}"
    port = free_port()
    spec = f"app: {app}\nrole: webserver\nbuild:\n  dockerfile: Dockerfile\nport: {port}\nhealthcheck: /healthz\n"
    make_app(app, spec, {
        "Dockerfile": DOCKERFILE, "www/index.html": "hello\n", "www/healthz": "ok\n", "www/cgi-bin/hold": HOLD,
    })
    try:
        first = request_deployment(app)
        pipeline.execute(first.pk)
        deferred.wait()
        first.refresh_from_db()
        assert first.status == "deployed", first.error
        old_id = inspect(f"norn-{app}", "{{.Id}}")
        old_backend = runtime.status(app)["backend_port"]

        answer = []
        client = threading.Thread(target=lambda: answer.append(fetch(port, "/cgi-bin/hold", timeout=90)))
        client.start()
        wait_for(lambda: ingress.in_flight(old_backend), timeout=10, message="the request to reach the old container")

        second = request_deployment(app)
        worker = execute_in_thread(second.pk)
        wait_for(lambda: Deployment.objects.get(pk=second.pk).finished_at, timeout=120, message="the deployment's end")

        # Deployed, while the old container still runs and holds its request.
        second.refresh_from_db()
        assert second.status == "deployed", second.error
        assert runtime.status(app)["deployment"] == str(second.public_id)
        assert inspect(f"norn-{app}.retiring", "{{.Id}} {{.State.Running}}") == f"{old_id} true"
        assert ingress.in_flight(old_backend) == 1 and client.is_alive()
        assert fetch(port) == "hello\n"  # from the new one

        docker(["exec", f"norn-{app}.retiring", "touch", "/www/release"])
        worker.join(timeout=60)
        assert not worker.is_alive()
        client.join(timeout=10)

        # The old container answered its request after the switch, and was
        # removed only then, by the worker, after the deployment's end.
        assert answer == [f"held by {old_id[:12]}\n"]
        assert not exists(old_id)
        output = second.steps.get(name="deploy").output
        assert f"Waiting up to 10 s for 1 request(s) in flight to norn-{app}.retiring to finish" in output
        assert f"Stopped and removed the previous container norn-{app}.retiring in " in output
        second.refresh_from_db()
        assert second.status == "deployed"
        assert ingress.route(app).draining == ()
    finally:
        runtime.remove(app)
