"""Snapshot retention: keep the last N snapshots of each app (infraspec
snapshots.retain, default 5), pruning older files and rows after a successful
deploy. The snapshots of the current and the previous deployment are always
kept: they are the ones a rollback or a restore would need."""

import logging
from pathlib import Path

from deployments.models import Deployment, DeploymentKind, Snapshot

log = logging.getLogger(__name__)


def prune(app, spec):
    """Delete the app's snapshots beyond the newest `retain`; returns their paths."""
    retain = spec.snapshots.retain
    # The current and the previous image in service: what a rollback needs.
    keep = set(Deployment.objects.went_live(app).values_list("pk", flat=True)[:2])
    # A snapshot a queued or running restore is about to use stays too.
    busy = set(
        Deployment.objects.filter(app=app, kind=DeploymentKind.RESTORE)
        .unfinished()
        .values_list("snapshot_id", flat=True)
    )
    pruned = []
    for snapshot in Snapshot.objects.filter(app=app).order_by("-created_at", "-pk")[retain:]:
        if snapshot.deployment_id in keep or snapshot.pk in busy:
            continue
        try:
            Path(snapshot.path).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove snapshot file %s: %s", snapshot.path, exc)
            continue
        pruned.append(snapshot.path)
        snapshot.delete()
    if pruned:
        log.info("pruned %d snapshot(s) of %s", len(pruned), app.name)
    return pruned

