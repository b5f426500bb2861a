"""What infraspec lets through must be accepted by Kubernetes: app names (every object Norn
derives from them), resources (Kubernetes quantities, limit >= request) and the security
overrides; the pods Norn makes carry them; and pods get a database host they can reach,
never a loopback one. The Jobs run on the fake API server's kubelet (real Docker)."""

import re
import uuid

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from apps_registry import fieldchecks, infraspec
from apps_registry.spec import Spec
from deployments import appdb, appenv
from deployments.outcomes import StepFailed
from deployments.runtimes import kubejobs, kubemanifests
from tests.support.contexts import parse_spec, step_context
from tests.support.fake_kubernetes import FakeKubernetes
from tests.test_settings import run_manage

FILE = "apps/web/infraspec.yaml"
WEB = "app: web\nrole: webserver\nport: 8000\n"

# The apiserver's own rules (k8s.io/apimachinery/pkg/util/validation).
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def errors_of(text, directory="web"):
    result = infraspec.parse(text, FILE, directory)
    assert not result.ok, "expected validation errors"
    return [str(error) for error in result.errors]


def only_error(text, directory="web"):
    errors = errors_of(text, directory)
    assert len(errors) == 1, errors
    return errors[0]


def parsed(text, directory="web"):
    result = infraspec.parse(text, FILE, directory)
    assert result.ok, [str(e) for e in result.errors]
    return result


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["9web", "web-", "0", "-web", "web--"])
def test_names_kubernetes_refuses_are_refused_at_their_line(name):
    error = only_error(f"role: worker\napp: {name!r}\n", directory=None)
    assert error.startswith(f"{FILE}:2: app: {name!r} is not a valid app name")
    assert "starting with a letter and ending with a letter or digit" in error
    assert "Service" in error


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.from_regex(fieldchecks.APP_NAME_RE, fullmatch=True).filter(lambda n: len(n) <= fieldchecks.MAX_APP_NAME))
def test_every_object_derived_from_a_valid_name_is_one_kubernetes_accepts(name):
    assert infraspec.parse(f"app: '{name}'\nrole: worker\n", FILE).ok
    # The Service and the container: RFC 1035 / DNS-1123 labels; the labels' values.
    assert DNS1035_LABEL.match(name) and len(name) <= 63
    assert DNS1123_LABEL.match(name) and LABEL_VALUE.match(name)
    # The Deployment (and its ReplicaSets' <name>-<hash>) and the Secret: DNS-1123 subdomains.
    assert DNS1123_SUBDOMAIN.match(kubemanifests.secret_name(name)) and len(kubemanifests.secret_name(name)) <= 253
    # A Job's name is also its pods' job-name label value: a label of at most 63.
    job = kubemanifests.job_name(name, "migrate", str(uuid.uuid4()))
    assert DNS1123_LABEL.match(job) and len(job) <= 63 and LABEL_VALUE.match(job)


def test_the_longest_name_still_fits_every_derived_name():
    name = "a" + "-b" * 31  # 63 characters, ending in a letter
    assert parsed(f"app: {name}\nrole: worker\n", directory=name).spec.app == name
    job = kubemanifests.job_name(name, "migrate", "0123abcd-0000-0000-0000-000000000000")
    assert len(job) <= 63 and DNS1123_LABEL.match(job) and job.endswith("-migrate-0123abcd")


def test_namespaces_are_dns_labels():
    assert parsed(WEB + "namespace: 9-prod\n").spec.namespace == "9-prod"  # namespaces may start with a digit
    for bad in ("prod-", "Prod", "a" * 64, "a.b"):
        error = only_error(WEB + f"namespace: {bad!r}\n")
        assert f"{FILE}:4: namespace: {bad!r} is not a valid Kubernetes namespace" in error


@pytest.mark.parametrize("name", ["MY-VAR", "my.var", "1ABC", "A B", "ÄB"])
def test_env_names_are_ones_every_runtime_takes(name):
    error = only_error(WEB + f"env:\n  {name!r}: x\n")
    assert f"{FILE}:5: env.{name}: {name!r} is not a valid environment variable name" in error


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.from_regex(fieldchecks.ENV_NAME_RE, fullmatch=True).filter(lambda n: len(n) <= fieldchecks.MAX_ENV_NAME))
def test_every_accepted_env_name_is_one_kubernetes_accepts(name):
    # Kubernetes' rule for env names, and for the Secret's keys the password values go to.
    assert ENV_NAME.match(name) and len(name) <= 255


