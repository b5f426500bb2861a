"""Migrations as Kubernetes Jobs (deployments/runtimes/kubejobs.py) against the fake API
server, whose pods really run on the local Docker engine: the Job's log reaches the step line
by line, a failure names the Job's reason and exit code, an image that was never pushed fails
within seconds, a cancel deletes the Job and kills its container, the app's Secret is the
container's environment (and nothing of Norn's is), and the Job is always deleted."""

import hashlib
import json
import subprocess
import time
import uuid

import pytest

from deployments import appdb, runner
from deployments.outcomes import StepFailed
from deployments.runtimes import kubejobs, kubemanifests
from tests.support.contexts import parse_spec, step_context
from tests.support.docker_images import docker_build, find_static_busybox
from tests.support import kube_target

APP = "mig"


@pytest.fixture
def kube(kube_cluster, busybox_image):
    kube_target.make_available(kube_cluster, busybox_image)
    return kube_cluster


def make_ctx(tmp_path, image, *, database=None, timeout=60, cancel_reason=None, env=None):
    text = f"app: {APP}\nrole: worker\nnamespace: default\n"
    if kube_target.real_kubeconfig():
        # norn-busybox has no USER; a real kubelet refuses root under runAsNonRoot.
        text += "security:\n  runAsUser: 1000\n"
    if env:
        text += "env:\n" + "".join(f"  {k}: {v!r}\n" for k, v in env.items())
    if database:
        text += f"services:\n  postgres:\n    database: {database}\nmigrations:\n  command: \"true\"\n"
    return step_context(parse_spec(text), workdir=tmp_path, app_dir=tmp_path, image=image, timeout=timeout,
                        commit_sha="0123456789abcdef0123456789abcdef01234567", cancel_reason=cancel_reason)


def job_containers(kube):
    """Docker containers the fake's kubelet started and that still exist."""
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=norn.fake-kube={kube.jobs.instance}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def assert_job_gone(kube, ctx):
    name = kubemanifests.job_name(APP, "migrate", ctx.public_id)
    assert kube.get_object("jobs", name) is None
    if kube_target.is_real(kube):
        return  # a real cluster's garbage collector removes the pods in the background
    assert not [k for k in kube._objects if k[0] == "pods"], "the Job's pods must go with it"
    wait_for(lambda: not job_containers(kube))


