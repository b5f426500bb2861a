"""Discovery: keep the App table in step with NORN_APPS_DIR/*/infraspec.yaml.

`sync()` adds new apps, re-validates changed specs and marks vanished ones
missing (never deleting them: their deployments are history). `ensure_fresh()`
is the cheap call views make so a new directory shows up without a restart.
"""

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps_registry import appfiles, infraspec, yamlsafe
from apps_registry.models import App

log = logging.getLogger(__name__)

# Any constant works; it names Norn's "one sync at a time" advisory lock.
_SYNC_LOCK_ID = 0x4E6F726E


@dataclass
class SyncReport:
    """What one sync changed (added, updated, missing) or kept (unchanged),
    and which apps are invalid after it, changed or not."""

    added: list = field(default_factory=list)
    updated: list = field(default_factory=list)
    unchanged: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    invalid: list = field(default_factory=list)


def spec_files(apps_dir):
    """The infraspec files one level below `apps_dir`, sorted by directory."""
    apps_dir = Path(apps_dir)
    if not apps_dir.is_dir():
        return []
    return sorted(
        p
        for p in apps_dir.glob(f"*/{infraspec.FILENAME}")
        if p.is_file() and not p.parent.name.startswith(".")
    )


def sync(apps_dir=None):
    apps_dir = Path(apps_dir or settings.NORN_APPS_DIR)
    report = SyncReport()
    found = {}
    for path in spec_files(apps_dir):
        read = _read(path, apps_dir)
        if read is not None:
            found[path.parent.name] = (path, *read)

    with transaction.atomic():
        # Two processes syncing at once would race to insert the same new app;
        # the transaction-scoped advisory lock makes them take turns.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SYNC_LOCK_ID])
        existing = {app.name: app for app in App.objects.select_for_update()}
        for name, (path, digest, result) in found.items():
            app = existing.get(name)
            if app is None:
                app = App(name=name)
                report.added.append(name)
            elif app.spec_digest == digest and app.status != App.Status.MISSING:
                report.unchanged.append(name)
                # Still invalid: counted so, as on the sync that found it.
                if app.status == App.Status.INVALID:
                    report.invalid.append(name)
                continue
            else:
                report.updated.append(name)
            if not _save(app, path, digest, result):
                result = None
            if result is None or not result.ok:
                report.invalid.append(name)
        for name, app in existing.items():
            if name not in found and app.status != App.Status.MISSING:
                app.status = App.Status.MISSING
                app.missing_since = timezone.now()
                app.save(update_fields=["status", "missing_since", "updated_at"])
                report.missing.append(name)
    return report


def _read(path, apps_dir):
    """(digest, LoadResult) of one infraspec file, or None if it vanished.

    Never raises: whatever goes wrong with one file becomes that app's error,
    so one file cannot take down a page, a command or the other apps.
    """
    name = path.parent.name
    try:
        raw = appfiles.read_bytes(path, apps_dir, limit=yamlsafe.max_bytes())
    except appfiles.Refused as exc:
        # Listed as invalid, with why; its digest is the refusal's, so
        # nothing of the file it points at is read, even to hash it.
        return hashlib.sha256(str(exc).encode()).hexdigest(), infraspec.unreadable(path, exc)
    except OSError:
        return None  # removed while we looked: the next sync marks it missing
    digest = hashlib.sha256(raw).hexdigest()
    try:
        return digest, infraspec.parse_bytes(raw, str(path), name)
    except Exception as exc:  # a bug in the validator: contain it to this app
        log.error("infraspec of app %s could not be checked: %s in the validator", name, type(exc).__name__)
        return digest, _internal_error(path)


def _internal_error(path):
    return infraspec.LoadResult(None, [infraspec.SpecError(
        str(path), None, "", "could not be checked: Norn hit an internal error reading it (see Norn's log)",
    )])


def _save(app, path, digest, result):
    """Write one app's row in its own savepoint; False if it had to be saved
    as an internal error instead (the validator let through what the
    database refuses: a bug, but one app's)."""
    try:
        with transaction.atomic():
            _apply(app, path, digest, result)
            app.save()
        return True
    except (DatabaseError, ValueError) as exc:
        log.error("app %s could not be recorded: %s", app.name, type(exc).__name__)
    fallback = App.objects.filter(pk=app.pk).first() if app.pk else None
    fallback = fallback or App(name=app.name)
    # An empty digest: the next sync tries this file again.
    _apply(fallback, path, "", _internal_error(path))
    fallback.save()
    return False


def _apply(app, path, digest, result):
    app.directory = str(path.parent)
    app.spec_digest = digest
    app.missing_since = None
    app.errors = [str(e) for e in result.errors]
    if result.ok:
        spec = result.spec
        app.status = App.Status.VALID
        app.spec = result.data
        app.role = spec.role
        app.repo_url = spec.repo.url if spec.repo else ""
        app.branch = spec.repo.branch if spec.repo else ""
    else:
        app.status = App.Status.INVALID


_fresh_lock = threading.Lock()
_last_fingerprint = None


def fingerprint(apps_dir):
    """What changes whenever an infraspec is added, removed or edited."""
    entries = []
    for path in spec_files(apps_dir):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        entries.append((path.parent.name, st.st_mtime_ns, st.st_size, st.st_ino))
    return (str(apps_dir), tuple(entries))


def ensure_fresh(apps_dir=None):
    """Sync when the apps directory changed since this process last looked.

    A stat() per app: cheap enough to call on every dashboard and admin page.
    """
    global _last_fingerprint
    apps_dir = Path(apps_dir or settings.NORN_APPS_DIR)
    current = fingerprint(apps_dir)
    with _fresh_lock:
        if current == _last_fingerprint:
            return None
        report = sync(apps_dir)
        _last_fingerprint = current
        return report


def forget_fingerprint():
    """Make the next ensure_fresh() sync (tests, and after a manual sync)."""
    global _last_fingerprint
    with _fresh_lock:
        _last_fingerprint = None
