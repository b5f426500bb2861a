"""Shared fixtures: an apps directory per test, and a clean registry cache."""

import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


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
