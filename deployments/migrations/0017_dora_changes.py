# DORA's changes to production, kept by triggers (deployments/dora.py,
# issue 13): the app page's figures read one app's window of narrow rows
# instead of ordering and self-joining its deployments at each view (276 ms
# for 90 days of a busy app at a million deployments).

from django.db import migrations, models

# The changes of one app take turns (pg_advisory_xact_lock(class, app id)):
# a change's facts read the changes queued after it.
LOCK_CLASS = 0x446F7261  # "Dora"
REMEDIES = "('rollback', 'restore')"

TRIGGERS = f"""
-- What came after the change c (a deploy that went live): whether its next
-- change in queue order was a rollback or a restore (a failed change), and
-- then how long after c the next change that went live ended.
CREATE FUNCTION deployments_dora_after(c deployments_dorachange, OUT failed boolean, OUT restore_seconds float8)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nc.kind IN {REMEDIES}, false),
        CASE WHEN nc.kind IN {REMEDIES} THEN greatest(extract(epoch FROM nl.finished_at - c.finished_at)::float8, 0) END
    FROM (SELECT 1) one
    LEFT JOIN LATERAL (
        SELECT n.kind FROM deployments_dorachange n
        WHERE n.app_id = c.app_id AND (n.queued_at, n.deployment_id) > (c.queued_at, c.deployment_id)
        ORDER BY n.queued_at, n.deployment_id LIMIT 1
    ) nc ON true
    LEFT JOIN LATERAL (
        SELECT n.finished_at FROM deployments_dorachange n
        WHERE n.app_id = c.app_id AND (n.queued_at, n.deployment_id) > (c.queued_at, c.deployment_id) AND n.went_live
        ORDER BY n.queued_at, n.deployment_id LIMIT 1
    ) nl ON nc.kind IN {REMEDIES}
$$;

-- The deployment x changed (its status, end, kind, queue time, app or deploy
-- step), or went (app: the app it had). Its row here follows it, and the
-- facts of the two changes that can depend on it are computed again: its own
-- and those of the last change that went live queued before it (any earlier
-- one has a next change and a next live change at or before that one).
CREATE FUNCTION deployments_dora_note(x bigint, app bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    d record;
    was deployments_dorachange;
    had boolean;
    live boolean := false;
    change boolean := false;
    lead float8;
    at record;
    before bigint;
BEGIN
    SELECT id, app_id, kind, status, queued_at, finished_at, commit_time INTO d
    FROM deployments_deployment WHERE id = x;
    IF FOUND THEN
        live := d.finished_at IS NOT NULL AND (d.status = 'deployed' OR (
            d.status = 'rolled_back' AND d.kind <> 'restore' AND EXISTS (
                SELECT 1 FROM deployments_step s
                WHERE s.deployment_id = x AND s.name = 'deploy' AND s.status = 'succeeded')));
        change := d.finished_at IS NOT NULL AND d.status NOT IN ('cancelled', 'queued')
            AND (live OR d.kind IN {REMEDIES});
        lead := CASE WHEN d.commit_time IS NOT NULL
            THEN greatest(extract(epoch FROM d.finished_at - d.commit_time)::float8, 0) END;
    END IF;
    SELECT * INTO was FROM deployments_dorachange WHERE deployment_id = x;
    had := FOUND;
    IF NOT change AND NOT had THEN
        RETURN;  -- not a change, nor was it: nothing follows from it
    END IF;
    IF change AND had AND (was.app_id, was.kind, was.queued_at, was.finished_at, was.went_live, was.lead_seconds)
            IS NOT DISTINCT FROM (d.app_id, d.kind, d.queued_at, d.finished_at, live, lead) THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock({LOCK_CLASS}, (coalesce(d.app_id, app) % 2147483647)::int);
    IF change THEN
        INSERT INTO deployments_dorachange
            (deployment_id, app_id, kind, queued_at, finished_at, went_live, lead_seconds, failed, restore_seconds)
        VALUES (x, d.app_id, d.kind, d.queued_at, d.finished_at, live, lead, false, NULL)
        ON CONFLICT (deployment_id) DO UPDATE SET app_id = EXCLUDED.app_id, kind = EXCLUDED.kind,
            queued_at = EXCLUDED.queued_at, finished_at = EXCLUDED.finished_at,
            went_live = EXCLUDED.went_live, lead_seconds = EXCLUDED.lead_seconds,
            failed = false, restore_seconds = NULL;
    ELSE
        DELETE FROM deployments_dorachange WHERE deployment_id = x;
    END IF;
    -- Where it is and where it was (a moved deployment changes both places).
    FOR at IN SELECT d.app_id AS app_id, d.queued_at AS queued_at WHERE change
              UNION SELECT was.app_id, was.queued_at WHERE had LOOP
        SELECT deployment_id INTO before FROM deployments_dorachange
        WHERE app_id = at.app_id AND (queued_at, deployment_id) < (at.queued_at, x) AND went_live
        ORDER BY queued_at DESC, deployment_id DESC LIMIT 1;
        UPDATE deployments_dorachange c SET (failed, restore_seconds) = (
            SELECT a.failed, a.restore_seconds FROM deployments_dora_after(c) a)
        WHERE c.deployment_id IN (x, before) AND c.kind = 'deploy' AND c.went_live;
    END LOOP;
END
$$;

CREATE FUNCTION deployments_dora_deployment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM deployments_dora_note(OLD.id, OLD.app_id);
    ELSE
        PERFORM deployments_dora_note(NEW.id, NEW.app_id);
    END IF;
    RETURN NULL;
END
$$;

-- A rolled_back deploy went live if its deploy step succeeded.
CREATE FUNCTION deployments_dora_step() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM deployments_dora_note(NEW.deployment_id, NULL);
    RETURN NULL;
END
$$;

CREATE FUNCTION deployments_dora_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM deployments_dorachange;
    RETURN NULL;
END
$$;

-- Only a deployment that has ended is, or was, a change: a queued or running
-- one (every step boundary updates its row) costs no call.
CREATE TRIGGER deployments_dora_added AFTER INSERT ON deployments_deployment
    FOR EACH ROW WHEN (NEW.finished_at IS NOT NULL) EXECUTE FUNCTION deployments_dora_deployment();
CREATE TRIGGER deployments_dora_removed AFTER DELETE ON deployments_deployment
    FOR EACH ROW WHEN (OLD.finished_at IS NOT NULL) EXECUTE FUNCTION deployments_dora_deployment();
-- Django's save() writes every column: only a change of what DORA reads counts.
CREATE TRIGGER deployments_dora_changed
    AFTER UPDATE OF status, finished_at, kind, queued_at, app_id, commit_time ON deployments_deployment
    FOR EACH ROW WHEN ((OLD.finished_at IS NOT NULL OR NEW.finished_at IS NOT NULL)
        AND (OLD.status, OLD.finished_at, OLD.kind, OLD.queued_at, OLD.app_id, OLD.commit_time)
        IS DISTINCT FROM (NEW.status, NEW.finished_at, NEW.kind, NEW.queued_at, NEW.app_id, NEW.commit_time))
    EXECUTE FUNCTION deployments_dora_deployment();
CREATE TRIGGER deployments_dora_step AFTER INSERT OR UPDATE OF status ON deployments_step
    FOR EACH ROW WHEN (NEW.name = 'deploy') EXECUTE FUNCTION deployments_dora_step();
-- TRUNCATE fires no row triggers (the test suite's flush truncates).
CREATE TRIGGER deployments_dora_forget AFTER TRUNCATE ON deployments_deployment
    FOR EACH STATEMENT EXECUTE FUNCTION deployments_dora_forget();

-- Everything again from the deployments: those before this migration, and
-- after a load that bypassed the triggers (session_replication_role = replica).
CREATE FUNCTION deployments_dora_rebuild() RETURNS void LANGUAGE sql AS $$
DELETE FROM deployments_dorachange;
INSERT INTO deployments_dorachange
    (deployment_id, app_id, kind, queued_at, finished_at, went_live, lead_seconds, failed, restore_seconds)
SELECT id, app_id, kind, queued_at, finished_at, went_live,
    CASE WHEN commit_time IS NOT NULL THEN greatest(extract(epoch FROM finished_at - commit_time)::float8, 0) END,
    false, NULL
FROM (
    SELECT d.*, (d.status = 'deployed' OR (d.status = 'rolled_back' AND d.kind <> 'restore' AND EXISTS (
        SELECT 1 FROM deployments_step s
        WHERE s.deployment_id = d.id AND s.name = 'deploy' AND s.status = 'succeeded'))) AS went_live
    FROM deployments_deployment d
    WHERE d.finished_at IS NOT NULL AND d.status NOT IN ('cancelled', 'queued')
) d
WHERE went_live OR kind IN {REMEDIES};
UPDATE deployments_dorachange c SET (failed, restore_seconds) = (
    SELECT a.failed, a.restore_seconds FROM deployments_dora_after(c) a)
WHERE c.kind = 'deploy' AND c.went_live;
$$;
SELECT deployments_dora_rebuild();
"""

