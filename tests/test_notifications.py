"""Notifications of a deployment's end (deployments/notifications.py): real
HTTP receivers on 127.0.0.1 that check the signature the way
docs/notifications.md tells users to, a real SMTP conversation, Django's
locmem mail backend, the admin, and a real deployment through the pipeline."""

import hashlib
import hmac
import json
import socket
import socketserver
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth.models import Permission, User
from django.core import mail
from django.utils import timezone
from django_q.models import OrmQ, Schedule

from apps_registry import infraspec
from apps_registry.models import App
from deployments import notifications, tasks
from deployments.models import Deployment, NotificationDelivery

pytestmark = pytest.mark.django_db

SECRET = "s3cret-signing-key-for-tests"


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """As docs/notifications.md shows it: HMAC-SHA256 of the raw body, compared in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header or "")


class Receiver:
    """An HTTP server in a thread: each POST gets the next scripted answer
    (status, body, headers, seconds to wait first); requests are recorded."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                answer = receiver.answers.pop(0) if receiver.answers else (200, "ok")
                status, text, headers, wait = answer + (200, "", {}, 0)[len(answer):]
                time.sleep(wait)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text.encode())
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_port}/hooks/norn?team=ops"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(*answers):
        made.append(Receiver(*answers))
        return made[-1]

    yield make
    for r in made:
        r.close()


def registered_app(name="shop", notify="  - hook\n"):
    result = infraspec.parse(f"app: {name}\nrole: worker\nnotify:\n{notify}", "infraspec.yaml")
    assert result.ok, result.errors
    return App.objects.create(name=name, directory=f"/nonexistent/{name}", status="valid", role="worker",
                              spec=result.data)


def ended(app, status="failed", kind="deploy", error="test failed: sh exited with status 3"):
    now = timezone.now()
    return Deployment.objects.create(
        app=app, status=status, kind=kind, ref="main", commit_sha="ab" * 20, image=f"{app.name}:abc",
        error=error, requested_by_name="alice", started_at=now - timedelta(seconds=42), finished_at=now,
    )


@pytest.fixture
def hook(monkeypatch):
    def configure(url, secret=SECRET, name="HOOK"):
        monkeypatch.setenv(f"NORN_NOTIFY_{name}_URL", url)
        monkeypatch.setenv(f"NORN_NOTIFY_{name}_SECRET", secret)
    return configure


def only_delivery(deployment):
    [delivery_id] = notifications.record(deployment.pk)
    return delivery_id


def assert_no_secret_stored(*secrets):
    rows = list(NotificationDelivery.objects.values_list("target", "kind", "event", "error"))
    rows += list(Schedule.objects.values_list("name", "args"))
    for secret in secrets:
        assert secret not in repr(rows)


def test_webhook_is_signed_and_retried_after_500s_until_it_is_sent(receiver, hook):
    r = receiver((500, "boom"), (502, ""), (200, "thanks"))
    hook(r.url)
    deployment = ended(registered_app())
    delivery_id = only_delivery(deployment)

    started = timezone.now()
    assert tasks.send_notification(delivery_id, 1) == "pending"
    delivery = NotificationDelivery.objects.get(pk=delivery_id)
    assert (delivery.attempts, delivery.response_code) == (1, 500)
    assert delivery.error == "attempt 1: the target answered 500: boom; next attempt in 10 s"
    retry = Schedule.objects.get(name=f"notify-{delivery_id}-2")
    assert (retry.func, retry.args, retry.schedule_type) == ("deployments.tasks.send_notification",
                                                             f"{delivery_id}, 2", Schedule.ONCE)
    assert timedelta(seconds=9) < retry.next_run - started < timedelta(seconds=15)

    assert tasks.send_notification(delivery_id, 2) == "pending"
    retry = Schedule.objects.get(name=f"notify-{delivery_id}-3")
    assert timedelta(seconds=29) < retry.next_run - started < timedelta(seconds=40)
    assert tasks.send_notification(delivery_id, 3) == "sent"

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code, delivery.kind) == ("sent", 3, 200, "webhook")
    assert delivery.sent_at and delivery.error == ""
    assert len(r.requests) == 3
    for request in r.requests:
        assert request["path"] == "/hooks/norn?team=ops"
        assert verify_signature(SECRET, request["body"], request["headers"]["X-Norn-Signature"])
        assert request["headers"]["X-Norn-Event"] == "failed"
        assert request["headers"]["X-Norn-Delivery"] == str(delivery.public_id)
        assert request["headers"]["Content-Type"] == "application/json"
    body = json.loads(r.requests[-1]["body"])
    assert body["event"] == "failed" and body["app"] == "shop" and body["delivery"] == str(delivery.public_id)
    assert body["deployment"]["id"] == str(deployment.public_id)
    assert body["deployment"]["error"] == "test failed: sh exited with status 3"
    assert body["deployment"]["duration_seconds"] == pytest.approx(42, abs=1)
    assert body["deployment"]["requested_by"] == "alice via cli"
    # Signed with another key, the same body does not verify.
    assert not verify_signature("another-key", r.requests[-1]["body"], r.requests[-1]["headers"]["X-Norn-Signature"])
    assert_no_secret_stored(SECRET, r.url, "/hooks/norn")


