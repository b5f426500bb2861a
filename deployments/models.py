"""What happened: deployments, their steps and events, snapshots, cron runs.

The state machine itself (which status follows which) lives in
deployments/states.py; these are the rows it writes.
"""

import datetime
import uuid

from django.conf import settings
from django.db import models
from django.db.models import CharField, Exists, OuterRef, Q, Subquery
from django.db.models.functions import Cast
from django.urls import reverse
from django.utils import timezone

from apps_registry.models import App


class DeploymentStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    CLONING = "cloning", "Cloning"
    BUILDING = "building", "Building"
    TESTING = "testing", "Testing"
    SNAPSHOTTING = "snapshotting", "Snapshotting"
    MIGRATING = "migrating", "Migrating"
    DEPLOYING = "deploying", "Deploying"
    CLEANING_UP = "cleaning_up", "Cleaning up"
    VERIFYING = "verifying", "Verifying"
    RESTORING = "restoring", "Restoring"
    DEPLOYED = "deployed", "Deployed"
    FAILED = "failed", "Failed"
    ROLLED_BACK = "rolled_back", "Rolled back"
    # Stopped on request, before it started or during a step: not a failure.
    CANCELLED = "cancelled", "Cancelled"


# The one place terminal states are named. Crash recovery (in_flight), the
# one-in-flight constraint and the partial indexes below (deploy_unfinished,
# deploy_app_finished_deploys) all depend on exactly these four; changing
# them needs a migration (0013 added cancelled).
TERMINAL_STATUSES = (
    DeploymentStatus.DEPLOYED,
    DeploymentStatus.FAILED,
    DeploymentStatus.ROLLED_BACK,
    DeploymentStatus.CANCELLED,
)
# Claimed by a worker and not finished: at most one per app.
NOT_IN_FLIGHT = (DeploymentStatus.QUEUED, *TERMINAL_STATUSES)


class DeploymentKind(models.TextChoices):
    # The seven-step pipeline for a commit.
    DEPLOY = "deploy", "Deploy"
    # Put an earlier deployment's image back into service (deploy step only).
    ROLLBACK = "rollback", "Rollback"
    # Restore a database snapshot (verify, snapshot the current state, restore).
    RESTORE = "restore", "Snapshot restore"


# Kinds that put an image into service (a restore changes only the database).
SERVICE_KINDS = (DeploymentKind.DEPLOY, DeploymentKind.ROLLBACK)
# Statuses a deployment that went live can end in: still deployed, or
# replaced by a rollback later. rolled_back alone does not say it went live:
# a deploy whose rollout failed is rolled_back too once a rollback replaced it.
WENT_LIVE = (DeploymentStatus.DEPLOYED, DeploymentStatus.ROLLED_BACK)


