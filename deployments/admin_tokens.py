"""API tokens in the admin: issued here, shown once, stored only as a digest.

Superusers issue tokens for any user; other staff (with the API token
permissions) see, issue and revoke only their own.
"""

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.utils.html import format_html

from deployments.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix_label", "user", "name", "created_at", "last_used_at")
    list_select_related = ("user",)
    search_fields = ("name", "prefix", "user__username")
    date_hierarchy = "created_at"

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("user", "name")
        return ("user", "name", "prefix_label", "created_at", "last_used_at")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        # Only the label can change: a token belongs to one user for good.
        return ("user", "prefix_label", "created_at", "last_used_at")

    def get_queryset(self, request):
        tokens = super().get_queryset(request)
        if request.user.is_superuser:
            return tokens
        return tokens.filter(user=request.user)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user" and not request.user.is_superuser:
            # The form then rejects any other user, whatever is posted.
            kwargs["queryset"] = get_user_model()._default_manager.filter(pk=request.user.pk)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        initial.setdefault("user", request.user.pk)
        return initial

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        row, token = ApiToken.issue(obj.user, obj.name)
        # The admin goes on with `obj` (the log entry, the redirect to its
        # page), so it becomes the row issue() created. The token itself
        # lives only in the message below; the row holds its digest.
        obj.pk = row.pk
        obj.prefix = row.prefix
        obj.digest = row.digest
        obj.created_at = row.created_at
        obj._state.adding = False
        obj._state.db = row._state.db
        self.message_user(
            request,
            format_html(
                "The token for {} is <code>{}</code>. Copy it now: "
                "Norn keeps only a digest and cannot show it again.",
                obj.user.get_username(),
                token,
            ),
            messages.SUCCESS,
        )

    @admin.display(description="Token", ordering="prefix")
    def prefix_label(self, obj):
        return f"{obj.prefix}…"