def test_a_repeated_task_makes_no_second_attempt(receiver, hook):
    r = receiver((200, "ok"))
    hook(r.url)
    delivery_id = only_delivery(ended(registered_app()))
    assert tasks.send_notification(delivery_id, 1) == "sent"
    assert tasks.send_notification(delivery_id, 1) == "skipped"
    assert len(r.requests) == 1


def test_a_400_is_not_retried(receiver, hook):
    r = receiver((400, "invalid_payload"))
    hook(r.url)
    delivery_id = only_delivery(ended(registered_app()))
    assert tasks.send_notification(delivery_id, 1) == "failed"
    delivery = NotificationDelivery.objects.get(pk=delivery_id)
    assert (delivery.attempts, delivery.response_code) == (1, 400)
    assert delivery.error == "the target answered 400: invalid_payload"
    assert not Schedule.objects.filter(name__startswith=f"notify-{delivery_id}-").exists()


def test_a_target_that_hangs_times_out_and_is_retried(receiver, hook, settings):
    settings.NORN_NOTIFY_TIMEOUT = 1
    r = receiver((200, "late", {}, 4))
    hook(r.url)
    delivery_id = only_delivery(ended(registered_app()))
    started = time.monotonic()
    assert tasks.send_notification(delivery_id, 1) == "pending"
    assert time.monotonic() - started < 3
    delivery = NotificationDelivery.objects.get(pk=delivery_id)
    assert delivery.error == "attempt 1: no answer within 1 s; next attempt in 10 s"
    assert delivery.response_code is None
    assert Schedule.objects.filter(name=f"notify-{delivery_id}-2").exists()


def test_429_waits_as_long_as_retry_after_asks(receiver, hook):
    r = receiver((429, "slow down", {"Retry-After": "120"}))
    hook(r.url)
    delivery_id = only_delivery(ended(registered_app()))
    started = timezone.now()
    assert tasks.send_notification(delivery_id, 1) == "pending"
    retry = Schedule.objects.get(name=f"notify-{delivery_id}-2")
    assert timedelta(seconds=119) < retry.next_run - started < timedelta(seconds=130)


def test_it_gives_up_after_the_last_delay(receiver, hook, settings):
    settings.NORN_NOTIFY_RETRY_DELAYS = (1,)
    r = receiver((503, ""), (503, "still down"))
    hook(r.url)
    delivery_id = only_delivery(ended(registered_app()))
    assert tasks.send_notification(delivery_id, 1) == "pending"
    assert tasks.send_notification(delivery_id, 2) == "failed"
    delivery = NotificationDelivery.objects.get(pk=delivery_id)
    assert delivery.attempts == 2
    assert delivery.error == "the target answered 503: still down (gave up after 2 attempts)"