class DeploymentQuerySet(models.QuerySet):
    """The questions Norn asks of deployments, named once."""

    def in_flight(self):
        """Claimed by a worker and not finished (at most one per app)."""
        return self.exclude(status__in=NOT_IN_FLIGHT)

    def queued(self):
        return self.filter(status=DeploymentStatus.QUEUED)

    def terminal(self):
        return self.filter(status__in=TERMINAL_STATUSES)

    def unfinished(self):
        """Queued or in flight."""
        return self.exclude(status__in=TERMINAL_STATUSES)

    def named(self, text):
        """The deployment a user named by its UUID or its first 8+ characters.

        Raises Deployment.DoesNotExist, or ValueError with a message to show
        when `text` cannot name one or names several.
        """
        text = text.strip().lower()
        try:
            return self.get(public_id=uuid.UUID(text))
        except ValueError:
            pass
        if len(text) < 8 or len(text) > 36 or not all(c in "0123456789abcdef-" for c in text):
            raise ValueError(f"{text[:40]!r} is not a deployment id; use the UUID or at least its first 8 characters")
        matches = list(self.annotate(id_text=Cast("public_id", CharField())).filter(id_text__startswith=text)[:2])
        if not matches:
            raise self.model.DoesNotExist(text)
        if len(matches) > 1:
            raise ValueError(f"{text} matches several deployments; give more characters")
        return matches[0]

    def newest_first(self):
        return self.order_by("-finished_at", "-pk")

    def went_live(self, app):
        """The app's deployments that went live and were healthy, newest first:
        the ones a rollback can go back to (docs/pipeline.md, "Which
        deployments went live").

        A deploy or rollback went live when its deploy step succeeded (the
        image passed its rollout gate and took the traffic) and it ended
        deployed, or was deployed and later replaced by a rollback. A
        deployment whose deploy step failed never went live, whatever its
        status: after an automatic rollback it is rolled_back too.
        """
        deploy_step_succeeded = Step.objects.filter(
            deployment=OuterRef("pk"), name="deploy", status=StepStatus.SUCCEEDED
        )
        return (
            self.filter(app=app, kind__in=SERVICE_KINDS)
            .filter(
                # deployed: the pipeline ends a deployment so only when its
                # deploy step (never skipped) succeeded.
                Q(status=DeploymentStatus.DEPLOYED)
                | Q(Exists(deploy_step_succeeded), status=DeploymentStatus.ROLLED_BACK)
            )
            .exclude(image="")
            .newest_first()
        )

    def live_for(self, app):
        """The deployment whose image is in service now: the newest that went
        live and is still deployed (the deployed half of went_live, read
        through the deploy_live index)."""
        return (
            self.filter(app=app, kind__in=SERVICE_KINDS, status=DeploymentStatus.DEPLOYED)
            .exclude(image="")
            .newest_first()
            .first()
        )

    def live_per_app(self):
        """{app id: the deployment in service now} for every app that has one,
        in one query: live_for's probe of the deploy_live index per app
        (DISTINCT ON would sort every deployed deployment)."""
        live = (
            Deployment.objects.filter(app=OuterRef("pk"), kind__in=SERVICE_KINDS, status=DeploymentStatus.DEPLOYED)
            .exclude(image="")
            .order_by("-finished_at", "-id")
            .values("pk")[:1]
        )
        rows = self.filter(pk__in=App.objects.values(live_pk=Subquery(live)))
        return {deployment.app_id: deployment for deployment in rows}

    def with_rollback_targets(self):
        """Each row with `rollback_to_public_id` (Deployment.kind_label)
        without a join: a probe of the primary key for each row returned."""
        target = Deployment.objects.filter(pk=OuterRef("rollback_to_id")).values("public_id")[:1]
        return self.annotate(rollback_to_public_id=Subquery(target))

    def rollback_candidates(self, app, exclude_image=""):
        """Earlier deployments whose image a rollback can put back, newest
        first: those that went live (went_live), without the image in service."""
        candidates = self.went_live(app)
        return candidates.exclude(image=exclude_image) if exclude_image else candidates

    def newest_per_app(self):
        """Each app's newest deployment, in one query: one probe of
        deploy_app_recent per app (DISTINCT ON would read every app's whole
        history)."""
        newest = Deployment.objects.filter(app=OuterRef("pk")).order_by("-queued_at", "-id").values("pk")[:1]
        return self.filter(pk__in=App.objects.values(newest_pk=Subquery(newest)))

    def success_counts(self, latest=None):
        """{"total", "succeeded"} over the finished deployments here (the
        `latest` newest of them, if given), where one succeeded when its deploy
        step did: status alone cannot say, since a rollback turns both live
        and failed deploys into rolled_back.

        With `latest` the cost is bounded (that many index entries and
        probes of step_went_live), however long the history."""
        went_live = Step.objects.filter(deployment=OuterRef("pk"), name="deploy", status=StepStatus.SUCCEEDED)
        finished = self.terminal().annotate(went_live=Exists(went_live))
        if latest is not None:
            # Counted over a subquery: SELECT count(*) ... FROM (... LIMIT latest).
            finished = finished.order_by("-queued_at", "-id")[:latest]
        return finished.aggregate(
            total=models.Count("id"), succeeded=models.Count("id", filter=Q(went_live=True))
        )


