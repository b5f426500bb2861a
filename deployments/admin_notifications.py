"""Notification deliveries in the admin: what each target was told of which
deployment's end, how many attempts it took and the target's last answer.

Read-only: rows are written by deployments/notifications.py only. Send again
(permission deployments.send_notification) starts a finished delivery over.
"""

from django.contrib import admin, messages
from django.utils.html import format_html

from apps_registry.models import App
from deployments import notifications
from deployments.models import NotificationDelivery


class TargetFilter(admin.SimpleListFilter):
    """The targets the apps' infraspecs name: a few App rows, where the
    deliveries' own distinct targets would mean reading all of them."""

    title = "target"
    parameter_name = "target"

    def lookups(self, request, model_admin):
        names = {
            rule["target"]
            for spec in App.objects.exclude(spec=None).values_list("spec", flat=True)
            for rule in (spec or {}).get("notify") or ()
        }
        return [(name, name) for name in sorted(names)]

    def queryset(self, request, queryset):
        return queryset.filter(target=self.value()) if self.value() else queryset


@admin.register(NotificationDelivery)
class NotificationDeliveryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "deployment_link", "event", "target", "kind", "status", "attempts",
                    "response_code", "short_error")
    list_filter = ("status", TargetFilter, "event")
    list_select_related = ("deployment__app",)
    search_fields = ("target", "deployment__app__name")
    show_full_result_count = False
    actions = ["send_again"]
    fields = ("public_id", "deployment_link", "event", "target", "kind", "status", "attempts", "response_code",
              "error", "created_at", "last_attempt_at", "sent_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_send_permission(self, request):
        return request.user.has_perm("deployments.send_notification")

    @admin.display(description="Deployment", ordering="deployment")
    def deployment_link(self, obj):
        d = obj.deployment
        return format_html('<a href="{}">{} {}</a>', d.get_absolute_url(), d.app.name, str(d.public_id)[:8])

    @admin.display(description="Last error")
    def short_error(self, obj):
        return obj.error if len(obj.error) <= 80 else obj.error[:79] + "…"

    @admin.action(description="Send again", permissions=["send"])
    def send_again(self, request, queryset):
        queued, pending = notifications.send_again(queryset.select_related(None))
        if queued:
            self.message_user(request, f"Queued {queued} notification(s) again.", messages.SUCCESS)
        if pending:
            self.message_user(request, f"{pending} still pending: each is already queued for its next attempt.",
                              messages.WARNING)
        left = queryset.filter(status=NotificationDelivery.Status.NOT_CONFIGURED).count()
        if left:
            self.message_user(request, f"{left} not configured: see each one's error for the variable to set.",
                              messages.WARNING)