# --- resources -----------------------------------------------------------------------


def test_resources_are_normalized_kubernetes_quantities():
    result = parsed(WEB + "resources:\n  requests: {cpu: 0.25, memory: 256Mi}\n  limits: {cpu: 1, memory: 1Gi}\n")
    assert result.data["resources"] == {"requests": {"cpu": "0.25", "memory": "256Mi"},
                                        "limits": {"cpu": "1", "memory": "1Gi"}}
    spec = result.spec
    assert spec.resources.requests.cpu == "0.25" and spec.resources.limits.memory == "1Gi"
    assert Spec.from_dict(result.data).to_dict() == result.data  # what App.spec stores reads back the same
    assert Spec.from_dict({"app": "web", "role": "worker"}).resources == Spec.from_dict(parsed(WEB).data).resources
    # Only what is given: a limit alone is fine (Kubernetes then requests as much).
    only_limit = parsed(WEB + "resources: {limits: {memory: 500M}}\n")
    assert only_limit.data["resources"] == {"requests": {}, "limits": {"memory": "500M"}}
    assert parsed(WEB).data["resources"] is None


@pytest.mark.parametrize("field, value, expected", [
    ("requests.cpu", "lots", "'lots' is not a Kubernetes quantity; use a number with an optional suffix"),
    ("requests.cpu", "250 m", "is not a Kubernetes quantity"),
    ("requests.cpu", "-1", "is not a Kubernetes quantity"),
    ("limits.cpu", "1e999", "is not a Kubernetes quantity"),
    ("requests.memory", "1GB", "is not a Kubernetes quantity"),
    ("requests.cpu", "0", "is not more than zero"),
    ("requests.cpu", "0.0005", "is finer than 1m"),
    ("requests.cpu", "100Ei", "is larger than Kubernetes can hold"),
    ("requests.memory", "256m", "is not a whole number of bytes ('m' means thousandths; for mebibytes write Mi)"),
    ("limits.memory", "1Mi", "is less than 6Mi"),
    ("limits.memory", "true", "True is not a string or a whole number or a number"),
])
def test_bad_quantities_name_the_field_the_value_and_what_is_valid(field, value, expected):
    kind, name = field.split(".")
    error = only_error(WEB + f"resources:\n  {kind}:\n    {name}: {value}\n")
    assert error.startswith(f"{FILE}:6: resources.{field}: ")
    assert expected in error


def test_a_limit_below_its_request_is_refused():
    errors = errors_of(WEB + "resources:\n  requests: {cpu: '2', memory: 1Gi}\n  limits: {cpu: 1500m, memory: 1G}\n")
    assert errors == [
        f"{FILE}:6: resources.limits.cpu: '1500m' is less than the request '2'; a limit must be at least its request",
        f"{FILE}:6: resources.limits.memory: '1G' is less than the request '1Gi'; a limit must be at least its "
        "request",
    ]
    assert parsed(WEB + "resources: {requests: {cpu: 500m}, limits: {cpu: 0.5}}\n").ok  # equal is fine


def test_unknown_resource_keys_are_refused():
    error = only_error(WEB + "resources:\n  limits: {gpu: 1}\n")
    assert "resources.limits.gpu: unknown key 'gpu'; valid keys here are cpu, memory" in error


def test_cron_apps_take_neither_resources_nor_security():
    cron = "app: web\nrole: cron\nschedule: '* * * * *'\ncommand: x\n"
    errors = errors_of(cron + "resources: {limits: {cpu: 1}}\nsecurity: {runAsUser: 1000}\n")
    assert [e.split(": ", 2)[1] for e in errors] == ["resources", "security"]
    assert "only for webserver and worker apps" in errors[0]


# --- security ------------------------------------------------------------------------


def test_security_defaults_to_non_root_and_takes_a_uid():
    assert parsed(WEB).data["security"] == {"runAsUser": None, "runAsNonRoot": True}
    spec = parsed(WEB + "security: {runAsUser: 1000}\n").spec
    assert spec.security.run_as_user == 1000 and spec.security.run_as_non_root is True
    root = parsed(WEB + "security: {runAsUser: 0, runAsNonRoot: false}\n").spec
    assert root.security.run_as_user == 0 and root.security.run_as_non_root is False