def test_an_unreachable_target_is_retried_without_its_url_in_the_error(hook):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    hook(f"http://127.0.0.1:{port}/secret-path-token")
    delivery_id = only_delivery(ended(registered_app()))
    assert tasks.send_notification(delivery_id, 1) == "pending"
    delivery = NotificationDelivery.objects.get(pk=delivery_id)
    assert delivery.error.startswith("attempt 1: could not reach the target: ConnectionRefusedError")
    assert_no_secret_stored("secret-path-token", SECRET)


def test_slack_gets_text_and_blocks(receiver, monkeypatch, settings):
    settings.NORN_URL = "https://norn.example.com/"
    r = receiver((200, "ok"))
    monkeypatch.setenv("NORN_NOTIFY_OPS_SLACK_URL", r.url)
    monkeypatch.setenv("NORN_NOTIFY_OPS_SLACK_KIND", "slack")
    app = registered_app(notify="  - target: ops-slack\n    events: [failed, rolled_back]\n")
    deployment = ended(app, error="build failed: <!channel> & friends")
    assert tasks.send_notification(only_delivery(deployment), 1) == "sent"
    [request] = r.requests
    assert "X-Norn-Signature" not in request["headers"]
    body = json.loads(request["body"])
    assert body["text"] == "shop: deployment failed"
    assert [b["type"] for b in body["blocks"]] == ["section", "section", "section", "context"]
    assert body["blocks"][0]["text"] == {"type": "mrkdwn", "text": "*shop: deployment failed*"}
    fields = [f["text"] for f in body["blocks"][1]["fields"]]
    assert "*Ref:* main" in fields and "*Requested by:* alice via cli" in fields
    # Slack's markup characters in the error are escaped: no one is pinged.
    assert body["blocks"][2]["text"]["text"] == "```build failed: &lt;!channel&gt; &amp; friends```"
    link = f"https://norn.example.com/deployments/{deployment.public_id}/"
    assert body["blocks"][3]["elements"][0]["text"] == f"<{link}|Deployment {str(deployment.public_id)[:8]}>"


def test_the_kind_follows_the_variables_that_are_set():
    t = notifications.target
    assert t("ops", {"NORN_NOTIFY_OPS_URL": "https://hooks.slack.com/services/T/B/x"}).kind == "slack"
    assert t("ops", {"NORN_NOTIFY_OPS_URL": "https://example.com/h", "NORN_NOTIFY_OPS_SECRET": "k" * 8}).kind \
        == "webhook"
    assert t("ops", {"NORN_NOTIFY_OPS_EMAIL": "a@example.com, b@example.com"}).emails == (
        "a@example.com", "b@example.com")
    assert t("ops-mail", {}).problem == (
        "not configured: set NORN_NOTIFY_OPS_MAIL_URL (and NORN_NOTIFY_OPS_MAIL_SECRET) for a webhook, "
        "NORN_NOTIFY_OPS_MAIL_URL and NORN_NOTIFY_OPS_MAIL_KIND=slack for Slack, or NORN_NOTIFY_OPS_MAIL_EMAIL")
    assert t("ops", {"NORN_NOTIFY_OPS_URL": "https://example.com/h"}).problem == (
        "not configured: set NORN_NOTIFY_OPS_SECRET (the key the payload is signed with)")
    assert t("ops", {"NORN_NOTIFY_OPS_KIND": "pager"}).problem == (
        "NORN_NOTIFY_OPS_KIND='pager' is not a kind; use webhook, slack or email")
    assert t("ops", {"NORN_NOTIFY_OPS_URL": "ftp://x/secret", "NORN_NOTIFY_OPS_KIND": "slack"}).problem == (
        "NORN_NOTIFY_OPS_URL is not an http(s) URL; use http(s)://HOST[:PORT]/PATH")
    assert t("ops", {"NORN_NOTIFY_OPS_EMAIL": "a@example.com,not-an-address"}).problem == (
        "NORN_NOTIFY_OPS_EMAIL: entry 2 is not an email address")


