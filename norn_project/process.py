"""What kind of Norn process this is, for settings that differ by kind.

The ASGI entry point (norn_project/asgi.py, what daphne serves) sets WEB
before Django loads the settings. Under ASGI every request runs in a context
of its own, so Django's persistent connections would be a new connection per
request (~10 ms each): web processes share a pool instead (settings.py,
NORN_DB_POOL_SIZE). Other processes (the qcluster's forked workers, manage.py
commands) keep Django's persistent connections: a pool's threads do not
survive a fork.
"""

WEB = False
