"""`manage.py ingress status|sync|adopt|ca`: the single host's ingress (Caddy).

status  what Caddy answers, and each app's route (domains, port, container)
sync    load the routes Norn has into Caddy (after Caddy lost its config)
adopt   route every running norn-<app> container by its labels, then sync
        (migrating from Norn's old proxy, or after restoring Norn's database)
ca      print the internal CA's root certificate (PEM), for `curl --cacert`
"""

from django.conf import settings
from django.core.management.base import CommandError

from deployments import caddy, ingress
from deployments.cli import FAILED
from deployments.cli import Command as NornCommand
from deployments.models import IngressRoute
from deployments.runtimes import docker
from norn_project.cli import UNAVAILABLE


class Command(NornCommand):
    help = (
        "The single host's ingress (Caddy): `status` shows it and every app's route, `sync` loads "
        "Norn's routes into it, `adopt` routes every running app container by its labels, `ca` "
        "prints the internal CA's root certificate."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=("status", "sync", "adopt", "ca"))

    def handle(self, *args, action, **options):
        getattr(self, f"_{action}")()

    def _require(self):
        why = ingress.alive()
        if why:
            raise CommandError(why, returncode=UNAVAILABLE)

    def _status(self):
        self._require()
        hosts = ",".join(settings.NORN_INGRESS_LISTEN) or "every interface"
        self.stdout.write(f"Ingress (Caddy) at {settings.NORN_INGRESS_ADMIN}: answering")
        tls = settings.NORN_INGRESS_TLS
        https = "off" if tls == "off" else f"{settings.NORN_INGRESS_HTTPS_PORT} (certificates: {tls})"
        self.stdout.write(f"  listening on {hosts}: HTTP {settings.NORN_INGRESS_HTTP_PORT}, HTTPS {https}")
        routes = ingress.routes()
        in_sync = caddy.request("GET", "/config/") == caddy.build(routes)
        self.stdout.write(
            "  Caddy runs Norn's routes" if in_sync
            else "  Caddy does NOT run Norn's routes: run `manage.py ingress sync`"
        )
        flights = caddy.upstreams()
        for row in IngressRoute.objects.all():
            reached = [*row.domains, *([f"port {row.port}"] if row.port else [])]
            https_note = f" (https: {row.https})" if row.domains else ""
            busy = flights.get(f"127.0.0.1:{row.backend}", 0)
            self.stdout.write(
                f"{row.app_name}: {', '.join(reached)}{https_note} -> 127.0.0.1:{row.backend}"
                f" (deployment {row.deployment[:8] or '?'}), {busy} request(s) in flight"
            )
        if not routes:
            self.stdout.write("No app is routed.")
        if not in_sync:
            raise CommandError("the ingress's config differs from Norn's routes", returncode=FAILED)

    def _sync(self):
        self._require()
        try:
            ingress.apply()
        except ingress.IngressError as exc:
            raise CommandError(str(exc), returncode=FAILED) from None
        self.stdout.write(f"Loaded {IngressRoute.objects.count()} route(s) into the ingress.")

    def _adopt(self):
        self._require()
        try:
            found = docker.served_containers()
        except docker.Error as exc:
            raise CommandError(str(exc), returncode=UNAVAILABLE) from None
        failed = False
        for route, deployment in found:
            current = ingress.route(route.app)
            if current == route:
                self.stdout.write(f"{route.app}: already routed to 127.0.0.1:{route.backend}")
                continue
            try:
                ingress.set_route(route, deployment)
            except ingress.IngressError as exc:
                failed = True
                self.stderr.write(f"{route.app}: not routed: {exc}")
                continue
            self.stdout.write(f"{route.app}: routed to 127.0.0.1:{route.backend}")
        if not found:
            self.stdout.write("No running app container serves a port or domains.")
        self._sync()
        if failed:
            raise CommandError("some containers could not be routed (above)", returncode=FAILED)

    def _ca(self):
        self._require()
        if settings.NORN_INGRESS_TLS == "off":
            raise CommandError("NORN_INGRESS_TLS is off: the ingress has no certificates", returncode=FAILED)
        pem = caddy.root_certificate()
        if not pem:
            raise CommandError("the ingress has no internal CA yet: it makes one for its first HTTPS name",
                               returncode=FAILED)
        self.stdout.write(pem.rstrip("\n"))
