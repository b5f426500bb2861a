"""The admin's read-only records: a deployment's events, and the cron jobs
with their runs (registered from deployments/admin.py)."""

from django.contrib import admin

from deployments.admin_rows import QuickCheckbox
from deployments.models import CronJob, CronRun, Event
from deployments.paging import LongListPaginator


@admin.register(Event)
class EventAdmin(QuickCheckbox, admin.ModelAdmin):
    list_display = ("deployment", "seq", "kind", "created_at")
    # Newest first by the primary key: the model's ordering (by deployment,
    # which orders by its queue time) would sort every event there is.
    ordering = ("-id",)
    paginator = LongListPaginator
    show_full_result_count = False
    list_filter = ("kind",)
    list_select_related = ("deployment__app",)
    readonly_fields = ("deployment", "seq", "kind", "payload", "created_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class CronRunInline(admin.TabularInline):
    model = CronRun
    fields = ("started_at", "finished_at", "exit_code", "image", "output")
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0
    ordering = ("-started_at",)


@admin.register(CronJob)
class CronJobAdmin(admin.ModelAdmin):
    list_display = ("app", "schedule", "image", "updated_at")
    readonly_fields = ("app", "deployment", "image", "schedule", "command", "env", "updated_at")
    inlines = [CronRunInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
