"""App configs that keep what only the web server needs out of every other
process's start-up (each manage.py command, the workers).

- daphne's own AppConfig imports Twisted and OpenSSL (~250 ms); this one only
  puts daphne's management commands (its runserver) on the list, imported
  when run.
- The admin imports every app's admin.py (and with them the admin's forms,
  the infraspec parser: ~15% of start-up) when its URLs or its system
  checks are first needed (norn_project/adminsite.py), not at start-up.
"""

from django.apps import AppConfig
from django.contrib.admin.apps import SimpleAdminConfig


class DaphneRunserverConfig(AppConfig):
    name = "daphne"
    label = "daphne"
    verbose_name = "Daphne (runserver only)"


class AdminConfig(SimpleAdminConfig):
    default_site = "norn_project.adminsite.AdminSite"
