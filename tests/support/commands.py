"""Norn's `manage.py` commands run as real processes against the test
database, for the CLI tests (tests/test_cli_*.py)."""

import os
import subprocess
import sys

from django.conf import settings

from tests.support.cluster import REPO_ROOT
from tests.support.servers import database_url_for_tests

# Generous: a command that hangs is what some tests catch.
HANG = 60


def command_env(**extra) -> dict:
    """This process's environment without a Norn server to ask, on the test database."""
    base = {k: v for k, v in os.environ.items() if k not in ("NORN_URL", "NORN_API_TOKEN")}
    return {**base, "DATABASE_URL": database_url_for_tests(), "NORN_APPS_DIR": str(settings.NORN_APPS_DIR),
            "PYTHONUNBUFFERED": "1", **extra}


def manage(*args, extra_env=None, stdin=subprocess.DEVNULL, timeout=HANG) -> subprocess.CompletedProcess:
    """`manage.py ARGS`, its output captured as text."""
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=command_env(**(extra_env or {})),
        stdin=stdin, capture_output=True, text=True, timeout=timeout,
    )
