"""django-q2's schedules and tasks are read-only in the admin: a staff user,
whatever permissions they hold, cannot make the worker run code of their
choosing (issue: the admin runs no arbitrary code)."""

import pytest
from django.contrib.auth.models import Permission, User
from django_q.models import Schedule, Success
from django_q.tasks import async_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def scheduler_staff(client):
    """A staff user holding every django-q2 permission there is."""
    user = User.objects.create_user("sched", password="x", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="django_q"))
    client.force_login(user)
    return user


def test_staff_with_add_schedule_cannot_create_a_schedule(client, scheduler_staff):
    assert client.get("/admin/django_q/schedule/add/").status_code == 403
    response = client.post("/admin/django_q/schedule/add/", {
        "name": "owned", "func": "os.system", "args": "'touch /tmp/owned'",
        "schedule_type": "O", "repeats": "-1", "next_run_0": "2026-01-01", "next_run_1": "00:00:00",
    })
    assert response.status_code == 403
    assert not Schedule.objects.filter(func="os.system").exists()


def test_superuser_cannot_create_or_change_a_schedule_either(client, admin_user):
    client.force_login(admin_user)
    existing = Schedule.objects.create(name="norn-cron:x", func="deployments.tasks.run_cron_job", args="1")
    assert client.get("/admin/django_q/schedule/add/").status_code == 403
    client.post(f"/admin/django_q/schedule/{existing.pk}/change/", {"name": existing.name, "func": "os.system"})
    existing.refresh_from_db()
    assert existing.func == "deployments.tasks.run_cron_job"
    # Looking is fine: the detail page shows it without a save button.
    page = client.get(f"/admin/django_q/schedule/{existing.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert client.post(f"/admin/django_q/schedule/{existing.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Schedule.objects.filter(pk=existing.pk).exists()


def test_stored_tasks_cannot_be_resubmitted(client, admin_user):
    client.force_login(admin_user)
    Success.objects.create(
        id="a" * 32, name="t", func="os.system", args=("touch /tmp/owned",), kwargs={},
        started="2026-01-01T00:00:00Z", stopped="2026-01-01T00:00:01Z", success=True,
    )
    changelist = client.get("/admin/django_q/success/")
    assert changelist.status_code == 200 and b"resubmit_task" not in changelist.content
    queued_before = _queued()
    client.post("/admin/django_q/success/", {"action": "resubmit_task", "_selected_action": ["a" * 32]})
    assert _queued() == queued_before


def _queued():
    from django_q.models import OrmQ

    return OrmQ.objects.count()


def test_norn_still_queues_its_own_tasks():
    # The lock is the admin's; Norn's code keeps using django-q2 as before.
    async_task("deployments.tasks.recover_and_dispatch")
    from django_q.models import OrmQ

    assert OrmQ.objects.count() == 1
