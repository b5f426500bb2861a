# Issue 14: a cancelled status of its own (terminal, so the one-in-flight
# constraint and the partial indexes that name the terminal statuses are made
# again), the step that failed a deployment (Deployment.failure_reason) and
# the commit's subject, author and time (recorded by the clone step).

from django.conf import settings
from django.db import migrations, models


BACKFILL = """
UPDATE deployments_deployment SET status = 'cancelled'
WHERE status = 'failed' AND cancel_requested_at IS NOT NULL AND error LIKE 'cancelled by %';
UPDATE deployments_deployment d SET failed_step = s.name
FROM deployments_step s
WHERE s.deployment_id = d.id AND s.status = 'failed' AND s.name <> 'cleanup'
  AND d.status IN ('failed', 'rolled_back', 'cancelled') AND d.failed_step = '';
"""


class Migration(migrations.Migration):

    dependencies = [
        ('apps_registry', '0001_initial'),
        ('deployments', '0012_deployment_days'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='deployment',
            name='one_in_flight_deployment_per_app',
        ),
        migrations.RemoveIndex(
            model_name='deployment',
            name='deploy_unfinished',
        ),
        migrations.RemoveIndex(
            model_name='deployment',
            name='deploy_app_finished_deploys',
        ),
        migrations.AddField(
            model_name='deployment',
            name='commit_author',
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name='deployment',
            name='commit_subject',
            field=models.CharField(blank=True, max_length=300),
        ),
        migrations.AddField(
            model_name='deployment',
            name='commit_time',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='deployment',
            name='failed_step',
            field=models.CharField(blank=True, max_length=16),
        ),
        migrations.AlterField(
            model_name='deployment',
            name='status',
            field=models.CharField(choices=[('queued', 'Queued'), ('cloning', 'Cloning'), ('building', 'Building'), ('testing', 'Testing'), ('snapshotting', 'Snapshotting'), ('migrating', 'Migrating'), ('deploying', 'Deploying'), ('cleaning_up', 'Cleaning up'), ('verifying', 'Verifying'), ('restoring', 'Restoring'), ('deployed', 'Deployed'), ('failed', 'Failed'), ('rolled_back', 'Rolled back'), ('cancelled', 'Cancelled')], default='queued', max_length=16),
        ),
        # Earlier cancels become cancelled (their error is transitions'
        # cancel message); finished deployments get the step that failed them.
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        migrations.AddIndex(
            model_name='deployment',
            index=models.Index(condition=models.Q(('kind', 'deploy'), ('status__in', ('deployed', 'failed', 'rolled_back', 'cancelled'))), fields=['app', '-queued_at', '-id'], name='deploy_app_finished_deploys'),
        ),
        migrations.AddIndex(
            model_name='deployment',
            index=models.Index(condition=models.Q(('status__in', ('deployed', 'failed', 'rolled_back', 'cancelled')), _negated=True), fields=['status'], name='deploy_unfinished'),
        ),
        migrations.AddConstraint(
            model_name='deployment',
            constraint=models.UniqueConstraint(condition=models.Q(('status__in', ('queued', 'deployed', 'failed', 'rolled_back', 'cancelled')), _negated=True), fields=('app',), name='one_in_flight_deployment_per_app'),
        ),
        # The backfill rewrote every failed row: fresh statistics at once, or
        # the planner reads the whole table for the admin's status filter until
        # autovacuum gets to it (bench/history_scale.py at 1,000,000: 101 ms, 36 ms after).
        migrations.RunSQL("ANALYZE deployments_deployment", migrations.RunSQL.noop),
    ]
