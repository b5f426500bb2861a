"""Schedule the periodic crash recovery and dispatch safety net."""

from django.db import migrations


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="norn-recover-and-dispatch",
        defaults={
            "func": "deployments.tasks.recover_and_dispatch",
            "schedule_type": "I",  # Schedule.MINUTES
            "minutes": 1,
            "repeats": -1,
        },
    )


def delete_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="norn-recover-and-dispatch").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedule, delete_schedule)]
