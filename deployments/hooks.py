"""Push webhooks: POST /hooks/github, /hooks/gitlab and /hooks/gitea (Gitea
and Forgejo). A signed push to an autoDeploy app's branch deploys the pushed
commit (deployments/autodeploy.py); docs/autodeploy.md says how to set it up.

These are the only views that need neither a login nor a CSRF token: the
signature, made with a secret from the environment, is the login.
"""

import hashlib
import json
import logging
import os
import re

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import IntegrityError, transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from apps_registry import discovery
from apps_registry.models import App
from deployments import autodeploy
from deployments.hooks_providers import PROVIDERS, BadPayload, normalize_repo_url, push_event, repository_urls
from deployments.models import AutoDeployTrigger, WebhookDelivery
from deployments.requests import DeployRequestError

log = logging.getLogger(__name__)

GLOBAL_SECRET = "NORN_WEBHOOK_SECRET"
# Answers after which the same delivery is acted on again when re-sent.
RETRYABLE = (400, 422)


def secret_variable(app_name: str) -> str:
    """NORN_WEBHOOK_SECRET_<APP>: the name upper-cased, anything but letters
    and digits as _ (hello-web: NORN_WEBHOOK_SECRET_HELLO_WEB)."""
    return f"{GLOBAL_SECRET}_{re.sub(r'[^A-Z0-9]', '_', app_name.upper())}"


def secret_for(app_name: str) -> tuple[str, str]:
    """(the variable that holds the app's secret, the secret), or ("", "")
    when neither the app's own nor the global one is set."""
    for name in (secret_variable(app_name), GLOBAL_SECRET):
        value = os.environ.get(name, "")
        if value:
            return name, value
    return "", ""


def _answer(status, **body):
    return JsonResponse(body, status=status)


@login_not_required
@csrf_exempt
@require_POST
def receive(request, provider):
    """Verify, deduplicate and act on one push delivery. Never a 500 for
    anything the sender controls."""
    hooks = PROVIDERS[provider]
    limit = settings.NORN_WEBHOOK_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _answer(400, error="the Content-Length header is not a number")
    if declared > limit:
        return _answer(413, error=f"the body is {declared} bytes; at most {limit} (NORN_WEBHOOK_MAX_BYTES)")
    body = request.read(limit + 1)
    if len(body) > limit:
        return _answer(413, error=f"the body is over {limit} bytes (NORN_WEBHOOK_MAX_BYTES)")
    given = hooks.signature(request)
    if not given:
        header = " or ".join(h.removeprefix("HTTP_").replace("_", "-") for h in hooks.signature_headers)
        return _answer(401, error=f"no {header} header: set the webhook's secret (docs/autodeploy.md)")
    content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return _answer(400, error=f"the content type is {content_type or 'missing'!r}; set the webhook's "
                                  "content type to application/json")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return _answer(400, error=f"the body is not JSON: {exc}"[:300])
    except RecursionError:
        return _answer(400, error="the body's JSON is nested too deeply")
    if not isinstance(payload, dict):
        return _answer(400, error=f"the body must be a JSON object; got {type(payload).__name__}")
    event = hooks.header(request, hooks.event_headers)
    try:
        urls = repository_urls(provider, payload)
    except BadPayload as exc:
        if event and event not in hooks.push_events + hooks.ping_events:
            return _not_a_push(event)
        return _answer(400, error=str(exc))

    discovery.ensure_fresh()
    wanted = {normalize_repo_url(url) for url in urls} - {""}
    apps = [
        app for app in App.objects.filter(status=App.Status.VALID).exclude(repo_url="")
        if app.infraspec.repo and normalize_repo_url(app.infraspec.repo.url) in wanted
    ]
    refused = _check_signature(hooks, body, given, apps)
    if refused:
        return refused
    if not apps:
        return _answer(202, result="ignored", reason=f"no app's repo.url is this repository ({urls[0][:200]})")

    if event in hooks.ping_events:
        return _answer(200, result="pong", apps=[app.name for app in apps])
    if event not in hooks.push_events:
        return _not_a_push(event)
    delivery_id = hooks.header(request, hooks.delivery_headers)[:200] or _body_id(body)
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(provider=provider, delivery_id=delivery_id)
    except IntegrityError:
        earlier = WebhookDelivery.objects.filter(provider=provider, delivery_id=delivery_id).first()
        # A delivery that was refused (a commit not found, an infraspec
        # broken at the time) may be sent again once fixed: claim it back.
        retry = earlier and WebhookDelivery.objects.filter(pk=earlier.pk, status_code__in=RETRYABLE).update(
            status_code=None, outcome="")
        if not retry:
            return _answer(200, result="already handled", delivery=delivery_id,
                           outcome=earlier.outcome if earlier else "")
        delivery = earlier
    try:
        status, answer = _handle_push(provider, delivery_id, payload, apps)
    except Exception:
        # Not the sender's doing (a database error): forget the delivery so
        # that the provider's retry is acted on.
        WebhookDelivery.objects.filter(pk=delivery.pk).delete()
        raise
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status_code=status, outcome=json.dumps(answer, sort_keys=True)[:4000]
    )
    return _answer(status, delivery=delivery_id, **answer)