@pytest.mark.fake_kube_only("reads the recorded requests and the fake kubelet's docker runs")
def test_successful_migration_streams_its_log_and_deletes_the_job(kube, tmp_path, busybox_image):
    ctx = make_ctx(tmp_path, busybox_image, env={"GREETING": "hello from the app"})

    kubejobs.run(ctx, purpose="migrate", command='echo "$GREETING"; echo step two; printf "no newline"')

    lines = ctx.lines()
    at = lines.index("hello from the app")
    assert lines[at:at + 3] == ["hello from the app", "step two", "no newline"]
    assert 'migrate job "mig-migrate-' in ctx.text() and "completed" in ctx.text()
    # The Job was created as asked: one attempt, bounded by the step's timeout, never restarted.
    [create] = [r for r in kube.requests if r.method == "POST" and r.path.endswith("/jobs")]
    spec = create.body["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 60
    assert spec["ttlSecondsAfterFinished"] > 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert pod["containers"][0]["command"] == ["sh", "-c", 'echo "$GREETING"; echo step two; printf "no newline"']
    # Its pods must never join the app's Service, which selects on app.kubernetes.io/name.
    assert kubemanifests.NAME_LABEL not in spec["template"]["metadata"]["labels"]
    assert create.body["metadata"]["labels"]["norn.dev/deployment"] == ctx.public_id
    [delete] = [r for r in kube.requests if r.method == "DELETE" and "/jobs/" in r.path]
    assert delete.query.get("propagationPolicy") == "Background"
    assert_job_gone(kube, ctx)
    # The kubelet ran it on Docker's bridge network, not the host's.
    [argv] = kube.jobs.docker_runs
    assert argv[argv.index("--network") + 1] == "bridge"


def test_failed_migration_names_the_jobs_reason_and_exit_code(kube, tmp_path, busybox_image):
    ctx = make_ctx(tmp_path, busybox_image)

    with pytest.raises(StepFailed) as failed:
        kubejobs.run(ctx, purpose="migrate", command="echo applying 0002; echo 'relation exists' >&2; exit 3")

    error = str(failed.value)
    assert error.startswith('migrate job "mig-migrate-')
    assert "BackoffLimitExceeded" in error
    assert "exited with code 3 (Error)" in error
    assert "applying 0002" in ctx.lines() and "relation exists" in ctx.lines()
    assert_job_gone(kube, ctx)


def test_image_never_pushed_fails_within_seconds(kube, tmp_path):
    image = f"127.0.0.1:5000/norn-never-pushed-{uuid.uuid4().hex[:8]}:1"
    ctx = make_ctx(tmp_path, image, timeout=300)

    started = time.monotonic()
    with pytest.raises(StepFailed) as failed:
        kubejobs.run(ctx, purpose="migrate", command="true")

    assert time.monotonic() - started < 30, "an unpullable image must fail long before the timeout"
    error = str(failed.value)
    assert "cannot pull image" in error and image in error
    assert "ErrImagePull" in error or "ImagePullBackOff" in error
    assert_job_gone(kube, ctx)


def test_cancel_mid_run_deletes_the_job_and_kills_its_container(kube, tmp_path, busybox_image):
    holder = {}
    ctx = make_ctx(tmp_path, busybox_image, timeout=120,
                   cancel_reason=lambda: "alice" if "migrating" in holder["ctx"].text() else None)
    holder["ctx"] = ctx

    started = time.monotonic()
    with pytest.raises(runner.Cancelled) as cancelled:
        kubejobs.run(ctx, purpose="migrate", command="echo migrating; sleep 100; echo never")

    assert str(cancelled.value) == "alice"
    assert time.monotonic() - started < 30
    assert "never" not in ctx.lines()
    assert_job_gone(kube, ctx)


def test_job_deadline_is_the_step_timeout(kube, tmp_path, busybox_image):
    ctx = make_ctx(tmp_path, busybox_image, timeout=2)

    with pytest.raises(StepFailed) as failed:
        kubejobs.run(ctx, purpose="migrate", command="echo slow; sleep 60")

    assert "DeadlineExceeded" in str(failed.value)
    assert "activeDeadlineSeconds (2 s" in str(failed.value)
    assert_job_gone(kube, ctx)


@pytest.mark.fake_kube_only("reads the recorded requests")
def test_job_gets_the_apps_secret_env_and_none_of_norns(kube, tmp_path, busybox_image, monkeypatch, settings):
    # Norn's own secrets, in the environment of the process that starts the Job.
    monkeypatch.setenv("SECRET_KEY", "norn-secret-key-canary")
    monkeypatch.setenv("NORN_GIT_TOKEN", "norn-git-token-canary")
    # Norn's admin password for the apps' server: it must never reach the Job.
    admin = settings.NORN_APP_DATABASES or {"HOST": "127.0.0.1", "PORT": 5433, "USER": "norn_admin", "NAME": "postgres"}
    settings.NORN_APP_DATABASES = {**admin, "PASSWORD": "admin-db-password-canary"}
    # A stale Secret from an earlier deploy: the Job must see this deployment's values.
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{APP}-norn-env"},
                 "stringData": {"DATABASE_URL": "postgres://stale"}})
    ctx = make_ctx(tmp_path, busybox_image, database="mig_db")
    # The app's own role, at the host containers use (appdb.container_env).
    own = appdb.container_env(APP, "mig_db")
    expected, password = own["DATABASE_URL"], own["PGPASSWORD"]

    kubejobs.run(ctx, purpose="migrate", command=(
        'echo "url-md5 $(printf %s "$DATABASE_URL" | md5sum)"; echo "pgpassword-md5 $(printf %s "$PGPASSWORD" | '
        'md5sum)"; env | sort | sed "s/^/env: /"; ls /var/run/secrets/kubernetes.io 2>&1 | sed "s/^/sa: /"'))

    text = ctx.text()
    assert f"url-md5 {hashlib.md5(expected.encode()).hexdigest()}" in text
    assert f"pgpassword-md5 {hashlib.md5(password.encode()).hexdigest()}" in text
    env = {line[5:].split("=", 1)[0]: line[5:].split("=", 1)[1] for line in ctx.lines()
           if line.startswith("env: ") and "=" in line}
    assert env["NORN_APP"] == APP and env["NORN_DEPLOYMENT"] == ctx.public_id
    assert env["NORN_COMMIT"] == "0123456789abcdef0123456789abcdef01234567"
    assert "canary" not in text  # none of Norn's secrets, nor the admin's database password
    assert not {"SECRET_KEY", "NORN_GIT_TOKEN", "KUBECONFIG", "KUBERNETES_SERVICE_HOST"} & set(env)
    assert "sa: ls:" in text  # no service account token mounted
    # The password travelled in the Secret, not in the Job.
    [create] = [r for r in kube.requests if r.method == "POST" and r.path.endswith("/jobs")]
    assert password not in json.dumps(create.body) and "canary" not in json.dumps(create.body)
    entry = next(e for e in create.body["spec"]["template"]["spec"]["containers"][0]["env"]
                 if e["name"] == "DATABASE_URL")
    assert entry["valueFrom"] == {"secretKeyRef": {"name": f"{APP}-norn-env", "key": "DATABASE_URL"}}


