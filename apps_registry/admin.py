"""The registry in the admin: what was discovered, and what is wrong with it.

Rows come from infraspec.yaml files, so they are read-only here: an edit
would be overwritten by the next sync. Fix the file instead.
"""

from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from apps_registry import discovery
from apps_registry.models import App


@admin.register(App)
class AppAdmin(admin.ModelAdmin):
    list_display = ("name", "role", "status_label", "repo_url", "branch", "errors_list", "updated_at")
    list_filter = ("status", "role")
    search_fields = ("name", "repo_url", "directory")
    readonly_fields = (
        "name", "status", "role", "repo_url", "branch", "directory", "errors_list",
        "spec", "spec_digest", "discovered_at", "updated_at", "missing_since",
    )
    fields = readonly_fields
    actions = ["sync_now"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # Viewing stays allowed (view permission); saving is pointless.
        return False

    @admin.display(description="Validity", ordering="status")
    def status_label(self, obj):
        symbol = {"valid": "✔", "invalid": "✘", "missing": "?"}[obj.status]
        # The text says it too: status is never shown by colour or symbol alone.
        return format_html('<span class="norn-status norn-status-{}">{} {}</span>', obj.status, symbol, obj.get_status_display())

    @admin.display(description="Validation errors")
    def errors_list(self, obj):
        if not obj.errors:
            return "—"
        return format_html(
            '<ul class="norn-errors">{}</ul>',
            format_html_join("", "<li>{}</li>", ((e,) for e in obj.errors)),
        )

    def changelist_view(self, request, extra_context=None):
        discovery.ensure_fresh()
        return super().changelist_view(request, extra_context)

    @admin.action(description="Re-read infraspec files now")
    def sync_now(self, request, queryset):
        report = discovery.sync()
        discovery.forget_fingerprint()
        self.message_user(
            request,
            f"Synced: {len(report.added)} added, {len(report.updated)} updated, "
            f"{len(report.missing)} missing, {len(report.invalid)} invalid.",
            messages.SUCCESS,
        )