UNDO = """
DROP TRIGGER deployments_dora_forget ON deployments_deployment;
DROP TRIGGER deployments_dora_step ON deployments_step;
DROP TRIGGER deployments_dora_changed ON deployments_deployment;
DROP TRIGGER deployments_dora_removed ON deployments_deployment;
DROP TRIGGER deployments_dora_added ON deployments_deployment;
DROP FUNCTION deployments_dora_rebuild();
DROP FUNCTION deployments_dora_forget();
DROP FUNCTION deployments_dora_step();
DROP FUNCTION deployments_dora_deployment();
DROP FUNCTION deployments_dora_note(bigint, bigint);
DROP FUNCTION deployments_dora_after(deployments_dorachange);
"""


class Migration(migrations.Migration):

    dependencies = [
        ('deployments', '0016_metrics'),
    ]

    operations = [
        migrations.CreateModel(
            name='DoraChange',
            fields=[
                ('deployment_id', models.BigIntegerField(primary_key=True, serialize=False)),
                ('app_id', models.BigIntegerField()),
                ('kind', models.CharField(choices=[('deploy', 'Deploy'), ('rollback', 'Rollback'), ('restore', 'Snapshot restore')], max_length=16)),
                ('queued_at', models.DateTimeField()),
                ('finished_at', models.DateTimeField()),
                ('went_live', models.BooleanField()),
                ('lead_seconds', models.FloatField(null=True)),
                ('failed', models.BooleanField(default=False)),
                ('restore_seconds', models.FloatField(null=True)),
            ],
            options={
                'indexes': [models.Index(fields=['app_id', 'queued_at', 'deployment_id'], name='dora_app_queued'), models.Index(fields=['queued_at'], name='dora_queued')],
            },
        ),
        migrations.RunSQL(TRIGGERS, UNDO),
    ]
