#!/usr/bin/env python
"""Django's command-line utility for Norn."""

import os
import sys


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("deploy", "follow"):
        # Asked of a running Norn server without starting Django, when it
        # can be (deployments/remote.py); else the full command below.
        from deployments import remote

        code = remote.run(sys.argv)
        if code is not None:
            try:
                sys.stdout.flush()
            except OSError:
                pass
            os._exit(code)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "norn_project.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    from norn_project import cli

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A bad environment value: say which and what is valid, no traceback.
        sys.stderr.write(f"Norn is misconfigured: {exc}\n")
        sys.exit(cli.BAD_REQUEST)
    except KeyboardInterrupt:
        # Ctrl-C before a command's own handler runs (while Django starts, or
        # during the system checks): the same line and code as inside one.
        sys.stderr.write(f"\n{cli.Command.interrupted}\n")
        os._exit(cli.INTERRUPTED)
    except BrokenPipeError:
        os._exit(cli.BROKEN_PIPE)


if __name__ == "__main__":
    main()
