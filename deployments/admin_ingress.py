"""The ingress's routes in the admin: read-only, since a change must go
through the ingress (deploy, undeploy, `manage.py ingress sync|adopt`), which
loads it into Caddy in the same transaction."""

from django.contrib import admin

from deployments.models import IngressRoute


@admin.register(IngressRoute)
class IngressRouteAdmin(admin.ModelAdmin):
    list_display = ("app_name", "reached_at", "https", "backend_address", "deployment", "updated_at")
    search_fields = ("app_name",)
    readonly_fields = ("app_name", "domains", "https", "port", "backend", "deployment", "draining", "updated_at")

    @admin.display(description="Reached at")
    def reached_at(self, route):
        return ", ".join([*route.domains, *([f"port {route.port}"] if route.port else [])])

    @admin.display(description="Container")
    def backend_address(self, route):
        return f"127.0.0.1:{route.backend}"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
