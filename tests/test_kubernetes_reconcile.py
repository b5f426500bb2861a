"""Every deploy makes the cluster match infraspec (issue 11, items 1 and 3): the Kubernetes
runtime server-side applies the whole Deployment, Service and Secret as field manager
"norn", against the fake API server, which keeps field ownership like a real one
(tests/support/fake_kube_apply.py). Fields someone else owns survive; a namespace change
moves the app once the new rollout succeeded; a rollback applies the earlier template."""

import os

import pytest
from kubernetes import client, config

from apps_registry.models import App
from deployments.models import Deployment
from deployments.outcomes import StepFailed
from deployments.runtimes import kubernetes as runtime
from tests.support.contexts import parse_spec, step_context
from tests.support.fake_kube_apply import from_fields_v1
from tests.support.fake_kube_controller import EXIT_AFTER_ENV
from tests.support.fake_kubernetes import FakeKubernetes
from tests.support.kube_target import stand_in_loader

pytestmark = pytest.mark.django_db

APP = "web"
IMAGES = ("registry.local/web:v1", "registry.local/web:v2", "registry.local/web:v3", "envoy:1.31", "old:1")


@pytest.fixture
def kube(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # The pods of a deploy pull its image: the ones these tests name are loaded into the cluster.
    with FakeKubernetes(progress_deadline_scale=0.002, time_scale=0.01) as fake:
        for image in IMAGES:
            fake.load_image(image)
        monkeypatch.setenv("KUBECONFIG", fake.write_kubeconfig(tmp_path / "kubeconfig"))
        yield fake
        assert not fake.internal_errors, fake.internal_errors


@pytest.fixture
def apps(kube):
    """Another client of the cluster: an autoscaler, someone with kubectl."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=os.environ["KUBECONFIG"], client_configuration=configuration)
    with client.ApiClient(configuration) as api:
        yield client.AppsV1Api(api)


@pytest.fixture
def app(tmp_path):
    return App.objects.create(name=APP, directory=str(tmp_path), status="ok")


def spec_text(replicas=2, port=8000, healthcheck="/healthz", env=None, namespace=None):
    text = f"app: {APP}\nrole: {'webserver' if port else 'worker'}\n"
    if replicas is not None:
        text += f"replicas: {replicas}\n"
    if port:
        text += f"port: {port}\n"
        if healthcheck:
            text += f"healthcheck: {healthcheck}\n"
    if namespace:
        text += f"namespace: {namespace}\n"
    if env:
        text += "env:\n" + "".join(f"  {k}: {v!r}\n" for k, v in env.items())
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
    [body] = [c for c in kube.get_object("deployments", APP, namespace)["spec"]["template"]["spec"]["containers"]
              if c["name"] == APP]
    return body


def env_of(kube, namespace="default"):
    return {e["name"]: e.get("value") for e in container(kube, namespace).get("env", [])}


def norn_owns(kube, *names):
    [entry] = [e for e in kube.get_object("deployments", APP)["metadata"]["managedFields"] if e["manager"] == "norn"]
    return tuple(names) in {tuple(key for _, key in path) for path in from_fields_v1(entry["fieldsV1"])}


def test_infraspec_changes_reach_the_cluster_on_the_next_deploy(kube, app, tmp_path):
    deploy(app, tmp_path, replicas=2, port=8000, healthcheck="/healthz", env={"FEATURE": "off"})

    _, ctx = deploy(app, tmp_path, image="registry.local/web:v2", replicas=5, port=9000, healthcheck="/ready",
                    env={"FEATURE": "on"})

    deployment = kube.get_object("deployments", APP)
    assert deployment["spec"]["replicas"] == 5
    body = container(kube)
    assert body["image"] == "registry.local/web:v2"
    assert [p["containerPort"] for p in body["ports"]] == [9000]  # 8000 is gone, not kept beside it
    assert body["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 9000, "scheme": "HTTP"}
    assert env_of(kube)["FEATURE"] == "on"
    assert env_of(kube)["PORT"] == "9000"
    service = kube.get_object("services", APP)
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(9000, 9000)]
    assert deployment["status"]["availableReplicas"] == 5
    assert any("Applied service" in line for line in ctx.lines())


def test_dropping_replicas_from_infraspec_leaves_an_autoscalers_value_alone(kube, app, apps, tmp_path):
    deploy(app, tmp_path, replicas=2)
    apps.patch_namespaced_deployment_scale(APP, "default", {"spec": {"replicas": 4}},
                                           field_manager="horizontal-pod-autoscaler")

    deploy(app, tmp_path, image="registry.local/web:v2", replicas=None)

    assert kube.get_object("deployments", APP)["spec"]["replicas"] == 4
    assert not norn_owns(kube, "spec", "replicas")
    # A replicas: in infraspec is the source of truth again (force), and Norn owns the field.
    deploy(app, tmp_path, image="registry.local/web:v3", replicas=3)
    assert kube.get_object("deployments", APP)["spec"]["replicas"] == 3
    assert norn_owns(kube, "spec", "replicas")


def test_a_new_app_without_replicas_starts_with_one_and_norn_does_not_own_the_field(kube, app, tmp_path):
    deploy(app, tmp_path, replicas=None)

    assert kube.get_object("deployments", APP)["spec"]["replicas"] == 1
    assert not norn_owns(kube, "spec", "replicas")


def test_a_sidecar_and_an_annotation_added_by_another_manager_survive_a_deploy(kube, app, apps, tmp_path):
    deploy(app, tmp_path, env={"FEATURE": "off"})
    apps.patch_namespaced_deployment(APP, "default", {
        "metadata": {"annotations": {"example.com/owner": "shop-team"}},
        "spec": {"template": {"spec": {"containers": [{"name": "proxy", "image": "envoy:1.31"}]}}},
    }, field_manager="kubectl-edit")

    deploy(app, tmp_path, image="registry.local/web:v2", env={"FEATURE": "on"})

    deployment = kube.get_object("deployments", APP)
    assert deployment["metadata"]["annotations"]["example.com/owner"] == "shop-team"
    containers = {c["name"]: c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert containers == {APP: "registry.local/web:v2", "proxy": "envoy:1.31"}
    assert env_of(kube)["FEATURE"] == "on"


def test_an_env_variable_removed_from_infraspec_is_removed_from_the_container(kube, app, tmp_path):
    deploy(app, tmp_path, env={"FEATURE": "off", "LEGACY": "1"})

    deploy(app, tmp_path, image="registry.local/web:v2", env={"FEATURE": "off"})

    assert "LEGACY" not in env_of(kube)
    assert env_of(kube)["FEATURE"] == "off"


def test_removing_the_port_deletes_the_service_and_the_probe(kube, app, tmp_path):
    deploy(app, tmp_path, port=8000)
    assert kube.get_object("services", APP) is not None

    _, ctx = deploy(app, tmp_path, image="registry.local/web:v2", port=None)

    assert kube.get_object("services", APP) is None
    body = container(kube)
    assert "ports" not in body and "readinessProbe" not in body
    assert "PORT" not in env_of(kube)
    assert 'Deleted service "web": infraspec declares neither port nor domains any more' in ctx.lines()


def test_a_service_someone_else_made_is_not_deleted_when_the_port_goes(kube, app, tmp_path):
    kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": APP},
                 "spec": {"selector": {"app": "other"}, "ports": [{"port": 80}]}})

    deploy(app, tmp_path, port=None)

    assert kube.get_object("services", APP)["spec"]["ports"][0]["port"] == 80


def test_a_namespace_change_moves_the_app_and_deletes_the_old_objects(kube, app, tmp_path):
    kube.create({"metadata": {"name": "shop"}}, plural="namespaces")
    deploy(app, tmp_path)
    assert kube.get_object("services", APP) is not None

    row, ctx = deploy(app, tmp_path, image="registry.local/web:v2", namespace="shop")

    assert container(kube, "shop")["image"] == "registry.local/web:v2"
    assert kube.get_object("services", APP, "shop") is not None
    assert kube.get_object("deployments", APP) is None and kube.get_object("services", APP) is None
    assert row.kube_applied["namespace"] == "shop"
    assert 'Moved from namespace "default": deleted deployment/web, service/web there' in ctx.lines()


def test_the_old_namespace_is_kept_when_the_new_rollout_fails(kube, app, tmp_path):
    kube.create({"metadata": {"name": "shop"}}, plural="namespaces")
    deploy(app, tmp_path)

    # An image nobody loaded: the new namespace's pods cannot pull it.
    with pytest.raises(StepFailed, match="ErrImagePull|ImagePullBackOff"):
        deploy(app, tmp_path, image="registry.local/web:never-loaded", namespace="shop")

    assert container(kube)["image"] == "registry.local/web:v1"  # still serving where it was
    assert kube.get_object("services", APP) is not None


def test_rollback_puts_back_the_earlier_template_not_only_the_image(kube, app, tmp_path):
    first, _ = deploy(app, tmp_path, replicas=2, port=8000, env={"FEATURE": "off"})
    deploy(app, tmp_path, image="registry.local/web:v2", replicas=4, port=9000, healthcheck="/ready",
           env={"FEATURE": "on", "NEW": "1"})

    # The rollback runs with the current infraspec, as the pipeline gives it.
    rollback, ctx = deploy(app, tmp_path, image=first.image, kind="rollback", rollback_to=first, replicas=4,
                           port=9000, healthcheck="/ready", env={"FEATURE": "on", "NEW": "1"})

    deployment = kube.get_object("deployments", APP)
    assert deployment["spec"]["replicas"] == 2
    body = container(kube)
    assert body["image"] == "registry.local/web:v1"
    assert env_of(kube)["FEATURE"] == "off" and "NEW" not in env_of(kube)
    assert [p["containerPort"] for p in body["ports"]] == [8000]
    assert body["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert [p["port"] for p in kube.get_object("services", APP)["spec"]["ports"]] == [8000]
    # Marked as the rollback's doing, so status() names the deployment in service.
    assert deployment["metadata"]["annotations"]["norn.dev/deployment"] == str(rollback.public_id)
    assert env_of(kube)["NORN_DEPLOYMENT"] == str(rollback.public_id)
    assert rollback.kube_applied["deployment"]["spec"]["replicas"] == 2
    assert any(line.startswith("Rolling back to the Deployment, Service and Ingress applied by deployment "
                               f"{first.public_id}") for line in ctx.lines())


def test_the_recorded_manifest_holds_no_password(kube, app, tmp_path, settings):
    from deployments import appdb

    settings.NORN_KUBE_APP_DATABASES_HOST = "postgres.databases.svc.cluster.local"
    row = Deployment.objects.create(app=app, image="registry.local/web:v1", runtime="kubernetes")
    ctx = step_context(parse_spec(spec_text() + "services:\n  postgres:\n    database: web_db\n"),
                       workdir=tmp_path, app_dir=tmp_path, image=row.image, deployment_id=row.pk,
                       public_id=str(row.public_id), runtime="kubernetes")
    runtime.deploy(ctx)
    row.refresh_from_db()

    assert appdb.password(APP) not in str(row.kube_applied)
    assert kube.get_object("secrets", "web-norn-env")["metadata"]["managedFields"][0]["manager"] == "norn"


def test_a_deployment_someone_else_made_keeps_its_selector_and_stays_theirs(kube, app, tmp_path):
    labels = {"app": "legacy"}
    kube.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": APP, "labels": labels},
                 "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                     "metadata": {"labels": labels}, "spec": {"containers": [{"name": APP, "image": "old:1"}]}}}})

    row, _ = deploy(app, tmp_path, image="registry.local/web:v2")

    deployment = kube.get_object("deployments", APP)
    assert deployment["spec"]["selector"] == {"matchLabels": labels}  # immutable: not Norn's to change
    assert container(kube)["image"] == "registry.local/web:v2"
    assert "app.kubernetes.io/managed-by" not in deployment["metadata"]["labels"]
    assert "selector" not in row.kube_applied["deployment"]["spec"]


# --- through the whole pipeline: an automatic rollback after a failed rollout ---------------


@pytest.fixture
def minikube_cluster(tmp_path, settings, monkeypatch):
    """The fake cluster behind a "minikube" context and a `minikube` on PATH that records
    its arguments (the build step loads images with it; no VM can run here)."""
    settings.NORN_RUNTIME = "kubernetes"
    settings.NORN_REGISTRY_URL = ""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with FakeKubernetes(progress_deadline_scale=0.002, time_scale=0.01) as fake:
        stand_in_loader(fake, bin_dir)  # the images the build step loads are what the pods can pull
        monkeypatch.setenv("KUBECONFIG", str(fake.write_kubeconfig(tmp_path / "kubeconfig", context="minikube")))
        yield fake
        assert not fake.internal_errors, fake.internal_errors


PIPELINE_SPEC = ("app: kweb\nrole: webserver\nrepo:\n  url: {url}\nbuild: {{}}\nport: 8000\nreplicas: {replicas}\n"
                 "env:\n  FEATURE: '{feature}'\n{more_env}")


@pytest.mark.django_db(transaction=True)
def test_an_automatic_rollback_restores_the_earlier_template_through_the_pipeline(
        minikube_cluster, make_app, deploy_now, busybox_image, tmp_path):
    from deployments import deferred, pipeline
    from tests.support.git_servers import make_repo

    kube = minikube_cluster
    dockerfile = 'FROM norn-busybox:1\nCMD ["sh", "-c", "sleep 3600"]\n'
    repo = make_repo(tmp_path / "repos", "kweb", {"Dockerfile": dockerfile})
    make_app("kweb", PIPELINE_SPEC.format(url=repo.file_url, replicas=2, feature="off", more_env=""))
    first = deploy_now("kweb")
    assert first.status == "deployed", first.error

    # The second release's container exits as it starts (the fake's kubelet reads FAKE_KUBE_EXIT_AFTER).
    make_app("kweb", PIPELINE_SPEC.format(url=repo.file_url, replicas=3, feature="on",
                                          more_env=f"  {EXIT_AFTER_ENV}: '0'\n"))
    repo.commit({"README": "two\n"}, "two")
    failed = deploy_now("kweb")
    assert failed.status == "failed" and "rolling back automatically" in failed.error, failed.error
    assert "CrashLoopBackOff" in failed.error
    stored = kube.get_object("deployments", "kweb")
    assert stored["spec"]["replicas"] == 3  # the failed deploy's template reached the cluster

    rollback = Deployment.objects.get(app__name="kweb", kind="rollback")
    pipeline.execute(rollback.pk)
    deferred.wait()
    rollback.refresh_from_db()

    assert rollback.status == "deployed", rollback.error
    stored = kube.get_object("deployments", "kweb")
    [body] = stored["spec"]["template"]["spec"]["containers"]
    assert (stored["spec"]["replicas"], body["image"]) == (2, first.image)
    assert {e["name"]: e.get("value") for e in body["env"]}["FEATURE"] == "off"
    assert stored["metadata"]["annotations"]["norn.dev/deployment"] == str(rollback.public_id)


def test_the_secret_goes_once_the_app_no_longer_needs_it_and_not_before(kube, app, tmp_path, settings):
    settings.NORN_KUBE_APP_DATABASES_HOST = "postgres.databases.svc.cluster.local"
    with_db = spec_text() + "services:\n  postgres:\n    database: web_db\n"
    row = Deployment.objects.create(app=app, image="registry.local/web:v1", runtime="kubernetes")
    ctx = step_context(parse_spec(with_db), workdir=tmp_path, app_dir=tmp_path, image=row.image,
                       deployment_id=row.pk, public_id=str(row.public_id), runtime="kubernetes")
    runtime.deploy(ctx)
    refs = [e for e in container(kube).get("env", []) if "valueFrom" in e]
    assert refs and all(e["valueFrom"]["secretKeyRef"]["name"] == "web-norn-env" for e in refs)

    # A rollout that fails keeps the Secret: the old pods still take their values from it.
    with pytest.raises(StepFailed):
        deploy(app, tmp_path, image="registry.local/never-pushed:v1")
    assert kube.get_object("secrets", "web-norn-env") is not None

    _, ctx = deploy(app, tmp_path)  # services.postgres gone from infraspec
    assert not [e for e in container(kube).get("env", []) if "valueFrom" in e]
    assert kube.get_object("secrets", "web-norn-env") is None
    assert 'Deleted secret "web-norn-env": no value of the environment needs it any more' in ctx.lines()


def test_a_secret_someone_else_made_under_that_name_is_kept(kube, app, tmp_path):
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-norn-env"}, "type": "Opaque"},
                plural="secrets")
    deploy(app, tmp_path)
    assert kube.get_object("secrets", "web-norn-env") is not None
