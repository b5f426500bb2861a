"""The dashboard: apps, their deployment history, live deployments, the deploy
form and the pipeline simulator. Server-rendered; htmx only swaps partials
that are also rendered inside the full pages, so every page works without JS.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import F
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from apps_registry import discovery
from apps_registry.models import App
from deployments import appdb, dora, rollback, states, transitions
from deployments.charts import chart_steps, duration_chart
from deployments.forms import DeployForm, RollbackForm
from deployments.models import TERMINAL_STATUSES, Deployment, DeploymentKind, Snapshot, Step
from deployments.paging import AFTER, BEFORE, LongListPaginator
from deployments.requests import DeployRequestError, request_deployment, request_restore, request_rollback
from deployments.simulator import Simulation, SimulationError, StaleStep

VIEW = "deployments.view_deployment"
START = "deployments.start_deployment"
CANCEL = "deployments.cancel_deployment"

HISTORY_PAGE_SIZE = 20
CHART_DEPLOYMENTS = 30  # bars in the app page's duration chart
# The success rate is over the app's latest finished deploys: counting a
# year of them would read every one on every page view.
SUCCESS_RATE_DEPLOYS = 1000
SNAPSHOTS_SHOWN = 25


def _require(request, *perms):
    if not request.user.has_perms(perms):
        raise PermissionDenied


def _get_app_for_user(request, name, *perms):
    # Permission first: a user who may not look must not learn which apps exist.
    _require(request, VIEW, *perms)
    return get_object_or_404(App, name=name)


def _get_deployment_for_user(request, public_id, *perms):
    _require(request, VIEW, *perms)
    queryset = Deployment.objects.select_related("app", "requested_by", "rollback_to", "replaces", "snapshot")
    return get_object_or_404(queryset, public_id=public_id)


def _get_snapshot_for_user(request, pk, *perms):
    _require(request, VIEW, *perms)
    return get_object_or_404(Snapshot.objects.select_related("app", "deployment"), pk=pk)


def _is_htmx(request):
    """A request for a partial. htmx restoring a page missing from its history
    cache also sends HX-Request, but wants the whole page."""
    return (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-History-Restore-Request") != "true"
    )


def _took(deployment, now):
    """How long a deployment took, or has been running."""
    if deployment.started_at is None:
        return None
    end = deployment.finished_at or now
    return (end - deployment.started_at).total_seconds()


# --- apps overview ------------------------------------------------------------


@login_required
@require_GET
def overview(request):
    _require(request, VIEW)
    discovery.ensure_fresh()
    apps = list(App.objects.all())
    latest = Deployment.objects.newest_per_app().select_related("requested_by")
    latest_by_app = {deployment.app_id: deployment for deployment in latest}
    # What serves each app's traffic: one query for every app (deploy_live).
    live_by_app = Deployment.objects.live_per_app()
    for app in apps:
        app.live = live_by_app.get(app.pk)
        last = latest_by_app.get(app.pk)
        # The last deployment is shown beside the live one only when it is another.
        app.last_deployment = last if last is None or app.live is None or last.pk != app.live.pk else None
        app.never_deployed = last is None
    ctx = {"apps": apps, "can_start": request.user.has_perm(START)}
    return render(request, "deployments/overview.html", ctx)


# --- app page -----------------------------------------------------------------


def _history_page(history, params):
    """One page of `history`, newest first (paging.LongListPaginator): the
    page after (?after=) or before (?before=) a deployment, read from
    deploy_app_recent where that one ended, or by number (?page=: the
    page's ids from the index alone, deep pages from the oldest end),
    counted exactly up to 10,000 deployments and estimated beyond."""
    # Only the columns the table shows (not the error text or the worker's fields).
    listed = history.only(
        "public_id", "app", "kind", "status", "ref", "commit_sha", "commit_subject", "queued_at", "started_at",
        "finished_at", "requested_by__username", "requested_by_name", "requested_via", "error", "failed_step",
        "rollback_to", "snapshot", "commit_author", "commit_time",
    ).with_rollback_targets()
    paginator = LongListPaginator(
        listed.order_by("-queued_at", "-id"), HISTORY_PAGE_SIZE,
        after=params.get(AFTER), before=params.get(BEFORE),
    )
    return paginator.get_page(params.get("page"))


@login_required
@require_GET
@vary_on_headers("HX-Request")  # the same URL answers a full page or a partial
def app_detail(request, name):
    app = _get_app_for_user(request, name)
    now = timezone.now()
    if request.GET.get("part") == "dora":  # fetched after the page: it reads a whole window of deployments
        return render(request, "deployments/_dora.html", {"dora": dora.for_app(app, request.GET.get("window"), now)})
    history = Deployment.objects.filter(app=app).select_related("requested_by")
    page = _history_page(history, request.GET)
    for deployment in page:
        deployment.took = _took(deployment, now)
    live = Deployment.objects.live_for(app)
    ctx = {"app": app, "history": page, "live": live}
    if _is_htmx(request):
        # The pagination links swap only the history table.
        return render(request, "deployments/_history.html", ctx)

    # Deploys only: rollbacks and restores are other operations.
    deploys = history.filter(kind=DeploymentKind.DEPLOY)
    finished = deploys.success_counts(SUCCESS_RATE_DEPLOYS)
    rate = round(100 * finished["succeeded"] / finished["total"]) if finished["total"] else None

    recent = list(
        deploys.filter(started_at__isnull=False)
        .order_by("-queued_at", "-id")
        # Only what the chart shows (templatetags/norn.py chart_bars, chart_table_rows).
        .select_related(None).only("public_id", "app", "ref", "status", "queued_at")
        [:CHART_DEPLOYMENTS]
    )
    recent.reverse()  # oldest on the left

    usage = Snapshot.objects.filter(app=app).disk_usage()
    snapshots = list(
        Snapshot.objects.filter(app=app).select_related("deployment")[: SNAPSHOTS_SHOWN + 1]
    )
    for snapshot in snapshots:
        snapshot.restore = appdb.restore_command(snapshot.database, snapshot.path, app=app.name)

    ctx.update(
        success_rate=rate,
        finished=finished,
        success_window=SUCCESS_RATE_DEPLOYS,
        # Each step's name, status and duration, never its log output: 210 rows of three columns.
        chart=duration_chart(recent, chart_steps(recent)),
        snapshots=snapshots[:SNAPSHOTS_SHOWN],
        more_snapshots=len(snapshots) > SNAPSHOTS_SHOWN,
        can_start=request.user.has_perm(START),
        live=live,
        retain=app.infraspec.snapshots.retain,
        snapshot_count=usage["count"],
        snapshot_bytes=usage["bytes"],
        # Offer "Roll back…" only when there is something to roll back to.
        can_roll_back=live is not None and (
            rollback.failed_rollout(app) is not None
            or Deployment.objects.rollback_candidates(app, exclude_image=live.image).exists()
        ),
        steps=states.STEPS,
    )
    return render(request, "deployments/app_detail.html", ctx)


# --- deployment page and its partials -------------------------------------------


def _steps_with_seq(deployment):
    """The deployment's steps, and the event number their output is current to.

    One statement reads both, so they come from the same snapshot: a log
    line is appended to Step.output in the same transaction as its event,
    and the page's script appends only log events numbered above this seq,
    never one twice or one missed.
    """
    steps = list(
        Step.objects.filter(deployment=deployment)
        .annotate(event_seq=F("deployment__last_event_seq"))
        .order_by("position")
    )
    seq = steps[0].event_seq if steps else deployment.last_event_seq
    now = timezone.now()
    for step in steps:
        if step.status == Step.Status.RUNNING and step.started_at:
            step.elapsed = max((now - step.started_at).total_seconds(), 0)
    return steps, seq


def _outcome_context(deployment, steps):
    """The error and what the user can do about it, once the pipeline is over."""
    if not deployment.is_terminal:
        return {"recovery": None}
    # In step order: the states functions read the mapping as the pipeline ran it.
    statuses = {step.name: step.status for step in steps}
    failed = states.failed_step(statuses)
    snapshot = Snapshot.objects.filter(deployment=deployment, kind=Snapshot.Kind.PRE_MIGRATION).first()
    recovery = states.recovery_options(statuses, has_snapshot=snapshot is not None) if failed else None
    ctx = {
        "recovery": recovery,
        "failed_step": failed,
        "on_failure": states.ON_FAILURE[failed] if failed else "",
        "snapshot": snapshot,
        "restore_command": appdb.restore_command(snapshot.database, snapshot.path, app=deployment.app.name) if snapshot else "",
        "best_effort_failures": [
            step for step in steps if step.name in states.BEST_EFFORT and step.status == Step.Status.FAILED
        ],
    }
    if deployment.kind == DeploymentKind.RESTORE and deployment.status == Deployment.Status.DEPLOYED:
        # What the restore overwrote, kept so the restore can be undone.
        ctx["undo_snapshot"] = Snapshot.objects.filter(
            deployment=deployment, kind=Snapshot.Kind.PRE_RESTORE
        ).first()
    return ctx


def _header_context(request, deployment):
    return {
        "deployment": deployment,
        # Only the deployment in service says it is live (Deployment.live_state).
        **deployment.live_state(),
        "took": _took(deployment, timezone.now()),
        "can_cancel": request.user.has_perm(CANCEL) and not deployment.is_terminal,
        # The pushes it deploys (auto-deploy), in the order they came.
        "pushes": list(deployment.autodeploy_triggers.all()),
    }


def _deployment_context(request, deployment):
    steps, seq = _steps_with_seq(deployment)
    ctx = {
        **_header_context(request, deployment),
        **_outcome_context(deployment, steps),
        "steps": steps,
        "seq": seq,
        "can_start": request.user.has_perm(START),
    }
    return ctx


@login_required
@require_GET
def deployment_detail(request, public_id):
    deployment = _get_deployment_for_user(request, public_id)
    ctx = _deployment_context(request, deployment)
    # The live script resumes from the deployment row's seq, read before the
    # steps: events between the two are replayed (status refreshes are
    # idempotent; log lines already in the output are skipped by number).
    ctx["resume_after"] = deployment.last_event_seq
    return render(request, "deployments/deployment_detail.html", ctx)


PARTIAL_TEMPLATES = {
    "header": "deployments/_deployment_header.html",
    "steps": "deployments/_steps.html",
    "outcome": "deployments/_outcome.html",
    "status": "deployments/_status.html",
}


@login_required
@require_GET
def deployment_partial(request, public_id, partial):
    """One piece of the deployment page, for the live script to swap in."""
    deployment = _get_deployment_for_user(request, public_id)
    if partial == "header":
        ctx = _header_context(request, deployment)
    elif partial == "status":
        ctx = {"status": deployment.status, "label": deployment.get_status_display()}
    else:
        ctx = _deployment_context(request, deployment)
    return render(request, PARTIAL_TEMPLATES[partial], ctx)


@login_required
@require_POST
def cancel(request, public_id):
    deployment = _get_deployment_for_user(request, public_id, CANCEL)
    status = transitions.request_cancel(deployment, f"{request.user.get_username()} (dashboard)")
    if _is_htmx(request):
        # The swapped-in header shows the outcome (a message would only
        # appear on some later page).
        deployment.refresh_from_db()
        return render(request, PARTIAL_TEMPLATES["header"], _header_context(request, deployment))
    if deployment.is_terminal:
        messages.info(request, "This deployment had already finished; nothing to cancel.")
    elif status in TERMINAL_STATUSES:
        messages.success(request, "Cancelled before it started.")
    else:
        messages.success(request, "Cancel requested: the running step is stopped, then cleanup runs.")
    return redirect("deployment-detail", public_id=deployment.public_id)


# --- deploy form ------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def deploy(request, name):
    """GET: the form. POST: validate and confirm; POST with confirm=yes: deploy."""
    app = _get_app_for_user(request, name, START)
    if request.method == "GET":
        ref = request.GET.get("ref", "HEAD")
        form = DeployForm(initial={"kind": DeployForm.kind_of(ref), "ref": "" if ref == "HEAD" else ref})
        return render(request, "deployments/deploy_form.html", {"app": app, "form": form})

    form = DeployForm(request.POST)
    # An invalid or missing app gets the form page, which says why it cannot
    # be deployed, instead of a confirmation that would only fail.
    if not form.is_valid() or not app.is_valid:
        return render(request, "deployments/deploy_form.html", {"app": app, "form": form})
    ref = form.cleaned_data["ref"]
    if request.POST.get("confirm") != "yes":
        ctx = {
            "app": app,
            "ref": ref,
            "kind": form.cleaned_data["kind"],
            "steps": [(name, states.ON_FAILURE[name]) for name in states.STEPS],
            "in_flight": Deployment.objects.filter(app=app).unfinished().order_by("queued_at").first(),
        }
        return render(request, "deployments/deploy_confirm.html", ctx)
    try:
        deployment = request_deployment(app.name, ref, user=request.user, via="dashboard")
    except DeployRequestError as exc:
        form.add_error(None, str(exc))
        return render(request, "deployments/deploy_form.html", {"app": app, "form": form})
    return redirect("deployment-detail", public_id=deployment.public_id)


# --- rollback and restore ------------------------------------------------------------

ROLLBACK_CHOICES = 10


@login_required
@require_http_methods(["GET", "POST"])
def rollback_app(request, name):
    """GET: what is live and which earlier images can be put back. POST: queue
    the rollback (requests.request_rollback) and follow it live."""
    app = _get_app_for_user(request, name, START)
    live = Deployment.objects.live_for(app)
    choices = list(
        Deployment.objects.rollback_candidates(app, exclude_image=live.image if live else "")
        .select_related("requested_by")[:ROLLBACK_CHOICES]
    )
    error = ""
    if request.method == "POST":
        form, target = RollbackForm(request.POST), None
        if not form.is_valid():
            return HttpResponseBadRequest("no such deployment of this app")
        if form.cleaned_data["to"]:
            target = Deployment.objects.filter(app=app, public_id=form.cleaned_data["to"]).first()
            if target is None:
                return HttpResponseBadRequest("no such deployment of this app")
        try:
            queued = request_rollback(app.name, target, user=request.user, via="dashboard")
        except DeployRequestError as exc:
            error = str(exc)
        else:
            return redirect("deployment-detail", public_id=queued.public_id)
    rollback.attach_matching_snapshots(app, choices)
    ctx = {"app": app, "live": live, "choices": choices, "error": error}
    return render(request, "deployments/rollback.html", ctx)


@login_required
@require_http_methods(["GET", "POST"])
def restore_snapshot(request, pk):
    """GET: a confirmation naming the database and the snapshot's time. POST:
    queue the restore (requests.request_restore) and follow it live."""
    snapshot = _get_snapshot_for_user(request, pk, START)
    error = ""
    if request.method == "POST":
        try:
            restore = request_restore(snapshot, user=request.user, via="dashboard")
        except DeployRequestError as exc:
            error = str(exc)
        else:
            return redirect("deployment-detail", public_id=restore.public_id)
    ctx = {
        "snapshot": snapshot,
        "restore_command": appdb.restore_command(snapshot.database, snapshot.path, app=snapshot.app.name),
        "error": error,
    }
    return render(request, "deployments/restore.html", ctx)


# --- pipeline simulator -----------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def simulator(request):
    """The seven steps, advanced by the user; the state travels in the form."""
    _require(request, VIEW)
    sim, stale = Simulation(), False
    if request.method == "POST":
        try:
            sim = Simulation.from_form(request.POST)
            sim.apply(request.POST.get("step"), request.POST.get("action"))
        except StaleStep:
            # A second click on a button that was already used (or the back
            # button): show the state as it is rather than apply the click
            # to whichever step runs now.
            stale = True
        except SimulationError as exc:
            return HttpResponseBadRequest(str(exc))
    ctx = {"sim": sim, "stale": stale, "focus": _is_htmx(request)}
    template = "deployments/_simulator.html" if _is_htmx(request) else "deployments/simulator.html"
    return render(request, template, ctx)


# --- a step's output: the raw download, and earlier lines for the log viewer ---


@login_required
@require_GET
def step_output(request, public_id, step):
    """One step's output, whole, as a plain-text download; with ?before=N, the
    lines before character N as the log viewer renders them ("Load earlier")."""
    from deployments import logview  # here, not above: this module is near its size limit

    deployment = _get_deployment_for_user(request, public_id)
    row = get_object_or_404(Step.objects.only("deployment_id", "name", "output"), deployment=deployment, name=step)
    if "before" not in request.GET:
        return logview.download(row, f"{deployment.app.name}-{deployment.short_id}-{row.name}.log")
    return logview.earlier(row, request.GET["before"])