class Deployment(models.Model):
    Status = DeploymentStatus
    Kind = DeploymentKind

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    app = models.ForeignKey(App, on_delete=models.PROTECT, related_name="deployments")
    # What the user asked for: HEAD, a branch or a (possibly abbreviated) SHA.
    ref = models.CharField(max_length=255, default="HEAD")
    commit_sha = models.CharField(max_length=40, blank=True)
    # The commit's context, read by the clone step with the SHA (a rollback
    # carries its target's): the subject line, the author's name (no email)
    # and the committer date.
    commit_subject = models.CharField(max_length=300, blank=True)
    commit_author = models.CharField(max_length=200, blank=True)
    commit_time = models.DateTimeField(null=True, blank=True)
    image = models.CharField(max_length=512, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    # The step whose failure (or cancel) ended the deployment, written with
    # its terminal status: failure_reason reads it and `error`, so the
    # history needs no join with the steps.
    failed_step = models.CharField(max_length=16, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.DEPLOY)
    # Rollbacks and restores go before queued deploys of the same app (0 before
    # 1); within a priority the queue is first in, first out.
    priority = models.PositiveSmallIntegerField(default=1)
    # A rollback: the earlier deployment whose image it puts back, and the
    # deployment it replaces (which ends rolled_back when the rollback succeeds).
    rollback_to = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    replaces = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # A restore: the snapshot it restores.
    snapshot = models.ForeignKey("Snapshot", null=True, blank=True, on_delete=models.SET_NULL, related_name="restores")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # Who asked when there is no Norn user (the OS user running the CLI).
    requested_by_name = models.CharField(max_length=150, blank=True)
    # Where the request came from: "cli", "admin", "dashboard", "autodeploy".
    requested_via = models.CharField(max_length=32, default="cli")
    runtime = models.CharField(max_length=16, blank=True)
    # What the Kubernetes runtime applied (runtimes/kubernetes.py): {"namespace",
    # "deployment", "service"} manifests, env values that hold passwords only as
    # references to the app's Secret. A rollback applies its target's again; a
    # later deploy to another namespace deletes what was left in this one.
    kube_applied = models.JSONField(null=True, blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # Execution bookkeeping. `owner` is the worker that claimed the deployment
    # ("host:pid:nonce"); it refreshes `heartbeat_at` while it runs, and crash
    # recovery fails deployments whose owner stopped doing so.
    owner = models.CharField(max_length=255, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Process group of the step's running subprocess, so recovery can kill a
    # tree that outlived its SIGKILLed worker.
    step_pgid = models.IntegerField(null=True, blank=True)
    workdir = models.CharField(max_length=4096, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_by = models.CharField(max_length=255, blank=True)
    # Last event sequence number handed out (events are numbered per deployment).
    last_event_seq = models.PositiveIntegerField(default=0)

    objects = DeploymentQuerySet.as_manager()

    class Meta:
        ordering = ["-queued_at", "-id"]
        permissions = [
            ("start_deployment", "Can start deployments and rollbacks"),
            ("cancel_deployment", "Can cancel deployments"),
        ]
        constraints = [
            # One deployment in flight per app, enforced by PostgreSQL: a
            # worker's claim (queued -> cloning) fails with an integrity error
            # while another deployment of the same app is past queued.
            models.UniqueConstraint(
                fields=["app"],
                condition=~Q(status__in=NOT_IN_FLIGHT),
                name="one_in_flight_deployment_per_app",
            ),
        ]
        indexes = [
            # "Next queued deployment for this app".
            models.Index(fields=["app", "status", "id"], name="deploy_app_status_id"),
            # The app page's history (a page of ids read from the index alone)
            # and the overview's newest deployment per app (one probe per app).
            # With -id the index gives the views' whole ordering, ties included.
            models.Index(fields=["app", "-queued_at", "-id"], name="deploy_app_recent"),
            # The admin deployment list (newest first) and its date filter.
            models.Index(fields=["-queued_at", "-id"], name="deploy_recent"),
            # The admin deployment list sorted by status, either way (its ties
            # are sorted by id in the same direction: DeploymentAdmin).
            models.Index(fields=["status", "id"], name="deploy_by_status"),
            # rollback.failed_rollout and went_live (the rollback page, the app
            # page's "Roll back…"): an app's deployments, latest finished first.
            models.Index(fields=["app", "-finished_at", "-id"], name="deploy_app_finished"),
            # The admin's search (DeploymentAdmin.get_search_results): a ref,
            # an image, a commit by its first characters (LIKE 'abc%', which
            # varchar_pattern_ops serves whatever the database's collation).
            models.Index(fields=["ref"], name="deploy_ref"),
            models.Index(fields=["commit_sha"], name="deploy_commit", opclasses=["varchar_pattern_ops"]),
            models.Index(fields=["image"], name="deploy_image"),
            # Deployment.objects.live_for (the app page's "In service", rollbacks):
            # the newest deployed deployment of an app, without sorting them all.
            models.Index(
                fields=["app", "-finished_at", "-id"],
                condition=Q(status=DeploymentStatus.DEPLOYED),
                name="deploy_live",
            ),
            # DeploymentQuerySet.success_counts (the app page's success rate): an
            # app's latest finished deploys, newest first, from the index alone
            # (deploy_app_recent would read each row to check kind and status).
            models.Index(
                fields=["app", "-queued_at", "-id"],
                condition=Q(kind=DeploymentKind.DEPLOY, status__in=TERMINAL_STATUSES),
                name="deploy_app_finished_deploys",
            ),
            # Crash recovery and the dispatcher: in-flight/queued deployments.
            models.Index(
                fields=["status"],
                condition=~Q(status__in=TERMINAL_STATUSES),
                name="deploy_unfinished",
            ),
        ]

    def __str__(self):
        return f"{self.app.name} {self.ref} ({self.short_id})"

    def get_absolute_url(self):
        return reverse("deployment-detail", args=[self.public_id])

    @property
    def short_id(self):
        return str(self.public_id)[:8]

    @property
    def is_terminal(self):
        return self.status in TERMINAL_STATUSES

    # Statuses whose deployment has a reason to show (failure_reason).
    REASON_STATUSES = (DeploymentStatus.FAILED, DeploymentStatus.CANCELLED, DeploymentStatus.ROLLED_BACK)

    @property
    def failure_reason(self):
        """Why it did not go live, in one line: the step and the first line of
        its error ("test: sh exited with status 1"), or the error alone when
        no step ran ("cancelled by alice"). "" unless it failed, was cancelled,
        or was rolled back after a failure. Reads this row only."""
        if self.status not in self.REASON_STATUSES or not (self.failed_step or self.error):
            return ""
        if self.status == DeploymentStatus.ROLLED_BACK and not self.failed_step:
            return ""  # it went live, then a rollback replaced it: nothing failed
        first = self.error.strip().splitlines()[0] if self.error.strip() else ""
        if self.failed_step:
            # The pipeline's error is "<step> failed: <the step's error>".
            prefix = f"{self.failed_step} failed: "
            first = first.removeprefix(prefix)
            return f"{self.failed_step}: {first}" if first else self.failed_step
        return first

    @property
    def kind_label(self):
        """What the history shows for its kind: the ref of a deploy, "rollback
        to <short id>" (with rollback_to_public_id annotated, or the related
        row), "restore of snapshot N"."""
        if self.kind == DeploymentKind.ROLLBACK:
            target = getattr(self, "rollback_to_public_id", None)
            if target is None and "rollback_to_public_id" not in self.__dict__ and self.rollback_to_id:
                target = self.rollback_to.public_id
            return f"rollback to {str(target)[:8]}" if target else "rollback"
        if self.kind == DeploymentKind.RESTORE:
            return f"restore of snapshot {self.snapshot_id}" if self.snapshot_id else "restore"
        return self.ref

    def live_state(self):
        """{"is_live": its image serves the traffic now, "superseded_by": the
        deployment that went live after it, if it went live and no longer
        is}, for its page: two queries at most."""
        if self.status != DeploymentStatus.DEPLOYED or self.kind not in SERVICE_KINDS or not self.image:
            return {"is_live": False, "superseded_by": None}
        live = Deployment.objects.live_for(self.app)
        if live is not None and live.pk == self.pk:
            return {"is_live": True, "superseded_by": None}
        later = Deployment.objects.went_live(self.app).filter(
            Q(finished_at__gt=self.finished_at) | Q(finished_at=self.finished_at, pk__gt=self.pk)
        )
        return {"is_live": False, "superseded_by": later.order_by("finished_at", "id").first()}

    def queued_ahead(self):
        """How many of this app's deployments are still to run before this one."""
        return Deployment.objects.filter(app_id=self.app_id, pk__lt=self.pk).unfinished().count()

    @property
    def requested_by_label(self):
        if self.requested_by:
            who = self.requested_by.get_username()
        else:
            who = self.requested_by_name or "system"
        return f"{who} via {self.requested_via}"


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class Step(models.Model):
    Status = StepStatus

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=16)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration = models.DurationField(null=True, blank=True)
    output = models.TextField(blank=True)
    skip_reason = models.CharField(max_length=255, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["deployment", "position"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "name"], name="one_row_per_step"),
        ]
        indexes = [
            # The app page's success rate: "did this deployment's deploy step
            # succeed", one index-only probe per finished deploy.
            models.Index(
                fields=["deployment"],
                condition=Q(name="deploy", status=StepStatus.SUCCEEDED),
                name="step_went_live",
            ),
        ]

    def __str__(self):
        return f"{self.name}: {self.status}"


class Event(models.Model):
    """Append-only: one row per state change, numbered per deployment.

    Clients that reconnect ask for everything after the last number they saw.
    """

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=32)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["deployment", "seq"]
        constraints = [
            # Also the index for "events of deployment D after seq N".
            models.UniqueConstraint(fields=["deployment", "seq"], name="event_seq_per_deployment"),
        ]

    def __str__(self):
        return f"{self.kind} #{self.seq}"


class SnapshotQuerySet(models.QuerySet):
    def kept(self):
        """Snapshots whose file is still there (not pruned by retention)."""
        return self.filter(pruned_at__isnull=True)

    def disk_usage(self):
        """{"count": snapshots kept, "bytes": their size on disk as recorded when written}."""
        usage = self.kept().aggregate(count=models.Count("id"), bytes=models.Sum("size"))
        return {"count": usage["count"], "bytes": usage["bytes"] or 0}


class Snapshot(models.Model):
    class Kind(models.TextChoices):
        PRE_MIGRATION = "pre-migration", "Before migrations"
        PRE_RESTORE = "pre-restore", "Before a restore"

    # The deployment (or restore) that took it.
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="snapshots")
    app = models.ForeignKey(App, on_delete=models.PROTECT, related_name="snapshots")
    database = models.CharField(max_length=63)
    path = models.CharField(max_length=4096)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PRE_MIGRATION)
    created_at = models.DateTimeField(auto_now_add=True)
    # When retention (snapshots.retain) removed its file. The row stays, so
    # the deployment that took it and every page naming it can say so.
    pruned_at = models.DateTimeField(null=True, blank=True)

    objects = SnapshotQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The app page's snapshot list.
            models.Index(fields=["app", "-created_at"], name="snapshot_app_recent"),
        ]

    def __str__(self):
        return self.path

    @property
    def pruned_note(self):
        """ "Snapshot 2 was pruned on <date>", or "" while its file is kept."""
        if self.pruned_at is None:
            return ""
        return f"Snapshot {self.pk} was pruned on {self.pruned_at:%Y-%m-%d %H:%M} UTC"

    @property
    def pruned_message(self):
        """Why a pruned snapshot cannot be restored, for commands and forms."""
        return (
            f"{self.pruned_note} by retention (snapshots.retain of {self.app.name}): "
            "its file is gone, so it cannot be restored"
        )


