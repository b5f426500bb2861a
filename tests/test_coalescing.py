"""Coalescing: pushes that arrive while a deploy of the app waits collapse into
one deploy of the newest commit, which records every push it covers."""

import threading

import pytest
from django.db import connection

from apps_registry.models import App
from deployments import autodeploy, transitions
from deployments.models import AutoDeployTrigger, Deployment, DeploymentStatus, Event
from tests.support.git_servers import make_repo
from tests.test_webhooks import github_push, gitlab_push, post, spec

pytestmark = pytest.mark.django_db


@pytest.fixture
def repo(tmp_path):
    repo = make_repo(tmp_path / "repos", "web", {"README": "one\n"})
    repo.shas = [repo.head()] + [repo.commit({"README": f"{n}\n"}, f"change {n}") for n in range(2, 5)]
    return repo


@pytest.fixture
def web(make_app, repo, monkeypatch):
    from tests.test_webhooks import SECRET

    monkeypatch.setenv("NORN_WEBHOOK_SECRET", SECRET)
    make_app("web", spec(repo.file_url))
    return App.objects.get(name="web")


def commits(*shas):
    return [{"id": sha, "message": f"commit {sha[:7]}"} for sha in shas]


def test_two_pushes_while_queued_make_one_deploy_of_the_newest_commit(web, repo):
    one, two, three = repo.shas[1:4]
    first = post("github", github_push(repo.file_url, one, before=repo.shas[0], commits=commits(one)))
    assert first.json()["apps"][0]["result"] == "queued"
    second = post("gitlab", gitlab_push(repo.file_url, three, before=one, commits=commits(two, three)))
    assert second.status_code == 202
    assert second.json()["apps"][0]["result"] == "retargeted"
    deployment = Deployment.objects.get()
    assert deployment.ref == three and deployment.status == DeploymentStatus.QUEUED
    triggers = list(deployment.autodeploy_triggers.order_by("id"))
    assert [(t.provider, t.action, t.after) for t in triggers] == [("github", "queued", one),
                                                                   ("gitlab", "retargeted", three)]
    covered = [c["sha"] for t in triggers for c in t.commits]
    assert covered == [one, two, three]
    # Live viewers are told: an event with the new ref.
    event = Event.objects.get(deployment=deployment, kind=autodeploy.RETARGETED)
    assert event.payload["ref"] == three and event.payload["previous_ref"] == one


def test_a_push_while_one_runs_queues_one_more_and_later_pushes_join_it(web, repo):
    one, two, three = repo.shas[1:4]
    post("github", github_push(repo.file_url, one))
    running = Deployment.objects.get()
    assert transitions.claim(running.pk, "test-worker")
    assert post("github", github_push(repo.file_url, two)).json()["apps"][0]["result"] == "queued"
    assert post("github", github_push(repo.file_url, three)).json()["apps"][0]["result"] == "retargeted"
    running.refresh_from_db()
    assert running.ref == one and running.status == DeploymentStatus.CLONING
    waiting = Deployment.objects.exclude(pk=running.pk).get()
    assert waiting.ref == three and waiting.status == DeploymentStatus.QUEUED
    assert list(waiting.autodeploy_triggers.values_list("after", flat=True)) == [two, three]
    # The running one's commit pushed again is covered, not queued.
    assert post("github", github_push(repo.file_url, one)).json()["apps"][0]["result"] == "covered"
    assert Deployment.objects.count() == 2


def test_a_deploy_asked_for_by_hand_keeps_its_commit(web, repo):
    from deployments.requests import request_deployment

    manual = request_deployment("web", repo.shas[1], name="alice", via="cli")
    assert post("github", github_push(repo.file_url, repo.shas[2])).json()["apps"][0]["result"] == "queued"
    manual.refresh_from_db()
    assert manual.ref == repo.shas[1]
    assert Deployment.objects.count() == 2


def test_a_claimed_deployment_is_not_retargeted(web, repo):
    """The claim's conditional UPDATE and the retarget's row lock: once a
    worker has the deployment, a push queues a new one instead."""
    push = autodeploy.Push(branch="main", after=repo.shas[1])
    first = autodeploy.deploy_commit(web, push, via="poll")
    assert autodeploy._retarget(first.deployment.pk, autodeploy.Push(branch="main", after=repo.shas[2]), "poll")
    assert transitions.claim(first.deployment.pk, "w")
    assert autodeploy._retarget(first.deployment.pk, autodeploy.Push(branch="main", after=repo.shas[3]), "poll") is None
    first.deployment.refresh_from_db()
    assert first.deployment.ref == repo.shas[2]