def _not_a_push(event):
    return _answer(202, result="ignored", reason=f"event {event[:100]!r} is not a push; select push events only")


def _check_signature(hooks, body, given, apps):
    """The refusal for a delivery not signed with the secret of every app it
    is for (the global secret when no app matches), else None."""
    if not apps:
        secret = os.environ.get(GLOBAL_SECRET, "")
        if secret and not hooks.verify(body, given, secret):
            return _answer(403, error=f"the signature does not match {GLOBAL_SECRET}")
        return None
    for app in apps:
        variable, secret = secret_for(app.name)
        if not secret:
            return _answer(403, error=f"no webhook secret for app {app.name!r}: set {secret_variable(app.name)} "
                                      f"(or {GLOBAL_SECRET} for every app) in Norn's environment")
        if not hooks.verify(body, given, secret):
            return _answer(403, error=f"the signature does not match the secret in {variable} (app {app.name!r})")
    return None


def _body_id(body: bytes) -> str:
    """For a sender without a delivery id header (GitLab before 17.4 may
    omit it): the same body is the same delivery."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _handle_push(provider, delivery_id, payload, apps):
    """(status, answer) for a verified push to the repository of `apps`."""
    try:
        push = push_event(provider, payload, AutoDeployTrigger.MAX_COMMITS)
    except BadPayload as exc:
        return 400, {"error": str(exc)}
    if not push.branch:
        return 202, {"result": "ignored", "reason": f"{push.ref[:200]} is not a branch (tag pushes do not deploy)"}
    if push.deleted:
        return 202, {"result": "ignored", "reason": f"branch {push.branch[:200]} was deleted"}
    results, status = [], 202
    for app in apps:
        repo = app.infraspec.repo
        entry = {"app": app.name}
        if not repo.auto_deploy:
            entry.update(result="ignored", reason="repo.autoDeploy is not true in its infraspec.yaml")
        elif push.branch != repo.branch:
            entry.update(result="ignored", reason=f"it deploys branch {repo.branch!r}, not {push.branch[:200]!r}")
        else:
            entry.update(_deploy(provider, delivery_id, app, push))
            if entry["result"] == "refused":
                status = 422
        results.append(entry)
    return status, {"result": "handled", "apps": results}


def _deploy(provider, delivery_id, app, push):
    request = autodeploy.Push(
        branch=push.branch, after=push.after, before=push.before, pusher=push.pusher, provider=provider,
        delivery_id=delivery_id, commits=tuple(push.commits), commits_total=push.commits_total,
    )
    try:
        outcome = autodeploy.deploy_commit(app, request, via="webhook")
    except DeployRequestError as exc:
        log.warning("webhook push of %s to %s not deployed: %s", push.after[:12], app.name, exc)
        return {"result": "refused", "message": str(exc)}
    autodeploy.note_seen(app, push.after)
    log.info("webhook push of %s to %s: %s", push.after[:12], app.name, outcome.message)
    return outcome.as_dict()
