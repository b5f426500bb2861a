# Indexes for the history pages at a million deployments (issue 13).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('deployments', '0009_ingress_routes'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='deployment',
            index=models.Index(fields=['status', 'id'], name='deploy_by_status'),
        ),
        migrations.AddIndex(
            model_name='deployment',
            index=models.Index(fields=['app', '-finished_at', '-id'], name='deploy_app_finished'),
        ),
        migrations.AddIndex(
            model_name='deployment',
            index=models.Index(fields=['ref'], name='deploy_ref'),
        ),
        migrations.AddIndex(
            model_name='deployment',
            index=models.Index(fields=['commit_sha'], name='deploy_commit', opclasses=['varchar_pattern_ops']),
        ),
        migrations.AddIndex(
            model_name='deployment',
            index=models.Index(fields=['image'], name='deploy_image'),
        ),
    ]
