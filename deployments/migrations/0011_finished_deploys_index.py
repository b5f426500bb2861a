# The app page's success rate (DeploymentQuerySet.success_counts) from an index alone (issue 13).

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('apps_registry', '0001_initial'),
        ('deployments', '0010_history_at_scale'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name='deployment',
            index=models.Index(condition=models.Q(('kind', 'deploy'), ('status__in', ('deployed', 'failed', 'rolled_back'))), fields=['app', '-queued_at', '-id'], name='deploy_app_finished_deploys'),
        ),
    ]
