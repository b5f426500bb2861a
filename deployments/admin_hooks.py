"""Deploy on push in the admin: the webhook deliveries received, the pushes
each deployment covers, and the poller's state per app. All read-only: rows
are written by deployments/hooks.py and deployments/autodeploy.py."""

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from deployments.models import AutoDeployState, AutoDeployTrigger, WebhookDelivery


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnly):
    list_display = ("delivery_id", "provider", "received_at", "status_code", "outcome_short")
    list_filter = ("provider", "status_code")
    search_fields = ("delivery_id",)
    date_hierarchy = "received_at"
    fields = ("provider", "delivery_id", "received_at", "status_code", "outcome")
    readonly_fields = fields

    @admin.display(description="Outcome")
    def outcome_short(self, obj):
        return obj.outcome if len(obj.outcome) <= 120 else obj.outcome[:117] + "..."


@admin.register(AutoDeployTrigger)
class AutoDeployTriggerAdmin(ReadOnly):
    list_display = ("created_at", "app_name", "deployment_link", "action", "source", "provider", "pusher",
                    "branch", "after_short", "commits_total")
    # One query for the page: no per-row lookups of deployment or app.
    list_select_related = ("deployment__app",)
    list_filter = ("source", "provider", "action")
    search_fields = ("after", "delivery_id", "pusher", "deployment__app__name")
    date_hierarchy = "created_at"
    fields = ("deployment_link", "action", "source", "provider", "delivery_id", "pusher", "branch", "before",
              "after", "commits_total", "commit_list", "created_at")
    readonly_fields = fields

    @admin.display(description="App", ordering="deployment__app__name")
    def app_name(self, obj):
        return obj.deployment.app.name

    @admin.display(description="Deployment")
    def deployment_link(self, obj):
        return format_html('<a href="{}">{}</a>', obj.deployment.get_absolute_url(), obj.deployment.short_id)

    @admin.display(description="Commit", ordering="after")
    def after_short(self, obj):
        return obj.after[:12]

    @admin.display(description="Commits (newest last)")
    def commit_list(self, obj):
        rows = ((c["sha"][:12], c["subject"]) for c in obj.commits)
        shown = format_html_join("", "<li><code>{}</code> {}</li>", rows)
        more = obj.commits_total - len(obj.commits)
        note = format_html("<p>and {} earlier</p>", more) if more > 0 else ""
        return format_html("<ul>{}</ul>{}", shown, note)


@admin.register(AutoDeployState)
class AutoDeployStateAdmin(ReadOnly):
    list_display = ("app", "last_seen_short", "checked_at", "next_check_at", "failures", "last_error")
    list_select_related = ("app",)
    search_fields = ("app__name",)
    fields = ("app", "last_seen_sha", "checked_at", "next_check_at", "failures", "last_error")
    readonly_fields = fields

    @admin.display(description="Last seen", ordering="last_seen_sha")
    def last_seen_short(self, obj):
        return obj.last_seen_sha[:12]
