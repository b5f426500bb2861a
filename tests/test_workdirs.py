"""Work directories are 0700 whatever the umask Norn runs with: the deployment's
own (it holds the clone and the askpass script) and NORN_WORK_DIR when Norn
creates it, from the pipeline and from a deploy request's ref check alike."""

import os
import stat

import pytest

from deployments import workdirs
from deployments.requests import DeployRequestError, request_deployment
from deployments.steps import StepFailed, clone
from tests.support.git_servers import make_repo


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def open_umask():
    """umask 000: every file anyone creates is world-writable unless it says otherwise."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_work_root_and_deployment_directory_are_private(tmp_path, settings, open_umask):
    settings.NORN_WORK_DIR = tmp_path / "var" / "work"
    workdir = workdirs.make(settings.NORN_WORK_DIR / "d1")
    assert (mode(settings.NORN_WORK_DIR), mode(workdir)) == (0o700, 0o700)
    # Made again (the pipeline does, after the clone step), still private.
    workdir.chmod(0o777)
    assert mode(workdirs.make(workdir)) == 0o700


def test_an_existing_work_root_keeps_the_operators_mode(tmp_path, settings, open_umask):
    settings.NORN_WORK_DIR = tmp_path / "work"
    settings.NORN_WORK_DIR.mkdir(mode=0o750)
    workdir = workdirs.make(settings.NORN_WORK_DIR / "d1")
    assert (mode(settings.NORN_WORK_DIR), mode(workdir)) == (0o750, 0o700)


@pytest.mark.django_db(transaction=True)
def test_the_pipeline_clones_into_a_private_directory(make_app, deploy_now, settings, tmp_path, monkeypatch, open_umask):
    settings.NORN_WORK_DIR = tmp_path / "fresh" / "work"
    seen = {}

    def record_and_stop(ctx):
        seen.update(root=mode(ctx.workdir.parent), workdir=mode(ctx.workdir))
        raise StepFailed("stopped after looking")

    monkeypatch.setattr(clone, "run", record_and_stop)
    make_app("web", "app: web\nrole: worker\n")
    deployment = deploy_now("web")
    assert deployment.steps.get(name="clone").error == "stopped after looking"
    assert seen == {"root": 0o700, "workdir": 0o700}


@pytest.mark.django_db(transaction=True)
def test_the_ref_check_creates_a_private_work_root(make_app, norn_dirs, settings, tmp_path, open_umask):
    settings.NORN_WORK_DIR = tmp_path / "fresh" / "work"
    repo = make_repo(tmp_path / "repos", "web", {"README": "x\n"})
    make_app("web", f"app: web\nrole: worker\nrepo:\n  url: {repo.file_url}\n")
    with pytest.raises(DeployRequestError, match="branch 'nope' does not exist"):
        request_deployment("web", "nope")
    assert mode(settings.NORN_WORK_DIR) == 0o700
    assert list(settings.NORN_WORK_DIR.iterdir()) == []  # its scratch directory is gone
