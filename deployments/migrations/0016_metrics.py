# Counters and duration histograms for /metrics, kept by triggers (issue 15,
# docs/metrics.md): a scrape reads a few hundred small rows, not a million
# deployments, and no process keeps counts of its own.

from django.db import migrations, models

TERMINAL = "('deployed', 'failed', 'rolled_back', 'cancelled')"
# The same bounds as DurationBucket.STEP_BOUNDS and WAIT_BOUNDS (seconds).
STEP_BOUNDS = "ARRAY[1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600]::float8[]"
WAIT_BOUNDS = "ARRAY[1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200]::float8[]"

TRIGGERS = f"""
-- The smallest bound >= seconds, or Infinity: the bucket an observation is in.
CREATE FUNCTION norn_metric_bucket(seconds float8, bounds float8[]) RETURNS float8
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(min(b), 'Infinity'::float8) FROM unnest(bounds) b WHERE seconds <= b
$$;

CREATE FUNCTION norn_metric_count(f text, a bigint, l1 text, l2 text) RETURNS void LANGUAGE sql AS $$
    INSERT INTO deployments_metriccount (family, app_id, label1, label2, count) VALUES (f, a, l1, l2, 1)
    ON CONFLICT (family, app_id, label1, label2) DO UPDATE SET count = deployments_metriccount.count + 1
$$;

CREATE FUNCTION norn_metric_observe(f text, a bigint, n text, seconds float8, bounds float8[]) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO deployments_durationbucket (family, app_id, name, le, count, sum)
    VALUES (f, a, n, norn_metric_bucket(greatest(seconds, 0), bounds), 1, greatest(seconds, 0))
    ON CONFLICT (family, app_id, name, le) DO UPDATE
    SET count = deployments_durationbucket.count + 1, sum = deployments_durationbucket.sum + EXCLUDED.sum
$$;

-- A deployment's end (the first terminal status it reaches) and its start (queue wait).
CREATE FUNCTION deployments_metrics_deployment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN {TERMINAL} AND (TG_OP = 'INSERT' OR OLD.status NOT IN {TERMINAL}) THEN
        PERFORM norn_metric_count('deployments', NEW.app_id, NEW.kind, NEW.status);
    END IF;
    IF NEW.started_at IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.started_at IS NULL) THEN
        PERFORM norn_metric_observe('wait', NEW.app_id, '',
            extract(epoch FROM NEW.started_at - NEW.queued_at)::float8, {WAIT_BOUNDS});
    END IF;
    RETURN NULL;
END
$$;

-- A step's end: transitions.py writes its duration then, once.
CREATE FUNCTION deployments_metrics_step() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.duration IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.duration IS NULL) THEN
        PERFORM norn_metric_observe('step',
            (SELECT app_id FROM deployments_deployment WHERE id = NEW.deployment_id), NEW.name,
            extract(epoch FROM NEW.duration)::float8, {STEP_BOUNDS});
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION deployments_metrics_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status_code IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.status_code IS NULL) THEN
        PERFORM norn_metric_count('webhooks', 0, NEW.provider, NEW.status_code::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION deployments_metrics_notification() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('sent', 'failed', 'not_configured')
       AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status) THEN
        PERFORM norn_metric_count('notifications', 0, NEW.kind, NEW.status);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER deployments_metrics_deployment AFTER INSERT OR UPDATE OF status, started_at
    ON deployments_deployment FOR EACH ROW EXECUTE FUNCTION deployments_metrics_deployment();
CREATE TRIGGER deployments_metrics_step AFTER INSERT OR UPDATE OF duration
    ON deployments_step FOR EACH ROW EXECUTE FUNCTION deployments_metrics_step();
CREATE TRIGGER deployments_metrics_webhook AFTER INSERT OR UPDATE OF status_code
    ON deployments_webhookdelivery FOR EACH ROW EXECUTE FUNCTION deployments_metrics_webhook();
CREATE TRIGGER deployments_metrics_notification AFTER INSERT OR UPDATE OF status
    ON deployments_notificationdelivery FOR EACH ROW EXECUTE FUNCTION deployments_metrics_notification();

-- Count everything again from the rows: what happened before this migration,
-- and after a load that bypassed the triggers (session_replication_role = replica).
CREATE FUNCTION norn_metrics_recount() RETURNS void LANGUAGE sql AS $$
DELETE FROM deployments_metriccount;
DELETE FROM deployments_durationbucket;
INSERT INTO deployments_metriccount (family, app_id, label1, label2, count)
SELECT 'deployments', app_id, kind, status, count(*) FROM deployments_deployment
WHERE status IN {TERMINAL} GROUP BY app_id, kind, status;
INSERT INTO deployments_metriccount (family, app_id, label1, label2, count)
SELECT 'webhooks', 0, provider, status_code::text, count(*) FROM deployments_webhookdelivery
WHERE status_code IS NOT NULL GROUP BY provider, status_code;
INSERT INTO deployments_metriccount (family, app_id, label1, label2, count)
SELECT 'notifications', 0, kind, status, count(*) FROM deployments_notificationdelivery
WHERE status IN ('sent', 'failed', 'not_configured') GROUP BY kind, status;
INSERT INTO deployments_durationbucket (family, app_id, name, le, count, sum)
SELECT 'wait', app_id, '', le, count(*), sum(seconds) FROM (
    SELECT app_id, greatest(extract(epoch FROM started_at - queued_at)::float8, 0) AS seconds,
           norn_metric_bucket(greatest(extract(epoch FROM started_at - queued_at)::float8, 0), {WAIT_BOUNDS}) AS le
    FROM deployments_deployment WHERE started_at IS NOT NULL) w GROUP BY app_id, le;
INSERT INTO deployments_durationbucket (family, app_id, name, le, count, sum)
SELECT 'step', app_id, name, le, count(*), sum(seconds) FROM (
    SELECT d.app_id, s.name, greatest(extract(epoch FROM s.duration)::float8, 0) AS seconds,
           norn_metric_bucket(greatest(extract(epoch FROM s.duration)::float8, 0), {STEP_BOUNDS}) AS le
    FROM deployments_step s JOIN deployments_deployment d ON d.id = s.deployment_id
    WHERE s.duration IS NOT NULL) s GROUP BY app_id, name, le;
$$;
SELECT norn_metrics_recount();
"""

