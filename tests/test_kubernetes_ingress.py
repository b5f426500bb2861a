"""infraspec `domains` on the Kubernetes runtime: the Ingress `<app>` (a rule per name to the
Service `<app>`, TLS from the Secret `<app>-tls` unless `https: off`), server-side applied with
the Deployment and Service, deleted when the domains go, recorded for rollbacks, removed by
undeploy; a webserver with domains and no port listens on 8080.

Against the fake API server, or with NORN_TEST_KUBECONFIG a real cluster (no Ingress
controller is needed: the tests read what the apiserver stored), and read back with kubectl."""

import json
import os
import shutil
import subprocess

import pytest

from apps_registry.models import App
from deployments.models import Deployment
from deployments.runtimes import kubemanifests
from deployments.runtimes import kubernetes as runtime
from tests.support import kube_target
from tests.support.contexts import parse_spec, step_context

pytestmark = pytest.mark.django_db

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
APP = "web"
IMAGES = ("registry.local/web:v1", "registry.local/web:v2", "registry.local/web:v3")
DOMAINS = ("shop.example.com", "www.shop.example.com")


@pytest.fixture
def kube(kube_cluster):
    for image in IMAGES:
        kube_target.make_available(kube_cluster, image)
    return kube_cluster


@pytest.fixture
def app(tmp_path):
    return App.objects.create(name=APP, directory=str(tmp_path), status="ok")


@pytest.fixture
def kubectl(kube, tmp_path):
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def run(*args):
        return subprocess.run([KUBECTL, f"--kubeconfig={os.environ['KUBECONFIG']}",
                               f"--cache-dir={tmp_path / 'kube-cache'}", *args],
                              capture_output=True, text=True, timeout=60, env=env)

    return run


def spec_text(domains=DOMAINS, https=None, port=8000, healthcheck="/healthz", namespace=None):
    text = f"app: {APP}\nrole: webserver\nreplicas: 1\n"
    if port:
        text += f"port: {port}\n"
    if domains:
        text += f"domains: [{', '.join(domains)}]\n"
    if https:
        text += f"https: {https}\n"
    if healthcheck and (port or domains):
        text += f"healthcheck: {healthcheck}\n"
    if namespace:
        text += f"namespace: {namespace}\n"
    return text


def deploy(app, tmp_path, image="registry.local/web:v1", kind="deploy", rollback_to=None, **spec):
    """Run the runtime's deploy for a new Deployment row of `app`; returns (row, ctx)."""
    row = Deployment.objects.create(app=app, image=image, kind=kind, rollback_to=rollback_to, runtime="kubernetes")
    ctx = step_context(parse_spec(spec_text(**spec)), workdir=tmp_path, app_dir=tmp_path, image=image,
                       deployment_id=row.pk, public_id=str(row.public_id), runtime="kubernetes",
                       commit_sha="0123456789abcdef0123456789abcdef01234567")
    ctx.kind = kind
    runtime.deploy(ctx)
    row.refresh_from_db()
    return row, ctx


def container(kube, namespace="default"):
    deployment = kube.get_object("deployments", APP, namespace)
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == APP)


def env_of(kube):
    return {e["name"]: e.get("value") for e in container(kube).get("env") or []}


def paths(ingress):
    return [(rule["host"], path["path"], path["pathType"], path["backend"]["service"]["name"],
             path["backend"]["service"]["port"]["number"])
            for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]


def test_an_app_with_two_domains_gets_an_ingress_with_both_hosts_and_tls(kube, app, tmp_path):
    row, ctx = deploy(app, tmp_path)

    ingress = kube.get_object("ingresses", APP)
    assert paths(ingress) == [("shop.example.com", "/", "Prefix", APP, 8000),
                              ("www.shop.example.com", "/", "Prefix", APP, 8000)]
    assert ingress["spec"]["tls"] == [{"hosts": list(DOMAINS), "secretName": "web-tls"}]
    assert "ingressClassName" not in ingress["spec"]  # the cluster's default class
    meta = ingress["metadata"]
    assert meta["labels"] == {"app.kubernetes.io/name": APP, "app.kubernetes.io/managed-by": "norn"}
    assert meta["annotations"] == {"nginx.ingress.kubernetes.io/ssl-redirect": "true"}
    assert [entry["manager"] for entry in meta["managedFields"]] == ["norn"]
    assert [p["port"] for p in kube.get_object("services", APP)["spec"]["ports"]] == [8000]
    assert row.kube_applied["ingress"]["spec"]["rules"][0]["host"] == "shop.example.com"
    assert 'Applied ingress "web" for shop.example.com, www.shop.example.com (TLS from secret "web-tls")' in \
        ctx.lines()


@pytest.mark.parametrize("https, redirect", [("off", "false"), ("both", "false"), ("redirect", "true")])
def test_https_says_whether_there_is_tls_and_a_redirect(kube, app, tmp_path, https, redirect):
    deploy(app, tmp_path, https=https)

    ingress = kube.get_object("ingresses", APP)
    assert ("tls" in ingress["spec"]) == (https != "off")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-redirect"] == redirect


def test_https_off_after_redirect_takes_the_tls_away(kube, app, tmp_path):
    deploy(app, tmp_path)
    _, ctx = deploy(app, tmp_path, image="registry.local/web:v2", https="off")

    ingress = kube.get_object("ingresses", APP)
    assert "tls" not in ingress["spec"]
    assert 'Applied ingress "web" for shop.example.com, www.shop.example.com (plain HTTP only)' in ctx.lines()


