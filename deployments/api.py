"""Norn's HTTP API for the command line (docs/cli.md, "The fast path").

`manage.py deploy` and `follow` ask the running server here instead of
starting Django themselves (deployments/remote.py): queue a deployment, look
one up. Every request carries an API token (`Authorization: Token <token>`,
as on the WebSocket stream) and is allowed what the token's user may do on
the dashboard; a session cookie counts for nothing here, which is why these
views need no CSRF token. Answers are JSON, errors `{"error": "..."}`.
"""

import json

from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import AnonymousUser
from django.http import JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from deployments.models import ApiToken, Deployment, DeploymentStatus
from deployments.requests import DeployRequestError, request_deployment

VIEW = "deployments.view_deployment"
START = "deployments.start_deployment"
MAX_BODY = 16 * 1024  # an app name, a ref and a user name


def _error(status, text):
    return JsonResponse({"error": text}, status=status)


def _token_user(request):
    """The active user whose API token the request carries, else anonymous."""
    token = ApiToken.from_authorization(request.headers.get("Authorization", ""))
    return (token and ApiToken.authenticate(token)) or AnonymousUser()


def _refusal(user, *perms):
    """The answer for a user who may not do this, or None."""
    if not user.is_authenticated:
        return _error(401, "NORN_API_TOKEN was not accepted (no such active token)")
    if not user.has_perms(perms):
        return _error(403, f"the API token's user ({user.get_username()}) may not do this")
    return None


def _described(deployment):
    return {
        "id": str(deployment.public_id),
        "app": deployment.app.name,
        "ref": deployment.ref,
        "kind": deployment.kind,
        "status": deployment.status,
        "finished": deployment.is_terminal,
        "ahead": deployment.queued_ahead() if deployment.status == DeploymentStatus.QUEUED else 0,
        "url": reverse("deployment-detail", kwargs={"public_id": deployment.public_id}),
        "commit_sha": deployment.commit_sha or None,
        "commit_subject": deployment.commit_subject,
        "commit_author": deployment.commit_author,
        "commit_time": deployment.commit_time.isoformat().replace("+00:00", "Z") if deployment.commit_time else None,
        "failure_reason": deployment.failure_reason,
    }


# No session login (LoginRequiredMiddleware): the token is the login, and
# every view here refuses a request without one (_refusal).
@login_not_required
@csrf_exempt
@require_POST
def deployments(request):
    """Queue a deploy: {"app": name, "ref": "HEAD"|branch|sha, "name": who at the terminal}."""
    user = _token_user(request)
    refused = _refusal(user, VIEW, START)
    if refused:
        return refused
    if len(request.body) > MAX_BODY:
        return _error(413, f"the request body is over {MAX_BODY} bytes")
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "the request body is not JSON")
    if not isinstance(body, dict):
        return _error(400, 'the request body must be a JSON object: {"app": ..., "ref": ...}')
    app, ref, name = body.get("app", ""), body.get("ref", "HEAD"), body.get("name", "")
    for field, value in (("app", app), ("ref", ref), ("name", name)):
        if not isinstance(value, str) or "\x00" in value:
            return _error(400, f"{field!r} must be a string")
    if not app:
        return _error(400, "'app' is missing: name the app to deploy")
    try:
        deployment = request_deployment(app, ref, user=user, name=name[:150], via="cli")
    except DeployRequestError as exc:
        return _error(400, str(exc))
    return JsonResponse(_described(deployment), status=201)


@login_not_required
@csrf_exempt
@require_GET
def deployment(request, text):
    """A deployment by its UUID or its first 8+ characters; with ?events=1 and
    when it has ended, its events too (its record is complete: no stream needed)."""
    user = _token_user(request)
    refused = _refusal(user, VIEW)
    if refused:
        return refused
    try:
        found = Deployment.objects.select_related("app").named(text)
    except Deployment.DoesNotExist:
        return _error(404, f"no deployment {text.strip().lower()[:40]}")
    except ValueError as exc:
        return _error(400, str(exc))
    described = _described(found)
    if request.GET.get("events") == "1" and found.is_terminal:
        described["events"] = [
            {"seq": seq, "event": kind, "payload": payload}
            for seq, kind, payload in found.events.order_by("seq").values_list("seq", "kind", "payload").iterator()
        ]
    return JsonResponse(described)
