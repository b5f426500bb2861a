"""Loaded by pytest.ini (`-p`) before pytest-django reads the settings.

DEBUG is off by default, and then Norn refuses to start without SECRET_KEY.
A test run gets a key of its own, generated here; the subprocesses it starts
(daphne, qcluster, manage.py) inherit it, so they sign and check sessions
and derive the apps' database passwords exactly as the test process does.
"""

import os
import secrets

os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