class CronJob(models.Model):
    """The image and command a cron app's django-q2 schedule runs."""

    app = models.OneToOneField(App, on_delete=models.CASCADE, related_name="cron_job")
    deployment = models.ForeignKey(Deployment, on_delete=models.SET_NULL, null=True)
    image = models.CharField(max_length=512)
    schedule = models.CharField(max_length=255)
    command = models.JSONField()
    env = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.app.name}: {self.schedule} {self.image}"


class CronRun(models.Model):
    job = models.ForeignKey(CronJob, on_delete=models.CASCADE, related_name="runs")
    image = models.CharField(max_length=512)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    output = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self):
        return f"{self.job.app.name} run at {self.started_at:%Y-%m-%d %H:%M}"


class ApiToken(models.Model):
    """A per-user token for the CLI and scripts (WebSocket and HTTP).

    Only a SHA-256 digest is stored; the token is shown once, when created
    in the admin. `prefix` (its first characters) finds the row to compare.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What it is for, e.g. 'laptop CLI'.")
    prefix = models.CharField(max_length=12, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    # last_used_at is written at most this often per token.
    LAST_USED_RESOLUTION = datetime.timedelta(minutes=1)

    class Meta:
        ordering = ["user", "name"]
        verbose_name = "API token"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(token):
        import hashlib

        return hashlib.sha256(token.encode()).hexdigest()

    @classmethod
    def issue(cls, user, name):
        """Create a token; returns (row, the token itself, to show once)."""
        import secrets

        token = "norn_" + secrets.token_urlsafe(32)
        row = cls.objects.create(user=user, name=name, prefix=token[:12], digest=cls.hash(token))
        return row, token

    @staticmethod
    def from_authorization(header):
        """The token of an `Authorization: Token <token>` header, else None.

        No token has a NUL in it, and PostgreSQL cannot compare one."""
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "token" or "\x00" in token:
            return None
        return token

    @classmethod
    def authenticate(cls, token):
        """The active user the token belongs to, or None."""
        import hmac

        if not token or not token.startswith("norn_"):
            return None
        row = cls.objects.select_related("user").filter(prefix=token[:12]).first()
        if row is None or not hmac.compare_digest(row.digest, cls.hash(token)) or not row.user.is_active:
            return None
        now = timezone.now()
        # To the minute: a CLI making requests back to back does not wait for
        # a write (and a commit) on each of them.
        if row.last_used_at is None or now - row.last_used_at >= cls.LAST_USED_RESOLUTION:
            cls.objects.filter(pk=row.pk).update(last_used_at=now)
        return row.user


class IngressRoute(models.Model):
    """Where the single host's ingress (Caddy) sends an app's traffic: one row
    per app in service behind it. Caddy's whole config is built from these rows
    (deployments/ingress.py), so they are what a restored or reinstalled
    ingress is given back."""

    app_name = models.CharField(max_length=63, primary_key=True)
    backend = models.PositiveIntegerField(help_text="The container's port on 127.0.0.1 ($PORT).")
    port = models.PositiveIntegerField(null=True, blank=True, unique=True, help_text="The app's own public port.")
    domains = models.JSONField(default=list, blank=True)
    https = models.CharField(max_length=8, default="redirect")
    deployment = models.CharField(max_length=64, blank=True, help_text="The deployment whose container serves it.")
    draining = models.JSONField(default=list, blank=True, help_text="Previous backends whose requests may be in flight.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["app_name"]
        verbose_name = "ingress route"

    def __str__(self):
        return f"{self.app_name} -> 127.0.0.1:{self.backend}"


class DeploymentDay(models.Model):
    """How many deployments of an app were queued on a day (UTC). Kept by
    triggers on the deployment table (migration 0012), in the transaction
    that adds, moves or removes a deployment, so any query sees the counts
    of the rows it sees. A page deep inside a history by number adds up
    days (a year is 365 rows per app) instead of skipping half a million
    rows (paging.LongListPaginator)."""

    pk = models.CompositePrimaryKey("app_id", "day")
    # The app's id; no foreign key: an app's counts go with its deployments.
    app_id = models.BigIntegerField()
    day = models.DateField()
    count = models.BigIntegerField()

    def __str__(self):
        return f"app {self.app_id} on {self.day}: {self.count}"


# --- Deploy on push: webhooks, coalescing, polling (docs/autodeploy.md) -------


class WebhookDelivery(models.Model):
    """One push webhook received, by the provider's delivery id: a delivery
    sent again (providers retry, people press "redeliver") finds its row and
    queues nothing more. Holds no secret and no payload."""

    provider = models.CharField(max_length=16)
    delivery_id = models.CharField(max_length=200)
    received_at = models.DateTimeField(auto_now_add=True)
    # The HTTP status Norn answered with and what it did, as it said it then.
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    outcome = models.TextField(blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name = "webhook delivery"
        verbose_name_plural = "webhook deliveries"
        constraints = [
            # Also the index for "was this delivery handled already".
            models.UniqueConstraint(fields=["provider", "delivery_id"], name="one_row_per_webhook_delivery"),
        ]
        indexes = [
            # The admin's list, newest first.
            models.Index(fields=["-received_at", "-id"], name="webhook_delivery_recent"),
        ]

    def __str__(self):
        return f"{self.provider} {self.delivery_id}"


class AutoDeployTrigger(models.Model):
    """A push (or a poll that saw the branch move) that a deployment covers.

    Several rows point at one deployment when pushes arrived while it was
    still queued and it was retargeted to the newest commit (coalescing)."""

    class Source(models.TextChoices):
        WEBHOOK = "webhook", "Webhook"
        POLL = "poll", "Poll"

    # Most commits one trigger keeps (their SHAs and subjects); the count of
    # all of them is kept in commits_total.
    MAX_COMMITS = 50

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="autodeploy_triggers")
    source = models.CharField(max_length=8, choices=Source.choices)
    # github, gitlab or gitea (Gitea and Forgejo); empty for a poll.
    provider = models.CharField(max_length=16, blank=True)
    delivery_id = models.CharField(max_length=200, blank=True)
    pusher = models.CharField(max_length=150, blank=True)
    branch = models.CharField(max_length=255)
    before = models.CharField(max_length=64, blank=True)
    after = models.CharField(max_length=64)
    # [{"sha": ..., "subject": ...}], oldest first, at most MAX_COMMITS.
    commits = models.JSONField(default=list, blank=True)
    commits_total = models.PositiveIntegerField(default=0)
    # What happened: "queued" (a new deployment), "retargeted" (a queued one
    # now deploys `after`) or "covered" (one queued or running has it already).
    action = models.CharField(max_length=16)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = "auto-deploy trigger"
        indexes = [
            # A deployment's triggers (its page, the admin), in the order they came.
            models.Index(fields=["deployment", "created_at"], name="autodeploy_trigger_deployment"),
        ]

    def __str__(self):
        return f"{self.source} {self.after[:12]} -> deployment {self.deployment_id}"

    # What the deployment page lists of a push's commits: the newest few.
    COMMITS_SHOWN = 3

    @property
    def newest_commits(self):
        """The newest COMMITS_SHOWN commits kept, newest first."""
        return list(reversed(self.commits[-self.COMMITS_SHOWN:])) if isinstance(self.commits, list) else []

    @property
    def provider_label(self):
        return {"github": "GitHub", "gitlab": "GitLab", "gitea": "Gitea or Forgejo"}.get(self.provider, self.provider)

    @property
    def commits_not_shown(self):
        return max(self.commits_total - len(self.newest_commits), 0)


class AutoDeployState(models.Model):
    """What the poller last saw of an autoDeploy app's branch, and when to
    look again (later and later while the repository cannot be reached)."""

    app = models.OneToOneField(App, on_delete=models.CASCADE, primary_key=True, related_name="autodeploy_state")
    last_seen_sha = models.CharField(max_length=64, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    next_check_at = models.DateTimeField(null=True, blank=True)
    # Consecutive failed polls; the wait before the next doubles with each.
    failures = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        verbose_name = "auto-deploy poll state"

    def __str__(self):
        return f"{self.app_id}: {self.last_seen_sha[:12] or 'not seen yet'}"


class NotificationDelivery(models.Model):
    """One notice of a deployment's end to one target (deployments/notifications.py):
    its status, attempts and the target's last answer.

    Only the target's name is stored: its URL, secret or addresses stay in
    Norn's environment (NORN_NOTIFY_<TARGET>_*), never in the database.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        NOT_CONFIGURED = "not_configured", "Not configured"

    # X-Norn-Delivery: the same on every attempt, so a receiver can drop repeats.
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="notifications")
    target = models.CharField(max_length=64)
    # webhook, slack or email; blank while the target is not configured.
    kind = models.CharField(max_length=16, blank=True)
    event = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    # Redacted and cut short (notifications.MAX_ERROR).
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]
        verbose_name = "notification delivery"
        verbose_name_plural = "notification deliveries"
        # The admin's Send again.
        permissions = [("send_notification", "Can send a notification again")]
        constraints = [
            # deployment_ended may run twice for one end (the pipeline and
            # crash recovery): each target is told once.
            models.UniqueConstraint(fields=["deployment", "target"], name="notification_once_per_target"),
        ]
        indexes = [
            # The admin's list filtered by status (failed ones first to look at), newest first.
            models.Index(fields=["status", "-id"], name="notification_status_recent"),
            # The admin's list filtered by target, newest first.
            models.Index(fields=["target", "-id"], name="notification_target_recent"),
        ]

    def __str__(self):
        return f"{self.event} of deployment {self.deployment_id} to {self.target}: {self.status}"


