from django.urls import path

from apps_registry import views as registry_views

urlpatterns = [
    path("", registry_views.app_list, name="app-list"),
]
