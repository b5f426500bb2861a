"""The polling fallback: `git ls-remote` of each autoDeploy app's branch on a
django-q2 schedule, against real repositories (a local one, and a private
one over HTTPS with a token), backing off while one cannot be reached."""

import logging
import secrets
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.models import Schedule

from apps_registry.models import App
from deployments import autodeploy, tasks
from deployments.models import AutoDeployState, AutoDeployTrigger, Deployment
from tests.support.dashboard import make_deployment
from tests.support.git_servers import GitHttpServer, make_repo
from tests.test_webhooks import spec

pytestmark = pytest.mark.django_db


@pytest.fixture
def repo(tmp_path):
    repo = make_repo(tmp_path / "repos", "web", {"README": "one\n"})
    repo.first = repo.head()
    return repo


@pytest.fixture
def polling(settings, norn_dirs):
    settings.NORN_POLL_INTERVAL = 60
    return settings


def due_again(app):
    AutoDeployState.objects.filter(app=app).update(next_check_at=timezone.now() - timedelta(seconds=1))


def test_the_schedule_exists_and_names_the_poll_task(polling):
    schedule = Schedule.objects.get(name="norn-autodeploy-poll")
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 1 and schedule.repeats == -1
    assert import_string(schedule.func) is tasks.poll_autodeploy
    assert tasks.poll_autodeploy() == {"polled": 0, "results": {}}


def test_the_poll_task_forgets_webhook_deliveries_after_30_days_a_batch_at_a_time(settings, monkeypatch):
    from deployments.models import WebhookDelivery

    settings.NORN_POLL_INTERVAL = 0  # polling off: the schedule still runs, and forgets
    now = timezone.now()
    for i, age in enumerate([31, 40, 400, 29, 0]):
        row = WebhookDelivery.objects.create(provider="github", delivery_id=f"d{i}", status_code=200)
        WebhookDelivery.objects.filter(pk=row.pk).update(received_at=now - timedelta(days=age))
    monkeypatch.setattr(autodeploy, "FORGET_BATCH", 2)
    assert tasks.poll_autodeploy() == {"polled": 0, "off": True, "forgotten_deliveries": 2}
    assert tasks.poll_autodeploy() == {"polled": 0, "off": True, "forgotten_deliveries": 1}
    assert tasks.poll_autodeploy() == {"polled": 0, "off": True}
    assert sorted(WebhookDelivery.objects.values_list("delivery_id", flat=True)) == ["d3", "d4"]


def test_polling_off_polls_nothing(make_app, repo, settings):
    settings.NORN_POLL_INTERVAL = 0
    make_app("web", spec(repo.file_url))
    assert autodeploy.poll_due_apps() == {"polled": 0, "off": True}
    assert AutoDeployState.objects.count() == 0


def test_a_moved_branch_is_deployed_once(make_app, repo, polling):
    make_app("web", spec(repo.file_url))
    make_app("manual", spec(repo.file_url, auto=False, name="manual"))
    app = App.objects.get(name="web")
    # First sight of an app never deployed: noted, not deployed.
    result = autodeploy.poll_due_apps()
    assert result["polled"] == 1 and "first sight" in result["results"]["web"]
    state = AutoDeployState.objects.get(app=app)
    assert state.last_seen_sha == repo.first
    assert state.next_check_at > timezone.now() + timedelta(seconds=50)
    # Not due yet: not polled.
    second = repo.commit({"README": "two\n"}, "two")
    assert autodeploy.poll_due_apps()["polled"] == 0
    due_again(app)
    autodeploy.poll_due_apps()
    deployment = Deployment.objects.get()
    assert deployment.ref == second and deployment.requested_via == "poll"
    assert deployment.requested_by_label == "system via poll"
    trigger = AutoDeployTrigger.objects.get()
    assert (trigger.source, trigger.before, trigger.after, trigger.action) == ("poll", repo.first, second, "queued")
    due_again(app)
    assert autodeploy.poll_due_apps()["results"]["web"] == "unchanged"
    assert Deployment.objects.count() == 1


