"""`manage.py validate_infraspec [path|app]`: check specs without touching the registry.

Exit status 0 when every spec is valid, 1 when any has errors (all are
listed, up to infraspec.MAX_ERRORS per file), so it can gate a commit hook or
CI job in the app's own repository. No file, however broken, makes it print a
traceback: the worst is one line saying the file could not be checked.
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError

from apps_registry import discovery, infraspec
from norn_project.cli import BAD_REQUEST, FAILED
from norn_project.cli import Command as NornCommand


class Command(NornCommand):
    help = (
        "Validate infraspec files: a path to a file or app directory, an app name "
        "in NORN_APPS_DIR, or (no argument) every app in NORN_APPS_DIR."
    )
    # Validating a file needs neither the database nor Redis.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("target", nargs="?", help="File, directory or app name.")

    def handle(self, *args, target=None, **options):
        files = self._files(target)
        failed = 0
        for path in files:
            try:
                result = infraspec.load(path, directory_name=path.parent.name)
            except Exception as exc:  # a validator bug must not hide the other files
                result = infraspec.LoadResult(None, [infraspec.SpecError(
                    str(path), None, "",
                    f"could not be checked: Norn hit an internal error ({type(exc).__name__}) reading it",
                )])
            if result.ok:
                self.stdout.write(self.style.SUCCESS(f"{path}: valid ({result.spec.role})"))
            else:
                failed += 1
                for error in result.errors:
                    self.stderr.write(self.style.ERROR(str(error)))
        summary = f"{len(files) - failed} valid, {failed} invalid"
        if failed:
            self.stderr.write(summary)
            raise SystemExit(FAILED)
        self.stdout.write(summary)

    def _files(self, target):
        if target is None:
            files = discovery.spec_files(settings.NORN_APPS_DIR)
            if not files:
                raise CommandError(f"No */{infraspec.FILENAME} found in NORN_APPS_DIR ({settings.NORN_APPS_DIR}).", returncode=BAD_REQUEST)
            return files
        path = Path(target)
        if path.is_file():
            return [path]
        if path.is_dir():
            if (path / infraspec.FILENAME).is_file():
                return [path / infraspec.FILENAME]
            raise CommandError(f"{path} has no {infraspec.FILENAME}.", returncode=BAD_REQUEST)
        candidate = Path(settings.NORN_APPS_DIR) / target / infraspec.FILENAME
        if "/" not in target and candidate.is_file():
            return [candidate]
        raise CommandError(
            f"{target!r} is neither a file, a directory with {infraspec.FILENAME}, "
            f"nor an app in NORN_APPS_DIR ({settings.NORN_APPS_DIR}).",
            returncode=BAD_REQUEST,
        )
