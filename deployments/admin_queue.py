"""django-q2's models in the admin, read-only.

django-q2's own admin lets a staff user with `add_schedule` create a schedule
for any importable function (`os.system` included) and re-run any stored task:
arbitrary code in the worker. Norn creates schedules and tasks only from its
own code, for functions it knows (deployments.tasks), so operators may look
here but change nothing.
"""

from django.contrib import admin
from django_q import admin as q_admin
from django_q.conf import Conf
from django_q.models import Failure, OrmQ, Schedule, Success


class ReadOnly:
    actions = None

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ScheduleAdmin(ReadOnly, q_admin.ScheduleAdmin):
    pass


class SuccessAdmin(ReadOnly, q_admin.TaskAdmin):
    pass


class FailureAdmin(ReadOnly, q_admin.FailAdmin):
    pass


class QueueAdmin(ReadOnly, q_admin.QueueAdmin):
    pass


READ_ONLY = {Schedule: ScheduleAdmin, Success: SuccessAdmin, Failure: FailureAdmin}
if Conf.ORM:  # django-q2 shows its ORM broker's queue only when that broker is in use
    READ_ONLY[OrmQ] = QueueAdmin

for model, model_admin in READ_ONLY.items():
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
