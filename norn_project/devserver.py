"""`manage.py runserver` serves HTTP and WebSocket with daphne, without every
other command paying for it.

daphne's own AppConfig imports Twisted and OpenSSL at start-up (~250 ms in
every manage.py process). This one only puts daphne's management commands
(its runserver) on the list; they are imported when run.
"""

from django.apps import AppConfig


class DaphneRunserverConfig(AppConfig):
    name = "daphne"
    label = "daphne"
    verbose_name = "Daphne (runserver only)"
