"""`manage.py app_status` and `manage.py undeploy`: what the runtime reports about
an app, and taking it out of service. Against the real Docker engine and the fake
Kubernetes API server (tests/support/fake_kubernetes.py)."""

import io
import json
import secrets
import socket
import urllib.request

import pytest
from django.core.management import CommandError, call_command
from django_q.models import Schedule

from apps_registry import infraspec
from apps_registry.models import App
from deployments import ingress, scheduler, transitions
from deployments.runtimes import docker as docker_runtime
from deployments.runtimes import kubernetes as kubernetes_runtime
from tests.support.contexts import step_context
from tests.support.docker_images import docker, docker_build
from tests.support.fake_kubernetes import FakeKubernetes
from tests.support.networks import remove_app_network

pytestmark = pytest.mark.django_db

SERVE = 'CMD trap "exit 0" TERM; httpd -f -p "$PORT" -h /www & wait\n'


@pytest.fixture(scope="module")
def web_image(busybox_image, tmp_path_factory):
    directory = tmp_path_factory.mktemp("web")
    (directory / "www").mkdir()
    (directory / "www" / "index.html").write_text("hello\n")
    (directory / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY www/ /www/\n{SERVE}")
    tag = docker_build(directory, f"norn-test-cmd-{secrets.token_hex(4)}:1")
    yield tag
    docker(["rmi", "--force", tag], check=False)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_app(name, text, tmp_path):
    result = infraspec.parse(text, "infraspec.yaml", name)
    assert result.ok, [str(e) for e in result.errors]
    app = App.objects.create(
        name=name, directory=str(tmp_path), status=App.Status.VALID, role=result.spec.role, spec=result.data
    )
    return app, result.spec


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def web_app(tmp_path, settings, web_image):
    """A webserver deployed to the local Docker engine behind the ingress: (name, port, ctx)."""
    settings.NORN_RUNTIME = "docker"
    name = f"cmd-{secrets.token_hex(4)}"
    port = free_port()
    _, spec = make_app(name, f"app: {name}\nrole: webserver\nport: {port}\n", tmp_path)
    ctx = step_context(spec, workdir=tmp_path, app_dir=tmp_path, image=web_image, timeout=30)
    docker_runtime.deploy(ctx)
    yield name, port, ctx
    remove_app_network(name)  # its containers, then its network norn-<app>


def test_app_status_reports_the_running_container_image_and_port(web_app, web_image):
    name, port, ctx = web_app
    text = run("app_status", name)
    lines = text.splitlines()
    assert lines[0] == f"{name}: running (container norn-{name} on the local Docker engine)"
    assert lines[1].startswith(f"  image: {web_image} (sha256:")
    assert f"  deployment: {ctx.public_id}" in lines
    assert any(line.startswith("  running since ") and line.endswith(", 0 restart(s)") for line in lines)
    backend = ingress.route(name).backend
    assert f"  port: {port} (the ingress) -> 127.0.0.1:{backend}" in lines

    report = json.loads(run("app_status", name, "--json"))
    assert (report["app"], report["runtime"], report["cron"]) == (name, "docker", None)
    assert report["status"] == docker_runtime.status(name)
    assert (report["status"]["running"], report["status"]["port"]) == (True, port)


def test_app_status_of_an_app_that_is_not_deployed(tmp_path, settings):
    settings.NORN_RUNTIME = "docker"
    make_app("idle", "app: idle\nrole: worker\n", tmp_path)
    assert run("app_status", "idle") == "idle: nothing of it runs on docker\n"
    assert json.loads(run("app_status", "idle", "--json"))["status"] is None


def test_app_status_of_an_unknown_app_names_the_known_ones(tmp_path):
    make_app("known", "app: known\nrole: worker\n", tmp_path)
    with pytest.raises(CommandError, match=r"unknown app 'nope'; known apps: known"):
        run("app_status", "nope")


def test_undeploy_without_yes_asks_and_a_no_changes_nothing(web_app, monkeypatch):
    name, port, _ = web_app
    questions = []
    monkeypatch.setattr("builtins.input", lambda q: questions.append(q) or "n")
    with pytest.raises(CommandError, match="Nothing was changed"):
        run("undeploy", name)
    assert questions and "removes it from the local Docker engine" in questions[0]
    assert docker_runtime.status(name)["running"]
    assert ingress.route(name) is not None


def test_undeploy_removes_the_container_the_route_and_the_schedule(web_app, monkeypatch):
    name, port, _ = web_app
    Schedule.objects.create(name=scheduler.schedule_name(name), func=scheduler.SCHEDULE_FUNC,
                            schedule_type=Schedule.CRON, cron="* * * * *")
    monkeypatch.setattr("builtins.input", lambda q: "yes")
    text = run("undeploy", name)
    assert text == f"Removed norn-{name}, cron schedule norn-cron:{name}.\n"
    assert docker_runtime.status(name) is None
    assert ingress.route(name) is None
    assert not Schedule.objects.filter(name=scheduler.schedule_name(name)).exists()
    # The ingress closed the public port once the route was gone.
    with pytest.raises(OSError):
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"http://127.0.0.1:{port}/", timeout=5)
    # Again: nothing left to remove, and it says so.
    assert run("undeploy", name, "--yes") == f"Nothing of {name} was running on the local Docker engine.\n"


