#!/usr/bin/env python
"""Django's command-line utility for Norn."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "norn_project.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A bad environment value: say which and what is valid, no traceback.
        sys.stderr.write(f"Norn is misconfigured: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