def test_first_sight_deploys_when_the_live_commit_differs(make_app, repo, polling):
    make_app("web", spec(repo.file_url))
    app = App.objects.get(name="web")
    make_deployment(app, commit="e" * 40, image="web:old")
    autodeploy.poll_due_apps()
    queued = Deployment.objects.filter(requested_via="poll").get()
    assert queued.ref == repo.first


def test_a_commit_already_live_is_not_deployed_again(make_app, repo, polling):
    make_app("web", spec(repo.file_url))
    app = App.objects.get(name="web")
    make_deployment(app, commit=repo.first, image="web:1")
    autodeploy.poll_due_apps()
    assert not Deployment.objects.filter(requested_via="poll").exists()


def test_a_push_the_webhook_delivered_is_not_polled_again(make_app, repo, polling, monkeypatch):
    from tests.test_webhooks import github_push, post

    monkeypatch.setenv("NORN_WEBHOOK_SECRET", "s" * 20)
    make_app("web", spec(repo.file_url))
    second = repo.commit({"README": "two\n"}, "two")
    assert post("github", github_push(repo.file_url, second), secret="s" * 20).status_code == 202
    assert autodeploy.poll_due_apps()["results"]["web"] == "unchanged"
    assert Deployment.objects.count() == 1


def test_an_unreachable_repository_backs_off_and_is_logged_once(make_app, tmp_path, polling, caplog):
    make_app("web", spec((tmp_path / "gone.git").as_uri()))
    app = App.objects.get(name="web")
    caplog.set_level(logging.WARNING, logger="deployments.autodeploy")
    waits = []
    for _ in range(3):
        due_again(app)
        before = timezone.now()
        assert autodeploy.poll_due_apps()["results"]["web"].startswith("error: could not list")
        state = AutoDeployState.objects.get(app=app)
        waits.append(round((state.next_check_at - before).total_seconds() / 60))
    assert waits == [2, 4, 8]  # minutes: NORN_POLL_INTERVAL doubled per failure
    assert state.failures == 3 and "gone.git" in state.last_error
    assert len([r for r in caplog.records if "poll of web failed" in r.getMessage()]) == 1
    # Capped at an hour.
    polling.NORN_POLL_INTERVAL = 3600
    due_again(app)
    autodeploy.poll_due_apps()
    state = AutoDeployState.objects.get(app=app)
    assert state.next_check_at - timezone.now() <= timedelta(hours=1)
    # A missing branch is an error that says so.
    repo = make_repo(tmp_path / "repos", "web", {"README": "one\n"})
    make_app("web", spec(repo.file_url, branch="release"))
    due_again(app)
    assert "branch 'release' does not exist" in autodeploy.poll_due_apps()["results"]["web"]
    # Working again: the failures are forgotten.
    make_app("web", spec(repo.file_url))
    due_again(app)
    autodeploy.poll_due_apps()
    state = AutoDeployState.objects.get(app=app)
    assert (state.failures, state.last_error, state.last_seen_sha) == (0, "", repo.head())


def test_a_private_repository_is_polled_with_its_token_never_in_a_url(make_app, tmp_path, polling):
    token = "poll-token-" + secrets.token_hex(8)
    repo = make_repo(tmp_path / "repos", "web", {"README": "one\n"})
    with GitHttpServer(tmp_path / "repos", token=token, tls=True) as server:
        polling.NORN_GIT_CREDENTIALS = {server.host_port: token}
        polling.NORN_GIT_CA_FILE = server.ca_file
        make_app("web", spec(server.url_for("web")))
        app = App.objects.get(name="web")
        make_deployment(app, commit="e" * 40, image="web:old")
        result = autodeploy.poll_due_apps()["results"]["web"]
        assert "queued" in result, result
        assert any(r.authorized for r in server.requests)
        assert all(token not in r.path for r in server.requests)
        # A wrong token: refused, and the error does not show it.
        polling.NORN_GIT_CREDENTIALS = {server.host_port: token + "-wrong"}
        due_again(app)
        assert autodeploy.poll_due_apps()["results"]["web"].startswith("error")
        error = AutoDeployState.objects.get(app=app).last_error
        assert token not in error and token + "-wrong" not in error
