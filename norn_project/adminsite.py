"""The admin site, discovering the apps' admin modules when first needed.

Django's AdminConfig imports every admin.py at start-up, in every process;
only the web server's admin URLs and `manage.py check` use them
(norn_project/apps.py).
"""

from django.contrib import admin


class AdminSite(admin.AdminSite):
    def get_urls(self):
        self.discover()
        return super().get_urls()

    def check(self, app_configs):
        self.discover()
        return super().check(app_configs)

    def discover(self):
        # Imports each installed app's admin module in INSTALLED_APPS order
        # (deployments' re-registers App after apps_registry's); importing
        # a module a second time does nothing.
        admin.autodiscover()
