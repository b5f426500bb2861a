"""Rollbacks: putting an earlier deployment's image back into service.

A rollback is a deployment of its own (kind "rollback", one deploy step with
the same rollout gate), recorded with who asked, from which image to which;
when it succeeds, the deployment it replaced ends rolled_back. It takes the
app's lock like any deploy, and goes before queued deploys of the app.
"""

from deployments import transitions
from deployments.models import SERVICE_KINDS, WENT_LIVE, Deployment, DeploymentKind, DeploymentStatus, Snapshot


class NothingToRollBackTo(Exception):
    pass


def failed_rollout(app):
    """The app's latest deployment, if its deploy step failed: the cluster
    may be half-way to its image, so the last good one must be re-applied."""
    latest = (
        Deployment.objects.filter(app=app, kind__in=SERVICE_KINDS, finished_at__isnull=False)
        .newest_first()
        .first()
    )
    # A deploy cancelled during its rollout (Kubernetes goes on with what it
    # accepted) is as broken as one that failed it.
    if latest and latest.status in (DeploymentStatus.FAILED, DeploymentStatus.CANCELLED) and latest.steps.filter(
        name="deploy", status="failed"
    ).exists():
        return latest
    return None


def choose(app, target=None):
    """(target, replaces) for a rollback of `app`; raises NothingToRollBackTo."""
    live = Deployment.objects.live_for(app)
    broken = failed_rollout(app)
    if target is not None:
        if target.app_id != app.pk:
            raise NothingToRollBackTo(f"deployment {target.public_id} is not a deployment of {app.name}")
        if not Deployment.objects.went_live(app).filter(pk=target.pk).exists():
            raise NothingToRollBackTo(
                f"deployment {target.short_id} {never_live_reason(target)}; choose one that was deployed"
            )
        if broken is None and live is not None and target.image == live.image:
            raise NothingToRollBackTo(f"{target.image} is already in service (deployment {live.short_id})")
        return target, broken or live
    if broken is not None and live is not None:
        return live, broken
    target = Deployment.objects.rollback_candidates(app, exclude_image=live.image if live else "").first()
    if target is None:
        raise NothingToRollBackTo(
            f"{app.name} has no earlier successful deployment with another image to roll back to"
        )
    return target, live


def never_live_reason(deployment):
    """Why `deployment` is not one a rollback can go back to (it is not in
    Deployment.objects.went_live), in words."""
    if deployment.kind not in SERVICE_KINDS:
        return f"is a {deployment.get_kind_display().lower()}, which puts no image into service"
    if deployment.status == DeploymentStatus.ROLLED_BACK:
        return "never went live: its rollout failed, and a rollback replaced it"
    if deployment.status not in WENT_LIVE:
        return f"never went live (status {deployment.status})"
    return "has no image"


def queue(app, target, replaces, *, user=None, name="", via="cli"):
    # The commit and its context are the target's: what goes back into
    # service is known from the start.
    return transitions.create(
        app, target.commit_sha or "HEAD", user=user, name=name, via=via,
        runtime=target.runtime, kind=DeploymentKind.ROLLBACK, rollback_to=target, replaces=replaces,
        commit_sha=target.commit_sha, commit_subject=target.commit_subject,
        commit_author=target.commit_author, commit_time=target.commit_time,
    )


def after_failed_deploy(deployment, spec):
    """The deploy step of `deployment` failed its rollout gate: roll back by
    itself when the infraspec says so. Returns text for the error message."""
    if not spec.auto_rollback:
        return ""
    live = Deployment.objects.live_for(deployment.app)
    if live is None or live.pk == deployment.pk:
        return "; no earlier deployment to roll back to automatically"
    rollback = queue(deployment.app, live, deployment, name="norn", via="auto-rollback")
    return f"; rolling back automatically to {live.image} (rollback {rollback.short_id})"


def after_success(deployment):
    """A rollback succeeded: the deployment it replaced ends rolled_back."""
    if deployment.kind == DeploymentKind.ROLLBACK and deployment.replaces_id:
        transitions.mark_rolled_back(deployment.replaces_id, deployment)



def attach_matching_snapshots(app, choices):
    """For each rollback target, the database snapshot that matches its code
    (`choice.matching_snapshot`): the first pre-migration snapshot taken after
    it went live, since migrations of later deploys changed the database. One
    query for all of them."""
    if not choices:
        return
    oldest = min(c.finished_at or c.queued_at for c in choices)
    snapshots = list(
        Snapshot.objects.filter(app=app, kind=Snapshot.Kind.PRE_MIGRATION, created_at__gt=oldest)
        .order_by("created_at")
    )
    for choice in choices:
        since = choice.finished_at or choice.queued_at
        choice.matching_snapshot = next((s for s in snapshots if s.created_at > since), None)