def test_the_ingress_class_and_the_cert_manager_issuer_are_settings(kube, app, tmp_path, settings):
    settings.NORN_KUBE_INGRESS_CLASS = "nginx"
    settings.NORN_KUBE_TLS_ISSUER = "letsencrypt-prod"
    deploy(app, tmp_path)

    ingress = kube.get_object("ingresses", APP)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"

    # Without TLS there is nothing to issue.
    deploy(app, tmp_path, image="registry.local/web:v2", https="off")
    assert "cert-manager.io/cluster-issuer" not in kube.get_object("ingresses", APP)["metadata"]["annotations"]


def test_removing_the_domains_deletes_the_ingress_and_keeps_the_service(kube, app, tmp_path):
    deploy(app, tmp_path)

    _, ctx = deploy(app, tmp_path, image="registry.local/web:v2", domains=())

    assert kube.get_object("ingresses", APP) is None
    assert kube.get_object("services", APP) is not None
    assert 'Deleted ingress "web": infraspec declares no domains any more' in ctx.lines()


def test_an_ingress_someone_else_made_is_not_deleted_when_the_domains_go(kube, app, tmp_path):
    kube.create({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": APP},
                 "spec": {"rules": [{"host": "theirs.example.com", "http": {"paths": [{
                     "path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": "other", "port": {"number": 80}}}}]}}]}})

    deploy(app, tmp_path, domains=())

    assert paths(kube.get_object("ingresses", APP)) == [("theirs.example.com", "/", "Prefix", "other", 80)]


def test_a_domains_only_webserver_listens_on_8080_behind_a_service(kube, app, tmp_path):
    row, _ = deploy(app, tmp_path, port=None)

    body = container(kube)
    assert body["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert body["readinessProbe"]["httpGet"]["port"] == 8080
    assert env_of(kube)["PORT"] == "8080"
    service = kube.get_object("services", APP)
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(8080, 8080)]
    assert paths(kube.get_object("ingresses", APP))[0][-1] == 8080
    assert kubemanifests.container_port(parse_spec(spec_text(port=None))) == kubemanifests.DOMAINS_PORT == 8080
    assert row.kube_applied["service"]["spec"]["ports"][0]["port"] == 8080


def test_a_port_and_domains_use_the_port(kube, app, tmp_path):
    deploy(app, tmp_path, port=9000, healthcheck=None)

    assert env_of(kube)["PORT"] == "9000"
    assert paths(kube.get_object("ingresses", APP))[0][-1] == 9000


def test_rollback_puts_back_the_ingress_its_target_applied(kube, app, tmp_path):
    first, _ = deploy(app, tmp_path, domains=("old.example.com",))
    plain, _ = deploy(app, tmp_path, image="registry.local/web:v2", domains=())
    assert kube.get_object("ingresses", APP) is None
    deploy(app, tmp_path, image="registry.local/web:v3", domains=DOMAINS)

    # The rollback runs with the current infraspec, as the pipeline gives it.
    deploy(app, tmp_path, image=first.image, kind="rollback", rollback_to=first, domains=DOMAINS)
    assert [rule["host"] for rule in kube.get_object("ingresses", APP)["spec"]["rules"]] == ["old.example.com"]

    deploy(app, tmp_path, image=plain.image, kind="rollback", rollback_to=plain, domains=DOMAINS)
    assert kube.get_object("ingresses", APP) is None


def test_a_rollback_to_a_record_from_before_ingresses_deletes_norns_ingress(kube, app, tmp_path):
    first, _ = deploy(app, tmp_path, domains=())
    Deployment.objects.filter(pk=first.pk).update(kube_applied={
        k: v for k, v in first.kube_applied.items() if k != "ingress"})
    deploy(app, tmp_path, image="registry.local/web:v2")
    assert kube.get_object("ingresses", APP) is not None

    deploy(app, tmp_path, image=first.image, kind="rollback", rollback_to=first)

    assert kube.get_object("ingresses", APP) is None


def test_undeploy_and_a_namespace_move_delete_the_ingress(kube, app, tmp_path):
    kube.create({"metadata": {"name": "shop"}}, plural="namespaces")
    deploy(app, tmp_path)

    _, ctx = deploy(app, tmp_path, image="registry.local/web:v2", namespace="shop")

    assert kube.get_object("ingresses", APP) is None
    assert kube.get_object("ingresses", APP, "shop") is not None
    assert 'Moved from namespace "default": deleted deployment/web, ingress/web, service/web there' in ctx.lines()
    assert runtime.remove(APP, "shop") == ["deployment/web", "ingress/web", "service/web"]
    assert kube.get_object("ingresses", APP, "shop") is None


@needs_kubectl
def test_kubectl_reads_the_ingress(kube, app, tmp_path, kubectl):
    deploy(app, tmp_path)

    table = kubectl("get", "ingress", APP)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert row.split()[:3] == [APP, "<none>", "shop.example.com,www.shop.example.com"]
    assert "80, 443" in row

    backend = kubectl("get", "ingress", APP, "-o", "jsonpath={.spec.rules[1].http.paths[0].backend}")
    assert json.loads(backend.stdout) == {"service": {"name": APP, "port": {"number": 8000}}}


@pytest.mark.parametrize("name", ["NORN_KUBE_INGRESS_CLASS", "NORN_KUBE_TLS_ISSUER"])
def test_a_class_or_issuer_that_is_not_an_object_name_stops_norn(name):
    from tests.test_settings import run_manage

    result = run_manage("check", **{name: "Lets Encrypt"})
    assert result.returncode == 2
    assert f"Norn is misconfigured: {name}='Lets Encrypt' is not a Kubernetes object name" in result.stderr