@pytest.mark.parametrize("body, expected", [
    ("{runAsUser: 0}", "security.runAsUser: 0 is root, which runAsNonRoot (true by default) forbids"),
    ("{runAsUser: -1}", "security.runAsUser: -1 is not a user id; use a number from 0 to 2147483647"),
    ("{runAsUser: 2147483648}", "is not a user id"),
    ("{runAsUser: '1000'}", "security.runAsUser: '1000' is not a whole number"),
    ("{runAsNonRoot: 'no'}", "security.runAsNonRoot: 'no' is not true or false"),
    ("{runAsGroup: 1}", "security.runAsGroup: unknown key 'runAsGroup'; valid keys here are runAsUser, runAsNonRoot"),
])
def test_bad_security_values_are_refused(body, expected):
    error = only_error(WEB + f"security: {body}\n")
    assert error.startswith(f"{FILE}:4: ") and expected in error


# --- the manifests -------------------------------------------------------------------


def ctx_for(text, image="registry.local/web:v1", runtime="kubernetes", **kwargs):
    return step_context(parse_spec(text), image=image, runtime=runtime,
                        commit_sha="0123456789abcdef0123456789abcdef01234567", **kwargs)


def test_deployment_and_job_carry_resources_and_the_restricted_security_context():
    ctx = ctx_for(WEB + "resources:\n  requests: {cpu: 250m, memory: 256Mi}\n  limits: {memory: 512Mi}\n")
    pods = [
        kubemanifests.deployment(ctx, "default", [])["spec"]["template"]["spec"],
        kubemanifests.job(ctx, "default", "web-migrate-1", "migrate", "true", [], 60)["spec"]["template"]["spec"],
    ]
    for pod in pods:
        assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        [container] = pod["containers"]
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        assert container["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"},
                                          "limits": {"memory": "512Mi"}}
    # Without resources in infraspec there is no resources key (the cluster's LimitRange may fill it).
    assert "resources" not in kubemanifests.deployment(ctx_for(WEB), "default", [])["spec"]["template"]["spec"][
        "containers"][0]


