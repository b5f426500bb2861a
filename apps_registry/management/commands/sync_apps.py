"""`manage.py sync_apps`: read NORN_APPS_DIR and update the registry."""

from django.conf import settings

from apps_registry import discovery
from apps_registry.models import App
from norn_project.cli import Command as NornCommand


class Command(NornCommand):
    help = "Discover apps in NORN_APPS_DIR (*/infraspec.yaml) and update the registry."

    def add_arguments(self, parser):
        parser.add_argument("--apps-dir", help="Directory to scan instead of NORN_APPS_DIR.")

    def handle(self, *args, apps_dir=None, **options):
        apps_dir = apps_dir or settings.NORN_APPS_DIR
        report = discovery.sync(apps_dir)
        discovery.forget_fingerprint()
        self.stdout.write(f"Scanned {apps_dir}")
        for label, names, style in (
            ("added", report.added, self.style.SUCCESS),
            ("updated", report.updated, self.style.SUCCESS),
            ("missing", report.missing, self.style.WARNING),
        ):
            for name in names:
                self.stdout.write(style(f"  {label}: {name}"))
        for app in App.objects.filter(status=App.Status.INVALID, name__in=report.invalid):
            self.stdout.write(self.style.ERROR(f"  invalid: {app.name}"))
            for error in app.errors:
                self.stdout.write(f"    {error}")
        self.stdout.write(
            f"{len(report.added)} added, {len(report.updated)} updated, "
            f"{len(report.unchanged)} unchanged, {len(report.missing)} missing, "
            f"{len(report.invalid)} invalid"
        )
