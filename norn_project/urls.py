"""Norn's URLs: the admin, the health endpoint and the dashboard."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.contrib.staticfiles import finders
from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe

from norn_project import health

admin.site.site_header = "Norn"
admin.site.site_title = "Norn"
admin.site.index_title = "Deploy control plane"


@login_not_required
@require_safe
@cache_control(max_age=86400, public=True)
def favicon(request):
    """/favicon.ico, which browsers ask for whatever the pages link: the SVG
    icon base.html links (static/norn/favicon.svg), so it never 404s."""
    with open(finders.find("norn/favicon.svg"), "rb") as icon:
        return HttpResponse(icon.read(), content_type="image/svg+xml")


urlpatterns = [
    path("favicon.ico", favicon, name="favicon"),
    path("healthz", health.healthz, name="healthz"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("deployments.urls")),
]