def test_email_goes_through_djangos_mail_backend(monkeypatch, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.NORN_NOTIFY_EMAIL_FROM = "norn@example.com"
    monkeypatch.setenv("NORN_NOTIFY_TEAM_EMAIL", "ops@example.com, dev@example.com")
    app = registered_app(notify="  - target: team\n    events: [rolled_back]\n")
    delivery_id = only_delivery(ended(app, status="deployed", kind="rollback", error=""))
    assert tasks.send_notification(delivery_id, 1) == "sent"
    [message] = mail.outbox
    assert message.subject == "[Norn] shop rolled back"
    assert (message.from_email, message.to) == ("norn@example.com", ["ops@example.com", "dev@example.com"])
    assert "Kind: rollback" in message.body and "Requested by: alice via cli" in message.body
    assert message.extra_headers["X-Norn-Event"] == "rolled_back"
    assert NotificationDelivery.objects.get(pk=delivery_id).kind == "email"
    assert_no_secret_stored("ops@example.com")


class SMTPServer:
    """A small real SMTP server: answers RCPT TO with `rcpt_reply`, keeps what DATA carried."""

    def __init__(self, rcpt_reply="250 ok"):
        self.messages = []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write(b"220 test ESMTP\r\n")
                while line := self.rfile.readline():
                    verb = line[:4].upper()
                    if verb == b"EHLO" or verb == b"HELO":
                        self.wfile.write(b"250 test\r\n")
                    elif verb == b"RCPT":
                        self.wfile.write(rcpt_reply.encode() + b"\r\n")
                    elif verb == b"DATA":
                        self.wfile.write(b"354 go on\r\n")
                        data = b""
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            data += chunk
                        outer.messages.append(data)
                        self.wfile.write(b"250 queued\r\n")
                    elif verb == b"QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 ok\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("reply, status", [("250 ok", "sent"), ("550 no such user", "failed"),
                                           ("451 try later", "pending")])
def test_email_over_real_smtp(monkeypatch, settings, reply, status):
    smtp = SMTPServer(reply)
    try:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        monkeypatch.setenv("NORN_NOTIFY_TEAM_EMAIL", "ops@example.com")
        app = registered_app(notify="  - team\n")
        delivery_id = only_delivery(ended(app))
        assert tasks.send_notification(delivery_id, 1) == status
        delivery = NotificationDelivery.objects.get(pk=delivery_id)
        if status == "sent":
            [data] = smtp.messages
            assert b"Subject: [Norn] shop: deployment failed" in data
        else:
            assert smtp.messages == []
            assert delivery.response_code == int(reply[:3])
            assert "ops@example.com" not in delivery.error
    finally:
        smtp.close()


