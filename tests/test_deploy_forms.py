"""The deploy form: refs, confirmation, errors on the form."""

import re

import pytest

from deployments import states
from deployments.models import Deployment
from tests.support.dashboard import web, operator  # noqa: F401 (fixtures)
from tests.support.dashboard import LOCAL, page

pytestmark = pytest.mark.django_db


def test_deploy_form_confirms_then_deploys_and_redirects_to_the_live_page(operator, web):
    html = page(operator, "/apps/web/deploy")
    assert 'type="radio" name="kind" value="head"' in html and "checked" in html
    assert '<label for="id_ref">Branch or commit SHA</label>' in html
    confirm = operator.post("/apps/web/deploy", {"kind": "branch", "ref": " release-1 "})
    body = confirm.content.decode()
    assert confirm.status_code == 200 and Deployment.objects.count() == 0
    assert 'name="ref" value="release-1"' in body and 'name="confirm" value="yes"' in body
    for name in states.STEPS:
        assert f"<strong>{name}</strong>" in body
    response = operator.post("/apps/web/deploy", {"kind": "branch", "ref": "release-1", "confirm": "yes"})
    deployment = Deployment.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/deployments/{deployment.public_id}/"
    assert (deployment.ref, deployment.requested_by, deployment.requested_via) == ("release-1", operator.user, "dashboard")
    assert deployment.status == "queued"


@pytest.mark.parametrize("kind,ref,message", [
    ("branch", "bad..name", "is not a valid git ref: it contains &#x27;..&#x27; or &#x27;//&#x27;"),
    ("branch", "-rf", "starts with &#x27;-&#x27;"),
    ("branch", "", "Enter a branch name."),
    ("sha", "xyz123", "is not a commit SHA: use 4 to 40 hexadecimal digits"),
    ("sha", "", "Enter a commit SHA."),
])
def test_deploy_form_shows_ref_errors(operator, web, kind, ref, message):
    for confirm in ("", "yes"):
        response = operator.post("/apps/web/deploy", {"kind": kind, "ref": ref, "confirm": confirm})
        html = response.content.decode()
        assert response.status_code == 200
        assert message in html
        assert 'aria-invalid="true"' in html and 'id="ref-errors"' in html
    assert Deployment.objects.count() == 0


def test_deploy_form_head_ignores_the_text_field_and_sha_is_lowercased(operator, web):
    operator.post("/apps/web/deploy", {"kind": "head", "ref": "whatever..", "confirm": "yes"})
    operator.post("/apps/web/deploy", {"kind": "sha", "ref": "ABCDEF1", "confirm": "yes"})
    assert sorted(Deployment.objects.values_list("ref", flat=True)) == ["HEAD", "abcdef1"]


def test_deploy_form_reports_request_errors_on_the_form(operator, make_app):
    make_app("local", LOCAL)
    html = page(operator, "/apps/local/deploy")
    assert 'value="branch"' not in html  # no repository: no branches to offer
    response = operator.post("/apps/local/deploy", {"ref": "feature", "confirm": "yes"})
    assert "has no repo in infraspec.yaml, so there is no branch" in response.content.decode()
    assert Deployment.objects.count() == 0


def test_deploy_form_for_an_invalid_app_shows_its_errors(operator, make_app):
    make_app("broken", "app: broken\nrole: webapp\n")
    html = page(operator, "/apps/broken/deploy")
    assert "infraspec.yaml is invalid" in html and "<form method=\"post\" action=\"/apps/broken/deploy\"" not in html
    response = operator.post("/apps/broken/deploy", {"ref": "HEAD", "confirm": "yes"})
    assert "&#x27;webapp&#x27; is not a role" in response.content.decode()
    assert Deployment.objects.count() == 0


def test_deploy_form_is_prefilled_from_the_ref(operator, web):
    html = page(operator, f"/apps/web/deploy?ref={'a' * 12}")
    assert re.search(r'value="sha"[^>]*checked', html)
    assert f'value="{"a" * 12}"' in html
