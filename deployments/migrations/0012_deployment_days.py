# Deployments per app and day, kept by triggers, for history pages by number
# at a million deployments (paging.LongListPaginator; issue 13).

from django.db import migrations, models

# queued_at's day in UTC: a row of day D has D <= queued_at < D + 1 (paging.py
# reads the same boundaries).
DAY = "(({row}.queued_at AT TIME ZONE 'UTC')::date)"

TRIGGERS = f"""
CREATE FUNCTION deployments_count_day() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE deployments_deploymentday SET count = count - 1
        WHERE app_id = OLD.app_id AND day = {DAY.format(row="OLD")};
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO deployments_deploymentday (app_id, day, count)
        VALUES (NEW.app_id, {DAY.format(row="NEW")}, 1)
        ON CONFLICT (app_id, day) DO UPDATE SET count = deployments_deploymentday.count + 1;
    END IF;
    RETURN NULL;
END
$$;

-- DELETE, not TRUNCATE: Django's flush truncates both tables in one statement.
CREATE FUNCTION deployments_forget_days() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM deployments_deploymentday;
    RETURN NULL;
END
$$;

CREATE TRIGGER deployments_count_day AFTER INSERT OR DELETE ON deployments_deployment
    FOR EACH ROW EXECUTE FUNCTION deployments_count_day();
-- Django's save() writes every column: only a real move counts.
CREATE TRIGGER deployments_count_day_moved AFTER UPDATE OF app_id, queued_at ON deployments_deployment
    FOR EACH ROW WHEN (OLD.app_id IS DISTINCT FROM NEW.app_id OR OLD.queued_at IS DISTINCT FROM NEW.queued_at)
    EXECUTE FUNCTION deployments_count_day();
-- TRUNCATE fires no row triggers (the test suite's flush truncates).
CREATE TRIGGER deployments_forget_days AFTER TRUNCATE ON deployments_deployment
    FOR EACH STATEMENT EXECUTE FUNCTION deployments_forget_days();

INSERT INTO deployments_deploymentday (app_id, day, count)
SELECT app_id, {DAY.format(row="deployments_deployment")}, count(*)
FROM deployments_deployment GROUP BY 1, 2;
"""

UNDO = """
DROP TRIGGER deployments_forget_days ON deployments_deployment;
DROP TRIGGER deployments_count_day_moved ON deployments_deployment;
DROP TRIGGER deployments_count_day ON deployments_deployment;
DROP FUNCTION deployments_forget_days();
DROP FUNCTION deployments_count_day();
"""


class Migration(migrations.Migration):

    dependencies = [
        ('deployments', '0011_finished_deploys_index'),
    ]

    operations = [
        migrations.CreateModel(
            name='DeploymentDay',
            fields=[
                ('pk', models.CompositePrimaryKey('app_id', 'day', blank=True, editable=False, primary_key=True, serialize=False)),
                ('app_id', models.BigIntegerField()),
                ('day', models.DateField()),
                ('count', models.BigIntegerField()),
            ],
        ),
        migrations.RunSQL(TRIGGERS, UNDO),
    ]
