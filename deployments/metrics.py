"""/metrics for Prometheus (docs/metrics.md), with the official prometheus_client.

Norn runs several processes (web processes, workers), so nothing is counted
in memory: each scrape reads PostgreSQL. Counters and histograms come from
small tables that triggers keep (MetricCount, DurationBucket; migration
0016); the queue and in-flight gauges from the deploy_unfinished partial
index; DORA from the last 30 days (deployments/dora.py). A scrape costs the
same few queries whatever the history's length.
"""

import hmac
import math

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from apps_registry.models import App
from deployments import dora
from deployments.models import Deployment, DeploymentStatus, DurationBucket, MetricCount


def _buckets(rows, bounds):
    """Prometheus' cumulative buckets and the sum from one series' DurationBucket rows."""
    counts = {bound: 0 for bound in (*bounds, math.inf)}
    total = 0.0
    for le, count, seconds in rows:
        # A bound no longer in the list (changed since) counts in the next one up.
        counts[min(bound for bound in counts if bound >= le)] += count
        total += seconds
    cumulative, running = [], 0
    for bound in counts:
        running += counts[bound]
        cumulative.append(("+Inf" if bound == math.inf else str(float(bound)), running))
    return cumulative, total


class NornCollector:
    """Every metric, read at scrape time."""

    def collect(self):
        now = timezone.now()
        apps = dict(App.objects.values_list("id", "name"))

        deployments = CounterMetricFamily(
            "norn_deployments", "Deployments that ended, by app, kind and the status they ended with.",
            labels=["app", "kind", "status"],
        )
        webhooks = CounterMetricFamily(
            "norn_webhook_deliveries", "Push webhooks received, by provider and the HTTP status Norn answered.",
            labels=["provider", "code"],
        )
        notifications = CounterMetricFamily(
            "norn_notification_deliveries", "Notification deliveries that ended, by kind and status.",
            labels=["kind", "status"],
        )
        for family, app_id, label1, label2, count in MetricCount.objects.order_by(
            "family", "app_id", "label1", "label2"
        ).values_list("family", "app_id", "label1", "label2", "count"):
            if family == "deployments" and app_id in apps:
                deployments.add_metric([apps[app_id], label1, label2], count)
            elif family == "webhooks":
                webhooks.add_metric([label1, label2], count)
            elif family == "notifications":
                notifications.add_metric([label1 or "none", label2], count)
        yield deployments
        yield webhooks
        yield notifications

        yield from self._histograms(apps)
        yield from self._queue(apps, now)
        yield from self._dora(apps, now)

    def _histograms(self, apps):
        steps = HistogramMetricFamily(
            "norn_step_duration_seconds", "How long each step took, by app and step.", labels=["app", "step"],
        )
        waits = HistogramMetricFamily(
            "norn_queue_wait_seconds", "How long deployments waited in the queue (queued to started), by app.",
            labels=["app"],
        )
        series = {}
        for family, app_id, name, le, count, seconds in DurationBucket.objects.order_by(
            "family", "app_id", "name", "le"
        ).values_list("family", "app_id", "name", "le", "count", "sum"):
            if app_id in apps:
                series.setdefault((family, apps[app_id], name), []).append((le, count, seconds))
        for (family, app, name), rows in sorted(series.items()):
            if family == "step":
                buckets, total = _buckets(rows, DurationBucket.STEP_BOUNDS)
                steps.add_metric([app, name], buckets, total)
            elif family == "wait":
                buckets, total = _buckets(rows, DurationBucket.WAIT_BOUNDS)
                waits.add_metric([app], buckets, total)
        yield steps
        yield waits

    def _queue(self, apps, now):
        queued = GaugeMetricFamily("norn_queued_deployments", "Deployments waiting in the queue, by app.", labels=["app"])
        oldest = GaugeMetricFamily(
            "norn_oldest_queued_seconds", "How long the app's oldest queued deployment has waited (0: none).",
            labels=["app"],
        )
        in_flight = GaugeMetricFamily(
            "norn_deployments_in_flight", "Deployments a worker is running now, by app.", labels=["app"],
        )
        per_app = {app_id: [0, None, 0] for app_id in apps}
        # The deploy_unfinished partial index: only queued and in-flight rows.
        for app_id, status, queued_at in Deployment.objects.unfinished().values_list("app_id", "status", "queued_at"):
            counts = per_app.setdefault(app_id, [0, None, 0])
            if status == DeploymentStatus.QUEUED:
                counts[0] += 1
                counts[1] = queued_at if counts[1] is None else min(counts[1], queued_at)
            else:
                counts[2] += 1
        for app_id, (waiting, first, running) in sorted(per_app.items(), key=lambda item: apps.get(item[0], "")):
            if app_id not in apps:
                continue
            queued.add_metric([apps[app_id]], waiting)
            oldest.add_metric([apps[app_id]], max((now - first).total_seconds(), 0) if first else 0)
            in_flight.add_metric([apps[app_id]], running)
        yield queued
        yield oldest
        yield in_flight

    def _dora(self, apps, now):
        window = dora.DEFAULT_WINDOW
        about = f"over the last {dora.WINDOWS[window]} days (docs/metrics.md)"
        frequency = GaugeMetricFamily(
            "norn_dora_deployment_frequency_per_day", f"Deploys that went live per day, {about}.", labels=["app"],
        )
        lead_time = GaugeMetricFamily(
            "norn_dora_lead_time_seconds", f"Median commit time to deployed, {about}.", labels=["app"],
        )
        failure_rate = GaugeMetricFamily(
            "norn_dora_change_failure_ratio", f"Share of deploys that went live then needed a rollback or restore, {about}.",
            labels=["app"],
        )
        restore = GaugeMetricFamily(
            "norn_dora_time_to_restore_seconds", f"Median time from a failed change to service restored, {about}.",
            labels=["app"],
        )
        figures = dora.per_app(now, window)
        for app_id, name in sorted(apps.items(), key=lambda item: item[1]):
            result = figures.get(app_id) or dora.figures(None, window)
            frequency.add_metric([name], result.frequency)
            # No data: no sample (a 0 would read as "instant" or "never fails").
            if result.lead_time is not None:
                lead_time.add_metric([name], result.lead_time)
            if result.change_failure_rate is not None:
                failure_rate.add_metric([name], result.change_failure_rate)
            if result.time_to_restore is not None:
                restore.add_metric([name], result.time_to_restore)
        yield frequency
        yield lead_time
        yield failure_rate
        yield restore


def _text(message, status, **headers):
    response = HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


@login_not_required
@require_safe
def metrics(request):
    """GET /metrics: a bearer token (NORN_METRICS_TOKEN), or open when
    NORN_METRICS_PUBLIC=true; 404 when neither is set."""
    token = settings.NORN_METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _text(
                "/metrics needs a token: send Authorization: Bearer <NORN_METRICS_TOKEN>", 401,
                WWW_Authenticate='Bearer realm="norn-metrics"',
            )
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return _text("/metrics: that token is not NORN_METRICS_TOKEN", 403)
    elif not settings.NORN_METRICS_PUBLIC:
        return _text(
            "/metrics is off: set NORN_METRICS_TOKEN (scrapers send it as a bearer token), "
            "or NORN_METRICS_PUBLIC=true to open it to anyone", 404,
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NornCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