def test_security_overrides_reach_the_pod():
    pod = kubemanifests.deployment(ctx_for(WEB + "security: {runAsUser: 0, runAsNonRoot: false}\n"), "default", [])
    context = pod["spec"]["template"]["spec"]["securityContext"]
    assert context == {"runAsNonRoot": False, "runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}}


def test_a_kubelet_refusing_a_root_image_is_told_what_to_change():
    hint = kubejobs._config_hint("container has runAsNonRoot and image will run as root (pod: x)")
    assert "security.runAsUser" in hint and "USER 1000" in hint
    assert kubejobs._config_hint('secret "x" not found') == ""


# --- Jobs on the fake's kubelet (real containers) ---------------------------------------


@pytest.fixture
def kube(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeKubernetes() as fake:
        monkeypatch.setenv("KUBECONFIG", fake.write_kubeconfig(tmp_path / "kubeconfig"))
        yield fake
        assert not fake.internal_errors, fake.internal_errors


def test_a_migration_job_runs_with_its_limits_and_without_privileges(kube, busybox_image):
    ctx = ctx_for("app: lim\nrole: worker\nresources: {limits: {cpu: 500m, memory: 64Mi}}\n"
                  "security: {runAsUser: 65534}\n", image=busybox_image)

    kubejobs.run(ctx, purpose="migrate", command=(
        "echo uid=$(id -u); grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; "
        "echo memory=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"))

    lines = ctx.lines()
    assert "uid=65534" in lines
    assert any(re.fullmatch(r"CapEff:\s+0+", line) for line in lines), lines
    assert any(re.fullmatch(r"NoNewPrivs:\s+1", line) for line in lines), lines
    assert f"memory={64 * 2 ** 20}" in lines
    [argv] = kube.jobs.docker_runs
    assert argv[argv.index("--cpus") + 1] == "0.5"


# --- the database host for pods ----------------------------------------------------------


POSTGRES = "services:\n  postgres:\n    database: {database}\n"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3", "LOCALHOST.", "/var/run/pg"])
def test_loopback_hosts_are_refused_naming_the_setting(settings, host):
    settings.NORN_KUBE_APP_DATABASES_HOST = host
    with pytest.raises(appdb.DatabaseProblem) as problem:
        appdb.kubernetes_host()
    assert f"NORN_KUBE_APP_DATABASES_HOST is {host}, a loopback address" in str(problem.value)


def test_unset_setting_falls_back_to_the_admin_host_but_never_a_loopback_one(settings):
    settings.NORN_KUBE_APP_DATABASES_HOST = None
    settings.NORN_APP_DATABASES = {**settings.NORN_APP_DATABASES, "HOST": "127.0.0.1"}
    with pytest.raises(appdb.DatabaseProblem) as problem:
        appdb.kubernetes_host()
    assert "NORN_KUBE_APP_DATABASES_HOST is not set and NORN_APP_DATABASES_URL's host is 127.0.0.1" in str(
        problem.value)
    settings.NORN_APP_DATABASES = {**settings.NORN_APP_DATABASES, "HOST": "db.internal.example"}
    assert appdb.kubernetes_host() == "db.internal.example"


def test_the_runtime_decides_the_host(settings):
    settings.NORN_APP_DATABASES_HOST = "host.docker.internal"
    settings.NORN_KUBE_APP_DATABASES_HOST = "pg.databases.svc"
    spec = parse_spec("app: web\nrole: worker\n" + POSTGRES.format(database="web_db"))
    assert appenv.database_env(spec, "docker")["PGHOST"] == "host.docker.internal"
    assert appenv.database_env(spec, "cron")["PGHOST"] == "host.docker.internal"
    kube_env = appenv.database_env(spec, "kubernetes")
    assert kube_env["PGHOST"] == "pg.databases.svc"
    assert "@pg.databases.svc:" in kube_env["DATABASE_URL"]
    settings.NORN_KUBE_APP_DATABASES_HOST = "127.0.0.1"
    with pytest.raises(StepFailed, match="NORN_KUBE_APP_DATABASES_HOST is 127.0.0.1, a loopback address"):
        appenv.database_env(spec, "kubernetes")
    assert appenv.database_env(spec, "docker")["PGHOST"] == "host.docker.internal"


def test_a_loopback_host_fails_the_migration_before_the_cluster_is_touched(kube, settings, busybox_image):
    settings.NORN_KUBE_APP_DATABASES_HOST = "localhost"
    ctx = ctx_for("app: mig\nrole: worker\n" + POSTGRES.format(database="mig_db"), image=busybox_image)

    with pytest.raises(StepFailed) as failed:
        kubejobs.run(ctx, purpose="migrate", command="true")

    assert "NORN_KUBE_APP_DATABASES_HOST is localhost, a loopback address" in str(failed.value)
    assert not [r for r in kube.requests if r.method in ("POST", "PUT", "PATCH")], "nothing may be written"


def test_a_migration_job_reaches_its_database_at_the_configured_host(kube, settings, app_database):
    from tests.support.psql_image import ensure_psql_image

    image = ensure_psql_image()
    # The fake's kubelet maps host.docker.internal to the host, where the apps' server listens.
    settings.NORN_KUBE_APP_DATABASES_HOST = "host.docker.internal"
    database = app_database("kube")
    appdb.ensure_database("kdb", database)
    ctx = ctx_for("app: kdb\nrole: worker\n" + POSTGRES.format(database=database), image=image)

    kubejobs.run(ctx, purpose="migrate", command='echo "host=$PGHOST"; psql "$DATABASE_URL" -Atc '
                                                   "'select current_user, current_database()'")

    lines = ctx.lines()
    assert "host=host.docker.internal" in lines
    assert f"{appdb.role_name('kdb')}|{database}" in lines


def test_a_host_setting_that_is_not_a_host_stops_norn():
    result = run_manage("check", NORN_KUBE_APP_DATABASES_HOST="db host; rm -rf /")
    assert result.returncode != 0
    assert "NORN_KUBE_APP_DATABASES_HOST='db host; rm -rf /' is not a host name or address" in result.stderr
    assert run_manage("check", NORN_KUBE_APP_DATABASES_HOST="[fd00::5]").returncode == 0
