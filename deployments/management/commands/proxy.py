"""`manage.py proxy`: run Norn's TCP proxy (deployments/proxyserver.py) in the foreground.

It is the service that serves the apps' public ports (norn-proxy.service, or a
process of scripts/quickstart). Norn's workers never start it: a deploy that
needs it while it is down fails at once and says to start it.
"""

from django.core.management.base import CommandError

from deployments import proxy, proxyserver
from deployments.cli import Command as NornCommand


class Command(NornCommand):
    help = (
        "Serve every app's public port (infraspec `port`) on 127.0.0.1 and forward it to the "
        "app's current container, following the routes the Docker runtime writes. Run it as "
        "a service (deploy/systemd/norn-proxy.service). Stops cleanly on SIGTERM or Ctrl-C."
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
