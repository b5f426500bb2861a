"""The apps overview: every app with its last deployment."""

import pytest
from django.contrib.auth.models import User

from apps_registry import discovery
from deployments.models import Deployment, DeploymentStatus
from tests.support.dashboard import web, operator  # noqa: F401 (fixtures)
from tests.support.dashboard import make_deployment, page

pytestmark = pytest.mark.django_db


def test_overview_shows_last_deployment_status_commit_time_and_who(operator, web, make_app):
    make_deployment(web, DeploymentStatus.DEPLOYED, commit="a" * 40, ago=60)
    user = User.objects.create_user("alice")
    last = make_deployment(web, DeploymentStatus.FAILED, ref="main", commit="b" * 40)
    Deployment.objects.filter(pk=last.pk).update(requested_by=user)
    make_app("idle", "app: idle\nrole: worker\n")
    html = page(operator, "/")
    row = html.split('href="/apps/web/"')[1].split("</tr>")[0]
    # Status as a symbol and a word, not colour alone.
    assert '<span class="symbol" aria-hidden="true">✗ </span>Failed' in row
    assert "b" * 12 in row and "a" * 12 not in row
    assert "alice via dashboard" in row
    assert "ago</time>" in row
    assert f'href="/deployments/{last.public_id}/"' in row
    assert 'href="/apps/web/deploy"' in row
    idle = html.split('href="/apps/idle/"')[1].split("</tr>")[0]
    assert "Never deployed" in idle


def test_overview_flags_invalid_and_missing_apps(operator, make_app, apps_dir):
    make_app("broken", "app: broken\nrole: webapp\n")
    make_app("gone", "app: gone\nrole: worker\n")
    (apps_dir / "gone" / "infraspec.yaml").unlink()
    discovery.forget_fingerprint()
    html = page(operator, "/")
    broken = html.split('href="/apps/broken/"')[1].split("</tr>")[0]
    assert "Invalid infraspec.yaml" in broken
    assert "&#x27;webapp&#x27; is not a role" in broken
    assert 'href="/apps/broken/deploy"' not in broken
    gone = html.split('href="/apps/gone/"')[1].split("</tr>")[0]
    assert "Missing since" in gone and "infraspec.yaml</code> is gone" in gone
    assert 'href="/apps/gone/deploy"' not in gone


def test_overview_picks_up_a_new_app_without_restart(operator, web, write_spec):
    page(operator, "/")
    write_spec("fresh", "app: fresh\nrole: worker\n")
    assert 'href="/apps/fresh/"' in page(operator, "/")
