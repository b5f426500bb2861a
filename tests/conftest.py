"""Shared fixtures: an apps directory per test, a clean registry cache, and the Kubernetes
cluster the Kubernetes tests talk to (the fake, or NORN_TEST_KUBECONFIG's)."""

import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "fake_kube_only(why): uses the fake Kubernetes API server's test controls; skipped when "
        "NORN_TEST_KUBECONFIG names a real cluster",
    )


def pytest_runtest_setup(item):
    from tests.support import kube_target

    mark = item.get_closest_marker(kube_target.MARK)
    if mark and kube_target.real_kubeconfig():
        why = mark.args[0] if mark.args else "it uses the fake's test controls"
        pytest.skip(f"fake Kubernetes API server only ({why}); {kube_target.VARIABLE} names a real cluster")


@pytest.fixture
def kube_cluster(tmp_path, monkeypatch):
    """The cluster Kubernetes tests deploy to, found by the runtime through $KUBECONFIG: the fake
    API server (its progress deadline scaled to 1.2 s, so stuck rollouts fail fast), or, with
    NORN_TEST_KUBECONFIG set, that real cluster (tests/support/kube_target.py)."""
    from tests.support.kube_target import kube_cluster

    # time_scale=0.01: the 10 s minReadySeconds Norn sets on probe-less apps (and the kubelet's probe
    # periods and back-offs) pass in a hundredth of the time, so the suite does not wait them out.
    with kube_cluster(tmp_path, monkeypatch, progress_deadline_scale=0.002, time_scale=0.01) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's, whose end drops the test database: the worker's
    resident threads (deployments/residents.py) keep their connections
    between deployments, so they let go of them first."""
    yield
    from deployments import residents

    residents.disconnect()


@pytest.fixture(scope="session")
def ingress_service(tmp_path_factory):
    """Caddy running as its own service for the test session, as
    norn-ingress.service runs it: Norn's workers never start it. Stopped with
    SIGTERM to its process group at the end (tests/support/ingress.py)."""
    from tests.support.ingress import IngressService

    service = IngressService(tmp_path_factory.mktemp("ingress")).start()
    yield service
    service.stop()


@pytest.fixture(autouse=True)
def ingress_settings(request, tmp_path, settings):
    """The ingress this test talks to.

    Tests that run containers (they use busybox_image) or ask for
    `ingress_service` share the session's Caddy; the routes they leave are
    taken out of it afterwards, and a Caddy a test stopped is started again.
    Every other test gets an admin socket where nothing answers.
    """
    if not {"busybox_image", "ingress_service"} & set(request.fixturenames):
        settings.NORN_INGRESS_ADMIN = f"unix/{tmp_path}/no-ingress.sock"
        yield None
        return
    service = request.getfixturevalue("ingress_service")
    if not service.running:
        service.start()
    for name, value in service.settings.items():
        setattr(settings, name, value)
    yield service
    if not service.running:
        service.kill()
        service.start()
    from deployments import caddy

    caddy.load(caddy.build([]))


@pytest.fixture
def apps_dir(tmp_path, settings):
    """An empty NORN_APPS_DIR for this test."""
    from apps_registry import discovery

    path = tmp_path / "apps"
    path.mkdir()
    settings.NORN_APPS_DIR = path
    discovery.forget_fingerprint()
    yield path
    discovery.forget_fingerprint()


@pytest.fixture
def write_spec(apps_dir):
    """write_spec("name", "yaml text") creates apps_dir/name/infraspec.yaml."""

    def write(name, text):
        directory = apps_dir / name
        directory.mkdir(exist_ok=True)
        path = directory / "infraspec.yaml"
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def norn_dirs(tmp_path, settings):
    """Private work and snapshot directories for pipeline tests."""
    settings.NORN_WORK_DIR = tmp_path / "work"
    settings.NORN_SNAPSHOT_DIR = tmp_path / "snapshots"
    return settings


@pytest.fixture
def make_app(apps_dir, write_spec):
    """make_app("name", spec_yaml, files={...}) -> the app's directory, synced.

    Afterwards the apps' Docker networks (norn-<app>) are removed: Docker's
    default address pools hold only about 30 of them."""
    from apps_registry import discovery
    from tests.support.networks import remove_networks_of_apps_dir

    def make(name, spec, files=None):
        write_spec(name, spec)
        for rel, content in (files or {}).items():
            path = apps_dir / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content) if isinstance(content, str) else path.write_bytes(content)
        discovery.sync()
        discovery.forget_fingerprint()
        return apps_dir / name

    yield make
    remove_networks_of_apps_dir(apps_dir)


@pytest.fixture
def deploy_now(norn_dirs):
    """Request a deployment and run its pipeline here, synchronously."""
    from deployments import deferred, pipeline
    from deployments.requests import request_deployment

    def deploy(app, ref="HEAD", **kwargs):
        deployment = request_deployment(app, ref, **kwargs)
        pipeline.execute(deployment.pk)
        deferred.wait()  # as the worker's process would before it exits
        deployment.refresh_from_db()
        return deployment

    return deploy


@pytest.fixture(scope="session")
def busybox_image():
    """The locally built base image that test Dockerfiles start FROM (and
    norn-psql:1, the same plus psql, for apps whose migrations use it: they
    run in the app's image)."""
    from tests.support.docker_images import docker_available, ensure_busybox_base_image
    from tests.support.psql_image import ensure_psql_image

    if not docker_available():
        pytest.fail("no Docker engine: run scripts/services")
    ensure_psql_image()
    return ensure_busybox_base_image()


@pytest.fixture
def app_database():
    """A fresh PostgreSQL database for an app; dropped afterwards.

    It lives where the pipeline creates it: the server NORN_APP_DATABASES_URL
    names (scripts/test reads scripts/services' apps cluster). The apps'
    roles (norn_app_<app>) stay: they own nothing once their databases are
    gone, and a parallel test run may be using the same app's role.
    """
    import uuid

    import psycopg

    from deployments import appdb

    names = []

    def make(prefix="app"):
        name = f"norn_test_{prefix}_{uuid.uuid4().hex[:8]}"
        names.append(name)
        return name

    yield make
    with psycopg.connect(appdb.database_url("postgres"), autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