# --- Metrics for /metrics (deployments/metrics.py, docs/metrics.md) ----------


class MetricCount(models.Model):
    """A counter that /metrics reads instead of counting rows at each scrape
    (a million deployments would be a GROUP BY over a million rows). Kept by
    triggers (migration 0016) in the transaction that writes the row counted,
    so several web processes and workers agree without any memory of their own:
    - family "deployments": app_id, label1 = kind, label2 = the status a
      deployment ended with (counted once, when it first reaches a terminal
      status; a deploy later replaced by a rollback stays counted as deployed);
    - "webhooks": app_id 0, label1 = provider, label2 = the HTTP status answered;
    - "notifications": app_id 0, label1 = kind, label2 = the status a delivery
      ended with (sent, failed, not_configured; each time it ends)."""

    pk = models.CompositePrimaryKey("family", "app_id", "label1", "label2")
    family = models.CharField(max_length=16)
    # The app's id (no foreign key, like DeploymentDay); 0 when not per app.
    app_id = models.BigIntegerField()
    label1 = models.CharField(max_length=32)
    label2 = models.CharField(max_length=32)
    count = models.BigIntegerField()

    def __str__(self):
        return f"{self.family} {self.app_id} {self.label1} {self.label2}: {self.count}"


class DurationBucket(models.Model):
    """One bucket of a duration histogram for /metrics, kept by triggers
    (migration 0016): family "step" (name = the step, counted when its
    duration is written) or "wait" (name "", queued_at -> started_at, counted
    when a worker starts the deployment). `le` is the bucket's upper bound
    (Infinity for the last); count and sum (seconds) are the observations in
    that bucket alone: /metrics adds them up into Prometheus' cumulative ones."""

    # The buckets' upper bounds, seconds; migration 0016's triggers use the same.
    STEP_BOUNDS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
    WAIT_BOUNDS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200)

    pk = models.CompositePrimaryKey("family", "app_id", "name", "le")
    family = models.CharField(max_length=8)
    app_id = models.BigIntegerField()
    name = models.CharField(max_length=16)
    le = models.FloatField()
    count = models.BigIntegerField()
    sum = models.FloatField()

    def __str__(self):
        return f"{self.family} {self.app_id} {self.name} <= {self.le}: {self.count}"


