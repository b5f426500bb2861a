"""Deploy on push: webhook deliveries, the pushes each deployment covers, the
poller's state per app, and the schedule that polls (docs/autodeploy.md)."""

import django.db.models.deletion
from django.db import migrations, models


POLL_SCHEDULE = "norn-autodeploy-poll"


def create_schedule(apps, schema_editor):
    # Every minute; the task itself polls only the apps that are due
    # (NORN_POLL_INTERVAL, backoff) and does nothing when polling is off.
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name=POLL_SCHEDULE,
        defaults={
            "func": "deployments.tasks.poll_autodeploy",
            "schedule_type": "I",  # Schedule.MINUTES
            "minutes": 1,
            "repeats": -1,
        },
    )


def delete_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=POLL_SCHEDULE).delete()


class Migration(migrations.Migration):

    dependencies = [
        ('apps_registry', '0001_initial'),
        ('deployments', '0013_truth_statuses_commit_context'),
        ('django_q', '0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more'),
    ]

    operations = [
        migrations.CreateModel(
            name='AutoDeployState',
            fields=[
                ('app', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='autodeploy_state', serialize=False, to='apps_registry.app')),
                ('last_seen_sha', models.CharField(blank=True, max_length=64)),
                ('checked_at', models.DateTimeField(blank=True, null=True)),
                ('next_check_at', models.DateTimeField(blank=True, null=True)),
                ('failures', models.PositiveIntegerField(default=0)),
                ('last_error', models.TextField(blank=True)),
            ],
            options={
                'verbose_name': 'auto-deploy poll state',
            },
        ),
        migrations.CreateModel(
            name='WebhookDelivery',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('provider', models.CharField(max_length=16)),
                ('delivery_id', models.CharField(max_length=200)),
                ('received_at', models.DateTimeField(auto_now_add=True)),
                ('status_code', models.PositiveSmallIntegerField(blank=True, null=True)),
                ('outcome', models.TextField(blank=True)),
            ],
            options={
                'verbose_name': 'webhook delivery',
                'verbose_name_plural': 'webhook deliveries',
                'ordering': ['-received_at', '-id'],
                'indexes': [models.Index(fields=['-received_at', '-id'], name='webhook_delivery_recent')],
                'constraints': [models.UniqueConstraint(fields=('provider', 'delivery_id'), name='one_row_per_webhook_delivery')],
            },
        ),
        migrations.CreateModel(
            name='AutoDeployTrigger',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('source', models.CharField(choices=[('webhook', 'Webhook'), ('poll', 'Poll')], max_length=8)),
                ('provider', models.CharField(blank=True, max_length=16)),
                ('delivery_id', models.CharField(blank=True, max_length=200)),
                ('pusher', models.CharField(blank=True, max_length=150)),
                ('branch', models.CharField(max_length=255)),
                ('before', models.CharField(blank=True, max_length=64)),
                ('after', models.CharField(max_length=64)),
                ('commits', models.JSONField(blank=True, default=list)),
                ('commits_total', models.PositiveIntegerField(default=0)),
                ('action', models.CharField(max_length=16)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('deployment', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='autodeploy_triggers', to='deployments.deployment')),
            ],
            options={
                'verbose_name': 'auto-deploy trigger',
                'ordering': ['created_at', 'id'],
                'indexes': [models.Index(fields=['deployment', 'created_at'], name='autodeploy_trigger_deployment')],
            },
        ),
        migrations.RunPython(create_schedule, delete_schedule),
    ]