@pytest.mark.fake_kube_only("a scratch image as root, and the fake kubelet's StartError wording")
def test_image_without_a_shell_says_what_the_image_needs(kube, tmp_path):
    context = tmp_path / "noshell"
    context.mkdir()
    (context / "busybox").write_bytes(find_static_busybox().read_bytes())
    (context / "busybox").chmod(0o755)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY busybox /busybox\n")
    image = docker_build(context, f"norn-noshell:{uuid.uuid4().hex[:8]}")
    try:
        ctx = make_ctx(tmp_path, image)
        with pytest.raises(StepFailed) as failed:
            kubejobs.run(ctx, purpose="migrate", command="true")
    finally:
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True)
    error = str(failed.value)
    assert "StartError" in error and "exited with code 128" in error
    assert "needs a shell named sh" in error
    assert_job_gone(kube, ctx)


@pytest.mark.fake_kube_only("watches the fake kubelet's containers")
def test_a_job_left_by_an_earlier_attempt_is_replaced(kube, tmp_path, busybox_image):
    ctx = make_ctx(tmp_path, busybox_image)
    name = kubemanifests.job_name(APP, "migrate", ctx.public_id)
    kube.create(kubemanifests.job(ctx, "default", name, "migrate", "echo first attempt; sleep 100", [], 60),
                plural="jobs")
    wait_for(lambda: job_containers(kube))

    kubejobs.run(ctx, purpose="migrate", command="echo second attempt")

    assert "second attempt" in ctx.lines() and "first attempt" not in ctx.lines()
    assert "exists from an earlier attempt" in ctx.text()
    assert_job_gone(kube, ctx)


def test_job_name_is_a_dns_label_of_at_most_63_characters():
    public_id = str(uuid.uuid4())
    name = kubemanifests.job_name("a" * 70, "migrate", public_id)
    assert len(name) <= 63 and name.endswith(f"-migrate-{public_id.replace('-', '')[:8]}")
    assert kubemanifests.job_name("web", "migrate", public_id) == f"web-migrate-{public_id.replace('-', '')[:8]}"


@pytest.mark.fake_kube_only("the fake kubelet's Docker bridge network and host.docker.internal")
def test_hostile_migration_reaches_nothing_of_norns(kube, tmp_path, busybox_image, monkeypatch, settings):
    """App code in the Job tries Norn's secrets, database, Redis and files: every attempt fails,
    while the apps' database cluster (the positive control) is reachable."""
    monkeypatch.setenv("SECRET_KEY", "norn-secret-key-canary")
    ctx = make_ctx(tmp_path, busybox_image)
    probes = " ".join(f'"{t}"' for t in ("127.0.0.1 5432", "127.0.0.1 6379", "host.docker.internal 5432",
                                         "host.docker.internal 6379", "host.docker.internal 5433"))
    kubejobs.run(ctx, purpose="migrate", command=(
        f'for t in {probes}; do if echo PING | nc -w 2 $t >/dev/null 2>&1; then echo "open $t"; '
        'else echo "closed $t"; fi; done; '
        'cat /proc/*/environ 2>/dev/null | tr "\\0" "\\n" | grep -c canary | sed "s/^/canaries: /"; '
        f'ls {settings.NORN_SNAPSHOT_DIR} {settings.NORN_WORK_DIR} >/dev/null 2>&1 || echo "no norn dirs"'))

    lines = ctx.lines()
    for closed in ("127.0.0.1 5432", "127.0.0.1 6379", "host.docker.internal 5432", "host.docker.internal 6379"):
        assert f"closed {closed}" in lines
    assert "open host.docker.internal 5433" in lines, "the apps' database cluster must stay reachable"
    assert "canaries: 0" in lines
    assert "no norn dirs" in lines


@pytest.mark.fake_kube_only("watches the fake kubelet's containers")
def test_remove_jobs_deletes_what_a_dead_worker_left_running(kube, tmp_path, busybox_image):
    ctx = make_ctx(tmp_path, busybox_image)
    name = kubemanifests.job_name(APP, "migrate", ctx.public_id)
    kube.create(kubemanifests.job(ctx, "default", name, "migrate", "sleep 100", [], 60), plural="jobs")
    other = make_ctx(tmp_path, busybox_image)
    other_name = kubemanifests.job_name(APP, "migrate", other.public_id)
    kube.create(kubemanifests.job(other, "default", other_name, "migrate", "sleep 100", [], 60), plural="jobs")
    wait_for(lambda: len(job_containers(kube)) == 2)

    assert kubejobs.remove_jobs(ctx.public_id, "default") == [name]

    assert kube.get_object("jobs", name) is None and kube.get_object("jobs", other_name) is not None
    wait_for(lambda: len(job_containers(kube)) == 1)
