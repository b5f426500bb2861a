"""Norn's URLs: the admin, the health endpoint and the dashboard."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from norn_project import health

admin.site.site_header = "Norn"
admin.site.site_title = "Norn"
admin.site.index_title = "Deploy control plane"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("deployments.urls")),
]