def test_events_follow_the_kind_and_the_targets_choice(monkeypatch):
    assert notifications.event_for("deployed", "deploy") == "deployed"
    assert notifications.event_for("deployed", "rollback") == "rolled_back"
    assert notifications.event_for("deployed", "restore") == "restored"
    assert notifications.event_for("failed", "restore") == "failed"
    assert notifications.event_for("cancelled", "deploy") == "cancelled"
    monkeypatch.setenv("NORN_NOTIFY_FAILS_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("NORN_NOTIFY_FAILS_SECRET", SECRET)
    app = registered_app(notify="  - target: fails\n    events: [failed, cancelled]\n")
    assert notifications.record(ended(app, status="deployed").pk) == []
    # A terminal status this module does not name is announced by its name, when asked for.
    cancelled = ended(app, status="cancelled")
    [delivery_id] = notifications.record(cancelled.pk)
    assert NotificationDelivery.objects.get(pk=delivery_id).event == "cancelled"
    # Not ended yet: nothing.
    other = registered_app("other", notify="  - fails\n")
    running = Deployment.objects.create(app=other, status="building", started_at=timezone.now())
    assert notifications.record(running.pk) == []


def test_each_target_is_told_once_per_deployment(hook):
    hook("http://127.0.0.1:9/")
    deployment = ended(registered_app())
    assert len(notifications.record(deployment.pk)) == 1
    assert notifications.record(deployment.pk) == []
    assert NotificationDelivery.objects.filter(deployment=deployment).count() == 1


def test_deployment_ended_queues_a_task_after_commit(hook, django_capture_on_commit_callbacks):
    hook("http://127.0.0.1:9/")
    deployment = ended(registered_app())
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        notifications.deployment_ended(deployment.pk)
    assert not NotificationDelivery.objects.exists()  # nothing before the commit
    for callback in callbacks:
        callback()
    delivery = NotificationDelivery.objects.get()
    [queued] = [q for q in OrmQ.objects.all() if q.task.get("func") == "deployments.tasks.send_notification"]
    assert queued.task["args"] == (delivery.pk, 1)


def test_a_target_with_no_configuration_is_recorded_and_warned_about():
    app = registered_app(notify="  - target: ops-pager\n")
    deployment = ended(app)
    assert notifications.record(deployment.pk) == []
    delivery = NotificationDelivery.objects.get(deployment=deployment)
    assert (delivery.status, delivery.kind, delivery.attempts) == ("not_configured", "", 0)
    assert delivery.error.startswith("not configured: set NORN_NOTIFY_OPS_PAGER_URL")
    [warning] = notifications.check_notify_targets()
    assert warning.id == "norn.W010"
    assert warning.msg.startswith("notification target 'ops-pager' (named by shop): not configured: set ")


def test_the_admin_lists_deliveries_and_sends_again(client, receiver, hook):
    r = receiver((400, "nope"), (200, "ok"))
    hook(r.url)
    delivery_id = only_delivery(ended(registered_app()))
    assert tasks.send_notification(delivery_id, 1) == "failed"
    admin = User.objects.create_superuser("root", password="x")
    client.force_login(admin)
    url = "/admin/deployments/notificationdelivery/"
    page = client.get(url, {"status": "failed", "target": "hook"})
    assert page.status_code == 200
    assert b"the target answered 400: nope" in page.content
    assert client.get(f"{url}{delivery_id}/change/").status_code == 200
    assert client.get(f"{url}add/").status_code == 403

    response = client.post(url, {"action": "send_again", "_selected_action": [delivery_id]}, follow=True)
    assert b"Queued 1 notification(s) again." in response.content
    delivery = NotificationDelivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.attempts, delivery.error) == ("pending", 0, "")
    assert tasks.send_notification(delivery_id, 1) == "sent"


def test_send_again_needs_its_permission(client):
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_notificationdelivery"))
    client.force_login(viewer)
    page = client.get("/admin/deployments/notificationdelivery/")
    assert page.status_code == 200
    assert b"send_again" not in page.content
    viewer.user_permissions.add(Permission.objects.get(codename="send_notification"))
    assert b"send_again" in client.get("/admin/deployments/notificationdelivery/").content


DOCKERFILE = "FROM norn-busybox:1\nCOPY . /app\nCMD [\"sh\", \"-c\", \"sleep 3600\"]\n"


@pytest.mark.django_db(transaction=True)
def test_a_real_deployment_ends_and_its_notice_arrives_without_waiting_for_the_target(
    make_app, deploy_now, busybox_image, receiver, hook, settings,
):
    """The pipeline queues the notice as a task and returns; the receiver,
    which hangs on the first attempt, holds up only that task."""
    settings.NORN_NOTIFY_TIMEOUT = 1
    r = receiver((200, "too late", {}, 5), (200, "ok"))
    hook(r.url)
    make_app("nfail", (
        "app: nfail\nrole: worker\nbuild:\n  dockerfile: Dockerfile\n  test: 'exit 3'\n"
        "notify:\n  - target: hook\n    events: [failed]\n"
    ), {"Dockerfile": DOCKERFILE})
    deployment = deploy_now("nfail")
    assert deployment.status == "failed"
    assert r.requests == []  # the deploy ended without a word to the target

    delivery = NotificationDelivery.objects.get(deployment=deployment)
    assert (delivery.status, delivery.event, delivery.attempts) == ("pending", "failed", 0)
    # The task the worker would run, as the pipeline queued it.
    [queued] = [q for q in OrmQ.objects.all() if q.task.get("func") == "deployments.tasks.send_notification"]
    assert queued.task["args"] == (delivery.pk, 1)

    started = time.monotonic()
    assert tasks.send_notification(*queued.task["args"]) == "pending"
    assert time.monotonic() - started < 3
    assert Schedule.objects.filter(name=f"notify-{delivery.pk}-2").exists()
    assert tasks.send_notification(delivery.pk, 2) == "sent"

    assert len(r.requests) == 2
    last = r.requests[-1]
    assert verify_signature(SECRET, last["body"], last["headers"]["X-Norn-Signature"])
    body = json.loads(last["body"])
    assert (body["event"], body["app"], body["deployment"]["id"]) == ("failed", "nfail", str(deployment.public_id))
    assert body["deployment"]["error"].startswith("test failed: sh exited with status 3")
    assert body["deployment"]["commit_sha"] == deployment.commit_sha


