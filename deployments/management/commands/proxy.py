"""`manage.py proxy`: run Norn's TCP proxy (deployments/proxyserver.py) in the foreground.

The Docker runtime starts it by itself when a deploy needs it; run it by hand
(or under systemd) to have the apps' public ports served from boot.
"""

from django.core.management.base import BaseCommand, CommandError

from deployments import proxy, proxyserver


class Command(BaseCommand):
    help = (
        "Serve every app's public port (infraspec `port`) on 127.0.0.1 and forward it to the "
        "app's current container, following the routes the Docker runtime writes. "
        "Stops cleanly on SIGTERM or Ctrl-C."
    )
    # The proxy serves traffic: a check about, say, the Kubernetes settings
    # must not keep every app's public port closed.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--dir",
            help="The proxy directory (routes, status, pid file); default NORN_PROXY_DIR.",
        )

    def handle(self, *args, dir=None, **options):
        directory = dir or proxy.state_dir()
        try:
            proxyserver.run(directory)
        except proxy.ProxyError as exc:
            raise CommandError(str(exc)) from None