def test_undeploy_is_refused_while_a_deployment_of_the_app_runs(web_app):
    name, _, _ = web_app
    app = App.objects.get(name=name)
    deployment = transitions.create(app, "HEAD", via="cli", runtime="docker")
    assert transitions.claim(deployment.pk, "host:1:x")
    with pytest.raises(CommandError, match=rf"deployment {deployment.short_id} of {name} is running"):
        run("undeploy", name, "--yes")
    assert docker_runtime.status(name)["running"]


# --- Kubernetes ----------------------------------------------------------------------


@pytest.fixture
def kube(tmp_path, monkeypatch, settings):
    settings.NORN_RUNTIME = "kubernetes"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeKubernetes(progress_deadline_scale=0.002, time_scale=0.01) as fake:
        fake.load_image("registry.local/kweb:v1")  # what kube_app deploys: its pods pull it
        monkeypatch.setenv("KUBECONFIG", fake.write_kubeconfig(tmp_path / "kubeconfig"))
        yield fake
        assert not fake.internal_errors, fake.internal_errors


def kube_app(tmp_path, namespace="default"):
    text = f"app: kweb\nrole: webserver\nport: 8000\nreplicas: 2\nnamespace: {namespace}\n"
    _, spec = make_app("kweb", text, tmp_path)
    ctx = step_context(spec, workdir=tmp_path, app_dir=tmp_path, image="registry.local/kweb:v1", timeout=30)
    kubernetes_runtime.deploy(ctx)
    return ctx


def test_app_status_on_kubernetes_reports_replicas_and_rollout(kube, tmp_path):
    ctx = kube_app(tmp_path)
    lines = run("app_status", "kweb").splitlines()
    assert lines == [
        "kweb: complete (deployment default/kweb on Kubernetes)",
        "  image: registry.local/kweb:v1",
        f"  deployment: {ctx.public_id}",
        "  replicas: 2 wanted, 2 updated, 2 ready, 2 available",
        '  deployment "kweb" successfully rolled out',
    ]
    report = json.loads(run("app_status", "kweb", "--json"))
    assert report["runtime"] == "kubernetes"
    assert report["status"] == kubernetes_runtime.status("kweb")


def test_undeploy_on_kubernetes_removes_what_norn_created_in_the_app_namespace(kube, tmp_path):
    kube.create({"metadata": {"name": "shop"}}, plural="namespaces")
    kube_app(tmp_path, namespace="shop")
    assert run("undeploy", "kweb", "--yes") == "Removed deployment/kweb, service/kweb.\n"
    assert kubernetes_runtime.status("kweb", "shop") is None
    assert "nothing of it runs on kubernetes" in run("app_status", "kweb")


def test_app_status_says_when_the_cluster_cannot_be_asked(tmp_path, settings, monkeypatch):
    settings.NORN_RUNTIME = "kubernetes"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    make_app("kweb", "app: kweb\nrole: webserver\nport: 8000\n", tmp_path)
    with pytest.raises(CommandError, match="cannot ask the kubernetes runtime about kweb: no Kubernetes configuration found"):
        run("app_status", "kweb")
