"""Snapshot retention: keep the last N snapshots of each app (infraspec
snapshots.retain, default 5), pruning older files after a successful deploy.

Always kept, whatever their age: the snapshots of the current and the previous
deployment that went live (what a rollback would need), one a queued or
running restore is about to use, and the one the app's newest failed migration
points to, until a later migration of the app succeeds (its failure page and
error offer to restore it). A pruned snapshot keeps its row, with `pruned_at`,
so whatever names it can say it was pruned and when.
"""

import logging
from pathlib import Path

from django.utils import timezone

from deployments.models import Deployment, DeploymentKind, Snapshot, Step, StepStatus

log = logging.getLogger(__name__)


def failed_migration_snapshot(app):
    """The pre-migration snapshot of the app's newest failed migration, as long
    as no migration of the app succeeded after it; None otherwise."""
    failed = (
        Step.objects.filter(deployment__app=app, name="migrate", status=StepStatus.FAILED)
        .order_by("-finished_at", "-pk")
        .first()
    )
    if failed is None:
        return None
    later_success = Step.objects.filter(
        deployment__app=app, name="migrate", status=StepStatus.SUCCEEDED, finished_at__gt=failed.finished_at
    )
    if later_success.exists():
        return None
    return Snapshot.objects.filter(deployment_id=failed.deployment_id, kind=Snapshot.Kind.PRE_MIGRATION).first()


def prune(app, spec):
    """Remove the files of the app's snapshots beyond the newest `retain` and
    mark them pruned; returns their paths."""
    retain = spec.snapshots.retain
    # The current and the previous image in service: what a rollback needs.
    keep = set(Deployment.objects.went_live(app).values_list("pk", flat=True)[:2])
    # A snapshot a queued or running restore is about to use stays too.
    busy = set(
        Deployment.objects.filter(app=app, kind=DeploymentKind.RESTORE)
        .unfinished()
        .values_list("snapshot_id", flat=True)
    )
    protected = failed_migration_snapshot(app)
    if protected is not None:
        busy.add(protected.pk)
    pruned = []
    for snapshot in Snapshot.objects.filter(app=app).kept().order_by("-created_at", "-pk")[retain:]:
        if snapshot.deployment_id in keep or snapshot.pk in busy:
            continue
        try:
            Path(snapshot.path).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove snapshot file %s: %s", snapshot.path, exc)
            continue
        # Conditional: a restore queued meanwhile re-checks the file anyway
        # (its verify step), and a second prune marks nothing twice.
        Snapshot.objects.filter(pk=snapshot.pk, pruned_at__isnull=True).update(pruned_at=timezone.now())
        pruned.append(snapshot.path)
    if pruned:
        log.info("pruned %d snapshot(s) of %s", len(pruned), app.name)
    return pruned
