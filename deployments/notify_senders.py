"""How a deployment's end is told to one target: the payloads of the three
kinds (a signed JSON webhook, a Slack-compatible incoming webhook, an email)
and the one attempt that sends it. deployments/notifications.py decides when,
records each attempt and retries; docs/notifications.md shows the payloads.

Every send returns a Result instead of raising: whether it arrived, the
target's answer, and whether trying again later could help (a connection
error, a timeout, 429 or 5xx; never another 4xx).
"""

import hashlib
import hmac
import http.client
import json
import smtplib
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMessage, get_connection

KINDS = ("webhook", "slack", "email")
USER_AGENT = "Norn-Notify/1"
# The most of a target's answer read and kept (in the error, cut again there).
MAX_ANSWER = 4096
# Retry-After is honoured up to this many seconds.
MAX_RETRY_AFTER = 3600

HEADLINES = {
    "deployed": "{app} deployed",
    "failed": "{app}: deployment failed",
    "rolled_back": "{app} rolled back",
    "restored": "{app} restored from a snapshot",
}


@dataclass(frozen=True)
class Result:
    sent: bool
    code: int | None = None  # the HTTP status or SMTP reply code, if there was one
    error: str = ""
    retry: bool = False  # a later attempt may succeed
    retry_after: int | None = None  # seconds the target asked for (429's Retry-After)


def headline(event: str, app: str) -> str:
    return HEADLINES.get(event, "{app}: deployment {event}").format(app=app, event=event.replace("_", " "))


def payload(delivery, deployment_url: str) -> dict:
    """The generic webhook's JSON: the event and the deployment as it ended."""
    d = delivery.deployment
    duration = (d.finished_at - d.started_at).total_seconds() if d.finished_at and d.started_at else None
    return {
        "event": delivery.event,
        "delivery": str(delivery.public_id),
        "app": d.app.name,
        "deployment": {
            "id": str(d.public_id),
            "url": deployment_url,
            "kind": d.kind,
            "status": d.status,
            "ref": d.ref,
            "commit_sha": d.commit_sha,
            "image": d.image,
            "error": d.error[:2000],
            "requested_by": d.requested_by_label,
            "queued_at": _iso(d.queued_at),
            "started_at": _iso(d.started_at),
            "finished_at": _iso(d.finished_at),
            "duration_seconds": duration,
        },
    }


def _iso(value):
    return value.isoformat() if value else None


def signature(secret: str, body: bytes) -> str:
    """X-Norn-Signature: HMAC-SHA256 of the raw body, keyed with the target's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def slack_escape(text: str) -> str:
    # Slack reads &, < and > as markup (<!channel> would ping everyone).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(data: dict) -> dict:
    """Slack's incoming-webhook message: `text` (the notification's fallback)
    and `blocks` with the details."""
    d = data["deployment"]
    title = headline(data["event"], data["app"])
    facts = [f"*{name}:* {slack_escape(str(value))}" for name, value in (
        ("Kind", d["kind"]), ("Ref", d["ref"]), ("Commit", (d["commit_sha"] or "")[:12] or "unknown"),
        ("Requested by", d["requested_by"] or "unknown"),
    )]
    if d["duration_seconds"] is not None:
        facts.append(f"*Took:* {round(d['duration_seconds'])} s")
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{slack_escape(title)}*"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": fact} for fact in facts]},
    ]
    if d["error"]:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": "```" + slack_escape(d["error"][:2800]) + "```"}})
    if d["url"]:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"<{d['url']}|Deployment {d['id'][:8]}>"}]})
    return {"text": slack_escape(title), "blocks": blocks}


def email_text(data: dict) -> tuple[str, str]:
    """(subject, body) of the email."""
    d = data["deployment"]
    lines = [headline(data["event"], data["app"]), ""]
    for name, key in (("Kind", "kind"), ("Status", "status"), ("Ref", "ref"), ("Commit", "commit_sha"),
                      ("Image", "image"), ("Requested by", "requested_by"), ("Finished", "finished_at")):
        if d[key]:
            lines.append(f"{name}: {d[key]}")
    if d["duration_seconds"] is not None:
        lines.append(f"Took: {round(d['duration_seconds'])} s")
    if d["error"]:
        lines += ["", "Error:", d["error"]]
    if d["url"]:
        lines += ["", d["url"]]
    lines += ["", f"Delivery {data['delivery']}"]
    return f"[Norn] {headline(data['event'], data['app'])}", "\n".join(lines) + "\n"


def post_json(url: str, body: bytes, headers: dict) -> Result:
    """POST `body` to `url`: one attempt, no redirects followed, bounded by
    NORN_NOTIFY_TIMEOUT for the connection and for each read."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    timeout = settings.NORN_NOTIFY_TIMEOUT
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT, **headers,
        })
        response = conn.getresponse()
        answer = response.read(MAX_ANSWER).decode("utf-8", "replace").strip()
        code, retry_after = response.status, response.getheader("Retry-After")
    except (TimeoutError, socket.timeout):
        return Result(False, error=f"no answer within {timeout} s", retry=True)
    except (OSError, http.client.HTTPException) as exc:
        return Result(False, error=f"could not reach the target: {exc.__class__.__name__}: {exc}", retry=True)
    finally:
        conn.close()
    if 200 <= code < 300:
        return Result(True, code)
    retry = code == 429 or code >= 500
    wait = int(retry_after) if retry_after and retry_after.isdigit() else None
    said = f": {answer[:200]}" if answer else ""
    return Result(False, code, f"the target answered {code}{said}", retry=retry,
                  retry_after=min(wait, MAX_RETRY_AFTER) if wait is not None and retry else None)


def send_webhook(target, data: dict) -> Result:
    body = json.dumps(data, separators=(",", ":")).encode()
    return post_json(target.url, body, {
        "X-Norn-Event": data["event"],
        "X-Norn-Delivery": data["delivery"],
        "X-Norn-Signature": signature(target.secret, body),
    })


def send_slack(target, data: dict) -> Result:
    return post_json(target.url, json.dumps(slack_payload(data)).encode(), {})


def send_email(target, data: dict) -> Result:
    """Through Django's mail settings (EMAIL_BACKEND, EMAIL_HOST, ...), from
    NORN_NOTIFY_EMAIL_FROM to the target's addresses."""
    subject, body = email_text(data)
    message = EmailMessage(subject, body, settings.NORN_NOTIFY_EMAIL_FROM, list(target.emails),
                           headers={"X-Norn-Event": data["event"], "X-Norn-Delivery": data["delivery"]})
    try:
        get_connection(timeout=settings.NORN_NOTIFY_TIMEOUT).send_messages([message])
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        return Result(False, max(codes, default=None), f"the mail server refused the recipients ({codes})",
                      retry=any(400 <= code < 500 for code in codes))
    except smtplib.SMTPResponseException as exc:
        return Result(False, exc.smtp_code, f"the mail server answered {exc.smtp_code}: {_text(exc.smtp_error)}",
                      retry=not 500 <= exc.smtp_code < 600)
    except (TimeoutError, socket.timeout):
        return Result(False, error=f"the mail server gave no answer within {settings.NORN_NOTIFY_TIMEOUT} s",
                      retry=True)
    except (OSError, smtplib.SMTPException) as exc:
        return Result(False, error=f"could not send the email: {exc.__class__.__name__}: {exc}", retry=True)
    return Result(True)


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


SENDERS = {"webhook": send_webhook, "slack": send_slack, "email": send_email}