def test_send_again_picks_up_a_target_configured_since(receiver, hook):
    deployment = ended(registered_app())
    assert notifications.record(deployment.pk) == []  # HOOK not configured yet
    delivery = NotificationDelivery.objects.get(deployment=deployment)
    assert delivery.status == "not_configured"
    assert notifications.send_again([delivery]) == (0, 0)  # still not configured: nothing queued
    r = receiver((200, "ok"))
    hook(r.url)
    assert notifications.send_again([NotificationDelivery.objects.get(pk=delivery.pk)]) == (1, 0)
    assert tasks.send_notification(delivery.pk, 1) == "sent"
    assert len(r.requests) == 1
    # A pending delivery is left to its queued attempt.
    NotificationDelivery.objects.filter(pk=delivery.pk).update(status="pending")
    assert notifications.send_again([NotificationDelivery.objects.get(pk=delivery.pk)]) == (0, 1)


def test_an_unknown_deployment_records_nothing():
    assert notifications.record(10**9) == []


@pytest.mark.parametrize("name, value, expected", [
    ("NORN_NOTIFY_RETRY_DELAYS", "10,soon", "NORN_NOTIFY_RETRY_DELAYS: 'soon' is not a delay; use whole seconds "
                                            "from 1 to 86400, comma-separated, e.g. 10,30,120,600"),
    ("NORN_NOTIFY_RETRY_DELAYS", ",".join(["5"] * 11), "NORN_NOTIFY_RETRY_DELAYS lists 11 delays; at most 10 retries"),
    ("NORN_NOTIFY_TIMEOUT", "0", "NORN_NOTIFY_TIMEOUT='0' is out of range"),
    ("NORN_NOTIFY_EMAIL_FROM", "norn", "NORN_NOTIFY_EMAIL_FROM='norn' is not an email address"),
    ("EMAIL_PORT", "smtp", "EMAIL_PORT='smtp' is not a whole number"),
])
def test_bad_notification_settings_stop_norn_naming_the_variable(name, value, expected):
    from tests.test_settings import run_manage

    result = run_manage("check", **{name: value})
    assert result.returncode == 2
    assert "Norn is misconfigured: " + expected in result.stderr
    assert "Traceback" not in result.stderr


def test_a_queued_deployment_cancelled_is_announced_as_cancelled(hook, django_capture_on_commit_callbacks):
    from deployments import transitions

    hook("http://127.0.0.1:9/")
    app = registered_app(notify="  - target: hook\n    events: [cancelled, failed]\n")
    deployment = transitions.create(app, "HEAD", name="alice", via="cli", runtime="docker")
    with django_capture_on_commit_callbacks(execute=True):
        assert transitions.request_cancel(deployment, "bob") == "cancelled"
    delivery = NotificationDelivery.objects.get(deployment=deployment)
    assert (delivery.target, delivery.event) == ("hook", "cancelled")


def test_a_deployment_crash_recovery_fails_is_announced(hook, django_capture_on_commit_callbacks):
    from deployments import recovery, transitions

    hook("http://127.0.0.1:9/")
    app = registered_app()
    deployment = transitions.create(app, "HEAD", name="alice", via="cli", runtime="docker")
    # Claimed by a worker that then died (a pid no process has).
    assert transitions.claim(deployment.pk, "elsewhere:999999:dead")
    deployment.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        assert recovery.fail(deployment)
    delivery = NotificationDelivery.objects.get(deployment=deployment)
    assert (delivery.target, delivery.event) == ("hook", "failed")