@pytest.mark.django_db(transaction=True)
def test_concurrent_pushes_of_one_app_make_one_deploy(make_app, repo):
    make_app("web", spec(repo.file_url))
    app = App.objects.get(name="web")
    barrier = threading.Barrier(3)
    errors = []

    def push(sha):
        try:
            barrier.wait(timeout=10)
            autodeploy.deploy_commit(app, autodeploy.Push(branch="main", after=sha, provider="github"), via="webhook")
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=push, args=(sha,)) for sha in repo.shas[1:4]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    deployment = Deployment.objects.get()
    assert deployment.status == DeploymentStatus.QUEUED
    assert AutoDeployTrigger.objects.filter(deployment=deployment).count() == 3
    # The last one to get the app's turn decided the ref.
    last = AutoDeployTrigger.objects.order_by("-id").first()
    assert deployment.ref == last.after


def test_the_admin_shows_the_pushes_a_deployment_covers_in_constant_queries(web, repo, admin_client):
    from django.test.utils import CaptureQueriesContext

    def list_queries():
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get("/admin/deployments/autodeploytrigger/")
        assert response.status_code == 200
        return len(queries), response.content.decode()

    push = autodeploy.Push(branch="main", after=repo.shas[1], pusher="octocat", provider="github",
                           commits=({"sha": repo.shas[1], "subject": "<b>fix</b> the thing"},), commits_total=3)
    first = autodeploy.deploy_commit(web, push, via="webhook").deployment
    few, page = list_queries()
    assert "octocat" in page and first.short_id in page
    for sha in repo.shas[2:4]:
        autodeploy.deploy_commit(web, autodeploy.Push(branch="main", after=sha, pusher="hubot"), via="webhook")
    Deployment.objects.filter(pk=first.pk).update(status=DeploymentStatus.FAILED)
    autodeploy.deploy_commit(web, autodeploy.Push(branch="main", after=repo.shas[0]), via="poll")
    many, page = list_queries()
    assert AutoDeployTrigger.objects.count() == 4 and many == few
    trigger = AutoDeployTrigger.objects.order_by("id").first()
    detail = admin_client.get(f"/admin/deployments/autodeploytrigger/{trigger.pk}/change/").content.decode()
    assert "&lt;b&gt;fix&lt;/b&gt; the thing" in detail and "and 2 earlier" in detail
    assert admin_client.get("/admin/deployments/webhookdelivery/").status_code == 200
    assert admin_client.get("/admin/deployments/autodeploystate/").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_coalesced_deploy_builds_the_newest_commit(make_app, deploy_now, busybox_image, tmp_path, monkeypatch):
    """End to end: two pushes while queued, then the worker's pipeline runs
    the one deployment, and it is the second push's commit that goes live."""
    import subprocess

    from deployments import deferred, pipeline
    from tests.test_webhooks import SECRET

    monkeypatch.setenv("NORN_WEBHOOK_SECRET", SECRET)
    dockerfile = "FROM norn-busybox:1\nCOPY . /app\n"
    repo = make_repo(tmp_path / "repos", "hooked", {"Dockerfile": dockerfile, "v": "1\n"})
    make_app("hooked", f"app: hooked\nrole: cron\nrepo:\n  url: {repo.file_url}\n  autoDeploy: true\n"
                       "build:\n  dockerfile: Dockerfile\nschedule: '0 4 * * *'\ncommand: cat /app/v\n")
    second = repo.commit({"v": "2\n"}, "two")
    third = repo.commit({"v": "3\n"}, "three")
    assert post("github", github_push(repo.file_url, second)).json()["apps"][0]["result"] == "queued"
    assert post("github", github_push(repo.file_url, third)).json()["apps"][0]["result"] == "retargeted"
    deployment = Deployment.objects.get()
    try:
        pipeline.execute(deployment.pk)
        deferred.wait()
        deployment.refresh_from_db()
        assert deployment.status == DeploymentStatus.DEPLOYED, deployment.error
        assert deployment.commit_sha == third
        clone = deployment.steps.get(name="clone").output
        assert third in clone and second not in clone
    finally:
        if deployment.image:
            subprocess.run(["docker", "rmi", deployment.image], capture_output=True)