UNDO = """
DROP TRIGGER deployments_metrics_notification ON deployments_notificationdelivery;
DROP TRIGGER deployments_metrics_webhook ON deployments_webhookdelivery;
DROP TRIGGER deployments_metrics_step ON deployments_step;
DROP TRIGGER deployments_metrics_deployment ON deployments_deployment;
DROP FUNCTION norn_metrics_recount();
DROP FUNCTION deployments_metrics_notification();
DROP FUNCTION deployments_metrics_webhook();
DROP FUNCTION deployments_metrics_step();
DROP FUNCTION deployments_metrics_deployment();
DROP FUNCTION norn_metric_observe(text, bigint, text, float8, float8[]);
DROP FUNCTION norn_metric_count(text, bigint, text, text);
DROP FUNCTION norn_metric_bucket(float8, float8[]);
"""


class Migration(migrations.Migration):

    dependencies = [
        ('deployments', '0015_notifications'),
    ]

    operations = [
        migrations.CreateModel(
            name='MetricCount',
            fields=[
                ('pk', models.CompositePrimaryKey('family', 'app_id', 'label1', 'label2', blank=True, editable=False, primary_key=True, serialize=False)),
                ('family', models.CharField(max_length=16)),
                ('app_id', models.BigIntegerField()),
                ('label1', models.CharField(max_length=32)),
                ('label2', models.CharField(max_length=32)),
                ('count', models.BigIntegerField()),
            ],
        ),
        migrations.CreateModel(
            name='DurationBucket',
            fields=[
                ('pk', models.CompositePrimaryKey('family', 'app_id', 'name', 'le', blank=True, editable=False, primary_key=True, serialize=False)),
                ('family', models.CharField(max_length=8)),
                ('app_id', models.BigIntegerField()),
                ('name', models.CharField(max_length=16)),
                ('le', models.FloatField()),
                ('count', models.BigIntegerField()),
                ('sum', models.FloatField()),
            ],
        ),
        migrations.RunSQL(TRIGGERS, UNDO),
    ]
