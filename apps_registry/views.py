"""Registry pages: the list of discovered apps with their validity."""

from django.shortcuts import render

from apps_registry import discovery
from apps_registry.models import App


def app_list(request):
    discovery.ensure_fresh()
    apps = App.objects.all()
    return render(request, "apps_registry/app_list.html", {"apps": apps})