class DoraChange(models.Model):
    """One change to production, for DORA's figures (deployments/dora.py): a
    finished deployment that went live, or a rollback or restore whatever its
    end. Kept by triggers (migration 0017) in the transaction that ends,
    replaces or removes a deployment, so the app page reads a window of these
    narrow rows instead of ordering and joining its deployments at each view.

    For a deploy that went live, `failed` and `restore_seconds` say what came
    after it: its next change (in queue order) was a rollback or a restore,
    and the next change that went live came that many seconds after it did."""

    deployment_id = models.BigIntegerField(primary_key=True)
    # The app's id (no foreign key, like DeploymentDay).
    app_id = models.BigIntegerField()
    kind = models.CharField(max_length=16, choices=DeploymentKind.choices)
    queued_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    # Deployment.objects.went_live's rule, a restore deployed too.
    went_live = models.BooleanField()
    # Commit time to finished (a deploy whose commit time is known).
    lead_seconds = models.FloatField(null=True)
    failed = models.BooleanField(default=False)
    restore_seconds = models.FloatField(null=True)

    class Meta:
        indexes = [
            # An app's changes in queue order: the window of the app page,
            # and the next change after a deployment (or the last before it).
            models.Index(fields=["app_id", "queued_at", "deployment_id"], name="dora_app_queued"),
            # /metrics: every app's window at once.
            models.Index(fields=["queued_at"], name="dora_queued"),
        ]

    def __str__(self):
        return f"{self.kind} {self.deployment_id} of app {self.app_id}"
