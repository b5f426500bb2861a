"""/metrics: parsed with prometheus_client's own parser over a known history;
its token; its cost whatever the history's length."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from apps_registry.models import App
from deployments import transitions
from deployments.models import Deployment, DeploymentStatus, NotificationDelivery, StepStatus, WebhookDelivery
from deployments.outcomes import Outcome
from tests.support.dashboard import WEB, make_deployment, web  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db
TOKEN = "scrape-" + "t" * 30


@pytest.fixture
def api(make_app):
    make_app("api", WEB.replace("app: web", "app: api"))
    return App.objects.get(name="api")


@pytest.fixture
def scrape(client, settings):
    settings.NORN_METRICS_TOKEN = TOKEN
    settings.NORN_METRICS_PUBLIC = False

    def get():
        response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.content[:300]
        assert response["Content-Type"].startswith("text/plain; version=")
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.content.decode())
            for sample in family.samples
        }
    return get


def labels(**pairs):
    return tuple(sorted(pairs.items()))


def test_deployments_are_counted_by_app_kind_and_the_status_they_ended_with(scrape, web, api):
    for _ in range(2):
        make_deployment(web)
    make_deployment(web, DeploymentStatus.FAILED)
    make_deployment(web, DeploymentStatus.CANCELLED)
    make_deployment(web, kind="rollback")
    make_deployment(web, DeploymentStatus.FAILED, kind="restore")
    replaced = make_deployment(api)
    make_deployment(api, DeploymentStatus.QUEUED)  # not ended: not counted
    # Replaced by a rollback later: it ended deployed, and stays counted so
    # (a counter never goes down); the rollback is counted as a rollback.
    Deployment.objects.filter(pk=replaced.pk).update(status=DeploymentStatus.ROLLED_BACK)
    samples = scrape()
    counted = {key[1]: value for key, value in samples.items() if key[0] == "norn_deployments_total"}
    assert counted == {
        labels(app="web", kind="deploy", status="deployed"): 2,
        labels(app="web", kind="deploy", status="failed"): 1,
        labels(app="web", kind="deploy", status="cancelled"): 1,
        labels(app="web", kind="rollback", status="deployed"): 1,
        labels(app="web", kind="restore", status="failed"): 1,
        labels(app="api", kind="deploy", status="deployed"): 1,
    }


def test_step_durations_are_histograms_with_exact_buckets_and_sums(scrape, web, api):
    make_deployment(web, steps={"clone": (StepStatus.SUCCEEDED, 0.5), "build": (StepStatus.SUCCEEDED, 45)})
    make_deployment(web, steps={"clone": (StepStatus.SUCCEEDED, 2), "build": (StepStatus.FAILED, 4000),
                                "test": (StepStatus.SKIPPED, None)})
    make_deployment(api, steps={"clone": (StepStatus.SUCCEEDED, 1)})
    samples = scrape()

    def bucket(app, step, le):
        return samples[("norn_step_duration_seconds_bucket", labels(app=app, step=step, le=le))]

    assert [bucket("web", "clone", le) for le in ("1.0", "5.0", "10.0", "3600.0", "+Inf")] == [1, 2, 2, 2, 2]
    assert samples[("norn_step_duration_seconds_sum", labels(app="web", step="clone"))] == 2.5
    assert samples[("norn_step_duration_seconds_count", labels(app="web", step="clone"))] == 2
    assert [bucket("web", "build", le) for le in ("30.0", "60.0", "1800.0", "3600.0", "+Inf")] == [0, 1, 1, 1, 2]
    assert samples[("norn_step_duration_seconds_sum", labels(app="web", step="build"))] == 4045
    assert bucket("api", "clone", "1.0") == 1  # a bound is inclusive (le)
    # A skipped step has no duration: no observation.
    assert ("norn_step_duration_seconds_count", labels(app="web", step="test")) not in samples


def test_a_step_ended_by_the_pipelines_transitions_is_observed(scrape, web):
    deployment = transitions.create(web, "HEAD", via="cli", runtime="docker")
    assert transitions.claim(deployment.pk, "host:1:a")
    assert transitions.start_step(deployment.pk, "host:1:a", "clone")
    assert transitions.advance(deployment.pk, "host:1:a", "clone", Outcome.failed("no such ref"),
                               cut=["build", "test", "snapshot", "migrate", "deploy"], then="cleanup")
    assert transitions.advance(deployment.pk, "host:1:a", "cleanup", Outcome.succeeded(), cut=[], then=None,
                               final="failed", error="clone failed: no such ref")
    samples = scrape()
    assert samples[("norn_step_duration_seconds_count", labels(app="web", step="clone"))] == 1
    assert samples[("norn_step_duration_seconds_count", labels(app="web", step="cleanup"))] == 1
    assert ("norn_step_duration_seconds_count", labels(app="web", step="build")) not in samples
    assert samples[("norn_deployments_total", labels(app="web", kind="deploy", status="failed"))] == 1
    assert samples[("norn_queue_wait_seconds_count", labels(app="web"))] == 1


def test_queue_depth_oldest_wait_wait_histogram_and_in_flight(scrape, web, api):
    now = timezone.now()
    waited = []
    for minutes in (2, 30):
        deployment = transitions.create(web, "HEAD", via="cli", runtime="docker")
        Deployment.objects.filter(pk=deployment.pk).update(queued_at=now - timedelta(minutes=minutes))
        waited.append(deployment)
    running = transitions.create(api, "HEAD", via="cli", runtime="docker")
    Deployment.objects.filter(pk=running.pk).update(queued_at=now - timedelta(seconds=20))
    Deployment.objects.filter(pk=running.pk).update(status=DeploymentStatus.BUILDING, started_at=now)
    samples = scrape()
    assert samples[("norn_queued_deployments", labels(app="web"))] == 2
    assert samples[("norn_queued_deployments", labels(app="api"))] == 0
    assert 30 * 60 <= samples[("norn_oldest_queued_seconds", labels(app="web"))] < 30 * 60 + 60
    assert samples[("norn_oldest_queued_seconds", labels(app="api"))] == 0
    assert samples[("norn_deployments_in_flight", labels(app="api"))] == 1
    assert samples[("norn_deployments_in_flight", labels(app="web"))] == 0
    # api's deployment waited 20 s before a worker started it.
    assert samples[("norn_queue_wait_seconds_bucket", labels(app="api", le="15.0"))] == 0
    assert samples[("norn_queue_wait_seconds_bucket", labels(app="api", le="30.0"))] == 1
    assert samples[("norn_queue_wait_seconds_sum", labels(app="api"))] == 20


def test_webhook_and_notification_deliveries_are_counted(scrape, web):
    WebhookDelivery.objects.create(provider="github", delivery_id="a", status_code=202)
    pending = WebhookDelivery.objects.create(provider="github", delivery_id="b")
    WebhookDelivery.objects.filter(pk=pending.pk).update(status_code=401)
    WebhookDelivery.objects.create(provider="gitlab", delivery_id="c", status_code=202)
    deployment = make_deployment(web)
    sent = NotificationDelivery.objects.create(deployment=deployment, target="ops", kind="slack", event="deployed")
    NotificationDelivery.objects.filter(pk=sent.pk).update(status="sent", attempts=2)
    NotificationDelivery.objects.create(deployment=deployment, target="hook", kind="webhook", event="deployed",
                                        status="failed")
    NotificationDelivery.objects.create(deployment=deployment, target="gone", event="deployed", status="not_configured")
    NotificationDelivery.objects.create(deployment=deployment, target="mail", kind="email", event="deployed")
    samples = scrape()
    webhooks = {key[1]: value for key, value in samples.items() if key[0] == "norn_webhook_deliveries_total"}
    assert webhooks == {labels(provider="github", code="202"): 1, labels(provider="github", code="401"): 1,
                        labels(provider="gitlab", code="202"): 1}
    notices = {key[1]: value for key, value in samples.items() if key[0] == "norn_notification_deliveries_total"}
    assert notices == {labels(kind="slack", status="sent"): 1, labels(kind="webhook", status="failed"): 1,
                       labels(kind="none", status="not_configured"): 1}


def test_dora_gauges_for_the_default_window(scrape, web, api):
    make_deployment(web)
    make_deployment(web)
    samples = scrape()
    assert samples[("norn_dora_deployment_frequency_per_day", labels(app="web"))] == pytest.approx(2 / 30)
    assert samples[("norn_dora_change_failure_ratio", labels(app="web"))] == 0
    # No data is no sample, not a zero.
    assert samples[("norn_dora_deployment_frequency_per_day", labels(app="api"))] == 0
    assert ("norn_dora_change_failure_ratio", labels(app="api")) not in samples
    assert ("norn_dora_lead_time_seconds", labels(app="web")) not in samples


def test_a_token_is_needed_and_compared(client, settings):
    settings.NORN_METRICS_TOKEN, settings.NORN_METRICS_PUBLIC = TOKEN, False
    missing = client.get("/metrics")
    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in missing.content.decode()
    assert client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 37})
    assert wrong.status_code == 403 and TOKEN not in wrong.content.decode()
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    # A GET only: nothing to post, and no CSRF token asked for.
    assert client.post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405


def test_without_a_token_it_is_off_unless_explicitly_public(client, settings):
    settings.NORN_METRICS_TOKEN, settings.NORN_METRICS_PUBLIC = "", False
    off = client.get("/metrics")
    assert off.status_code == 404 and "NORN_METRICS_TOKEN" in off.content.decode()
    settings.NORN_METRICS_PUBLIC = True
    opened = client.get("/metrics")
    assert opened.status_code == 200
    families = {family.name: family for family in text_string_to_metric_families(opened.content.decode())}
    assert families["norn_deployments"].type == "counter" and families["norn_deployments"].samples == []


def test_a_scrape_costs_the_same_queries_whatever_the_history(scrape, web, api):
    def count():
        with CaptureQueriesContext(connection) as ctx:
            scrape()
        return len(ctx.captured_queries)

    make_deployment(web, steps={"clone": (StepStatus.SUCCEEDED, 1)})
    few = count()
    for i in range(40):
        make_deployment(web if i % 2 else api, DeploymentStatus.FAILED if i % 3 else DeploymentStatus.DEPLOYED,
                        steps={"clone": (StepStatus.SUCCEEDED, i), "build": (StepStatus.SUCCEEDED, 10 * i)},
                        kind="rollback" if i % 7 == 0 else "deploy")
    transitions.create(web, "HEAD", via="cli", runtime="docker")
    assert count() == few


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"NORN_METRICS_TOKEN": TOKEN, "NORN_METRICS_PUBLIC": "true"}, "NORN_METRICS_TOKEN is set and NORN_METRICS_PUBLIC is true"),
        ({"NORN_METRICS_TOKEN": "short"}, "NORN_METRICS_TOKEN must be at least 16 characters"),
        ({"NORN_METRICS_PUBLIC": "maybe"}, "NORN_METRICS_PUBLIC='maybe' is not a boolean"),
    ],
)
def test_bad_metrics_settings_stop_norn_with_a_clear_message(env, expected):
    from tests.test_settings import run_manage

    result = run_manage("check", **env)
    assert result.returncode == 2 and "Norn is misconfigured: " + expected in result.stderr
    assert "Traceback" not in result.stderr and TOKEN not in result.stderr


def test_counting_again_from_the_rows_gives_what_the_triggers_kept(web, api):
    """norn_metrics_recount() (migration 0016; for loads that bypass triggers)
    agrees with the triggers row for row."""
    for i in range(12):
        make_deployment(web if i % 2 else api, DeploymentStatus.FAILED if i % 3 else DeploymentStatus.DEPLOYED,
                        steps={"clone": (StepStatus.SUCCEEDED, i * 1.5), "build": (StepStatus.SUCCEEDED, 100 * i)},
                        kind="restore" if i % 5 == 0 else "deploy")
    WebhookDelivery.objects.create(provider="gitea", delivery_id="x", status_code=403)

    def tables():
        with connection.cursor() as cursor:
            cursor.execute("SELECT family, app_id, label1, label2, count FROM deployments_metriccount ORDER BY 1, 2, 3, 4")
            counts = cursor.fetchall()
            cursor.execute("SELECT family, app_id, name, le, count, sum FROM deployments_durationbucket ORDER BY 1, 2, 3, 4")
            return counts, cursor.fetchall()

    kept = tables()
    assert kept[0] and kept[1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT norn_metrics_recount()")
    assert tables() == kept


@pytest.mark.django_db(transaction=True)
def test_a_real_scrape_over_http_from_another_process(web, tmp_path, apps_dir):
    """Prometheus' view: a daphne of its own (another process than the one that
    wrote the rows), with the token from its environment."""
    import urllib.error
    import urllib.request

    from tests.support.servers import Daphne

    make_deployment(web, steps={"clone": (StepStatus.SUCCEEDED, 3)})
    env = {"NORN_APPS_DIR": str(apps_dir), "NORN_METRICS_TOKEN": TOKEN, "NORN_METRICS_PUBLIC": "false"}
    with Daphne(tmp_path / "daphne.log", tmp_path / "access.log", extra_env=env) as server:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.url}/metrics", timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("norn_deployments_total", labels(app="web", kind="deploy", status="deployed"))] == 1
    assert samples[("norn_step_duration_seconds_sum", labels(app="web", step="clone"))] == 3
