"""The scripts pages load: the admin list's live script, vendored htmx."""

import pytest

from deployments.models import DeploymentStatus
from tests.support.dashboard import web  # noqa: F401 (fixtures)
from tests.support.dashboard import make_deployment, page

pytestmark = pytest.mark.django_db


def test_admin_deployment_list_listens_live(admin_client, web):
    deployment = make_deployment(web, DeploymentStatus.QUEUED)
    html = page(admin_client, "/admin/deployments/deployment/")
    assert "/static/norn/admin_live.js" in html
    assert 'data-ws-path="/ws/deployments/"' in html
    assert 'data-status-url="/deployments/00000000-0000-0000-0000-000000000000/_status"' in html
    # The script finds a row by the short id in its first column.
    assert f'<th class="field-short_id"><a href="/admin/deployments/deployment/{deployment.pk}/change/">{deployment.short_id}</a></th>' in html


def test_htmx_is_vendored_with_its_license():
    from django.conf import settings

    vendor = settings.BASE_DIR / "static" / "vendor" / "htmx"
    assert (vendor / "htmx.min.js").read_text().startswith("var htmx=function()")
    assert "Zero-Clause BSD" in (vendor / "LICENSE").read_text()
