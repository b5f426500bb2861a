"""Deployments in the admin: history with steps, output and snapshots, and the
operator actions (deploy an app, cancel a deployment), permission-checked."""

from html import escape

from django.contrib import admin, messages
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.core.paginator import Paginator
from django.db.models import Sum
from django.shortcuts import render
from django.template.defaultfilters import filesizeformat
from django.utils import formats, timezone
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.translation import gettext

from apps_registry.admin import AppAdmin
from apps_registry.models import App
from deployments import (  # noqa: F401 (the admin_* modules register their admins)
    admin_hooks, admin_ingress, admin_notifications, admin_queue, admin_records, admin_tokens, transitions,
)
from deployments.admin_rows import (
    AppFilter, QuickCheckbox, QuickRows, RuntimeFilter, SnapshotChangeList, indexed_search,
)
from deployments.models import Deployment, Snapshot, Step
from deployments.paging import BEFORE, AFTER, LongListPaginator
from deployments.requests import DeployRequestError, request_deployment, request_restore, request_rollback
from deployments.templatetags.ids import ident_html, shorten_image
from deployments.templatetags.norn import duration, status_badge

# A step's output on the deployment's admin page: its end, folded (the dashboard shows it all).
OUTPUT_LINES = 200
# A commit's subject in the list: its start (the column fits 1280 px).
SUBJECT_CHARS = 48
# The deployment's admin page, top to bottom (DeploymentAdmin.get_fields
# leaves out what does not apply).
DETAIL_FIELDS = (
    "deployment_id", "app", "kind", "status_shown", "ref", "commit", "commit_subject", "commit_author", "commit_time",
    "image_ref", "reason", "error_text", "requested_by_label",
    "runtime", "queued_at", "started_at", "finished_at", "took", "worker", "heartbeat_at", "cancel_requested_at",
    "cancel_requested_by",
)


class StepInline(admin.TabularInline):
    """The deployment page's steps, in order: status, duration, what went
    wrong, and the output's end folded away."""

    model = Step
    fields = ("name", "step_status", "started_at", "step_took", "outcome", "step_output")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("position",)

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="Status")
    def step_status(self, obj):
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="Took")
    def step_took(self, obj):
        return duration(obj.duration)

    @admin.display(description="Error or reason")
    def outcome(self, obj):
        if obj.error:
            return format_html('<pre class="norn-error">{}</pre>', obj.error)
        return obj.skip_reason or "—"

    @admin.display(description="Output")
    def step_output(self, obj):
        lines = obj.output.rstrip("\n").splitlines()
        if not lines:
            return "—"
        shown = lines[-OUTPUT_LINES:]
        summary = (f"{len(lines)} line{'s' if len(lines) > 1 else ''}" if len(lines) == len(shown)
                   else f"last {len(shown)} of {len(lines)} lines")
        return format_html('<details class="norn-output"><summary>{}</summary><pre>{}</pre></details>',
                           summary, "\n".join(shown))


class SameWayChangeList(ChangeList):
    """Sorts ties by id the same way as the column sorted by (the admin's own
    tie-break is always newest first), so one index read forwards or
    backwards serves both directions of a sort, and a page can start after
    the last row of the one before (?after=, ?before=: LongListPaginator)."""

    def _get_deterministic_ordering(self, ordering):
        ordering = super()._get_deterministic_ordering(ordering)
        if ordering and ordering[-1] == "-pk" and isinstance(ordering[0], str) and not ordering[0].startswith("-"):
            ordering[-1] = "pk"
        return ordering

    def get_filters_params(self, params=None):
        # The cursors choose the page, they filter nothing.
        lookup_params = super().get_filters_params(params)
        for name in (AFTER, BEFORE):
            lookup_params.pop(name, None)
        return lookup_params

    def get_query_string(self, new_params=None, remove=None):
        # Links to other sorts, filters and numbered pages start afresh.
        return super().get_query_string(new_params, [*(remove or []), AFTER, BEFORE])

    def page_links(self):
        """The page numbers to link. Past the exactly counted rows, only the
        ends and this page: a number deep inside a million rows is found by
        skipping rows, the previous and next links by starting at a row."""
        if not self.paginator.estimated:
            return list(self.paginator.get_elided_page_range(self.page_num))
        last = self.paginator.num_pages
        links = []
        for number in sorted({n for n in (1, 2, self.page_num, last - 1, last) if 1 <= n <= last}):
            if links and number - links[-1] > 1:
                links.append(self.paginator.ELLIPSIS)
            links.append(number)
        return links

    def before_link(self):
        page = self.paginator.shown
        if page is None or not page.has_previous():
            return ""
        return self.get_query_string({PAGE_VAR: page.previous_page_number(), BEFORE: page.before_cursor})

    def after_link(self):
        page = self.paginator.shown
        if page is None or not page.has_next():
            return ""
        return self.get_query_string({PAGE_VAR: page.next_page_number(), AFTER: page.after_cursor})


@admin.register(Deployment)
class DeploymentAdmin(QuickCheckbox, admin.ModelAdmin):
    # What an operator looks for, fitting 1280 px beside the filters (tests/test_browser_pages.py);
    # status and queued_at keep their positions (5, 7): the ?o= sorts bookmarks have.
    list_display = ("short_id", "app", "kind", "ref_commit", "status", "requested_by_label", "queued_at", "took")
    # By date with a filter, not date_hierarchy: its year and month links
    # need a SELECT DISTINCT date_trunc(...) over the whole (filtered) table.
    list_filter = ("status", RuntimeFilter, ("app", AppFilter), ("queued_at", admin.DateFieldListFilter))
    # "N of M": the M is a second COUNT(*) of the whole table.
    show_full_result_count = False
    paginator = LongListPaginator
    # Rendering a row's cells is most of the list's time: 50 rows, not 100.
    list_per_page = 50
    # Columns with an index for their order (deploy_recent, deploy_by_status);
    # app (by name, through a join) and ref would sort the whole table.
    sortable_by = ("status", "queued_at")
    # What the search box matches (get_search_results): each read through an index.
    search_fields = ("public_id", "app__name", "ref", "commit_sha", "image")
    search_help_text = "An id or its first characters (as listed), an app's name, a ref, a commit's first characters or an image."
    list_select_related = ("app", "requested_by")
    readonly_fields = DETAIL_FIELDS
    inlines = [StepInline]
    actions = ["cancel_deployments", "roll_back_to"]

    def get_changelist(self, request, **kwargs):
        return SameWayChangeList

    def list_rows(self, cl):
        """The list's rows as the admin's items_for_result writes them (the
        change_list template's `quick_result_list`), one string per
        cell. The admin looks every column up again, reverses a URL and
        translates the checkbox's label for each row: that was half the
        list's time. tests/test_history_admin.py checks that both agree."""
        placeholder = "0-norn-pk-0"
        change_url = add_preserved_filters(
            {"preserved_filters": cl.preserved_filters, "opts": cl.opts},
            reverse(f"admin:{cl.opts.app_label}_{cl.opts.model_name}_change", args=[placeholder],
                    current_app=self.admin_site.name),
        )
        label = gettext("Select this object for an action - {}")
        return [[
            f'<td class="action-checkbox"><input type="checkbox" name="{admin.helpers.ACTION_CHECKBOX_NAME}" '
            f'value="{obj.pk}" class="action-select" aria-label="{escape(label.replace("{}", str(obj)))}"></td>',
            f'<th class="field-short_id"><a href="{escape(change_url.replace(placeholder, str(obj.pk)))}">'
            f'{obj.short_id}</a></th>',
            f'<td class="field-app nowrap">{escape(str(obj.app))}</td>',
            f'<td class="field-kind">{escape(obj.get_kind_display())}</td>',
            f'<td class="field-ref_commit">{self.ref_commit(obj)}</td>',
            f'<td class="field-status">{escape(obj.get_status_display())}</td>',
            f'<td class="field-requested_by_label">{escape(obj.requested_by_label)}</td>',
            f'<td class="field-queued_at nowrap">'
            f'{escape(formats.localize(timezone.template_localtime(obj.queued_at)))}</td>',
            f'<td class="field-took">{escape(self.took(obj))}</td>',
        ] for obj in cl.result_list]

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        if queryset.model is not Deployment:
            # The history page of one deployment lists the admin's LogEntry rows.
            return Paginator(queryset, per_page, orphans, allow_empty_first_page)
        # The page's rows with only what the columns show (actions still get
        # whole rows: they use the changelist's queryset, not the page's).
        listed = queryset.only(
            "public_id", "app__name", "kind", "ref", "commit_sha", "commit_subject", "status", "requested_by__username",
            "requested_by_name", "requested_via", "queued_at", "started_at", "finished_at",
        )
        return self.paginator(listed, per_page, orphans, allow_empty_first_page,
                              after=request.GET.get(AFTER), before=request.GET.get(BEFORE))

    def get_search_results(self, request, queryset, search_term):
        return indexed_search(queryset, search_term), False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # Deployments are the record of what happened: never deleted here.
        return False

    def get_fields(self, request, obj=None):
        left_out = set()
        if obj is None or obj.is_terminal:
            left_out |= {"worker", "heartbeat_at"}  # bookkeeping of a run that ended
        if obj is not None and not obj.cancel_requested_at:
            left_out |= {"cancel_requested_at", "cancel_requested_by"}
        if obj is not None and not obj.error:
            left_out.add("error_text")
        if obj is not None and not obj.failure_reason:
            left_out.add("reason")
        if obj is not None and not obj.commit_subject:
            left_out |= {"commit_subject", "commit_author", "commit_time"}  # not read (yet)
        return [name for name in DETAIL_FIELDS if name not in left_out]

    @admin.display(description="ID")
    def short_id(self, obj):
        return obj.short_id

    @admin.display(description="Ref / commit")
    def ref_commit(self, obj):
        ref = escape(obj.ref) if obj.ref.strip() else "—"
        commit = ident_html(obj.commit_sha, 7) if obj.commit_sha else ""
        subject = escape(obj.commit_subject)
        if subject:  # one line of the list, the whole subject in its title
            short = escape(obj.commit_subject[:SUBJECT_CHARS] + ("…" if len(obj.commit_subject) > SUBJECT_CHARS else ""))
            subject = f'<br><span class="subject" title="{subject}">{short}</span>'
        return mark_safe(f'<code class="ref" title="{ref}">{ref}</code> {commit}{subject}')

    @admin.display(description="Requested by")
    def requested_by_label(self, obj):
        return obj.requested_by_label

    @admin.display(description="Duration")
    def took(self, obj):
        if obj.started_at and obj.finished_at:
            return duration(obj.finished_at - obj.started_at)
        return "—"

    @admin.display(description="Deployment")
    def deployment_id(self, obj):
        return mark_safe(ident_html(obj.public_id))

    @admin.display(description="Status")
    def status_shown(self, obj):
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="Commit")
    def commit(self, obj):
        return mark_safe(ident_html(obj.commit_sha, 12))

    @admin.display(description="Image")
    def image_ref(self, obj):
        return mark_safe(ident_html(obj.image, short=shorten_image(obj.image)))

    @admin.display(description="Why it did not go live")
    def reason(self, obj):
        return obj.failure_reason

    @admin.display(description="Error")
    def error_text(self, obj):
        return format_html('<pre class="norn-error">{}</pre>', obj.error)

    @admin.display(description="Run by")
    def worker(self, obj):
        """The worker running it, as "worker on host H, pid P", not its owner token."""
        if not obj.owner:
            return "no worker yet"
        try:
            host, pid, _ = transitions.parse_owner(obj.owner)
        except ValueError:
            return obj.owner
        return f"worker on host {host}, pid {pid}"

    @admin.action(description="Cancel selected deployments", permissions=["cancel"])
    def cancel_deployments(self, request, queryset):
        who = f"{request.user.get_username()} (admin)"
        count = 0
        for deployment in queryset.unfinished().select_related("app"):
            transitions.request_cancel(deployment, who)
            count += 1
        self.message_user(request, f"Cancel requested for {count} deployment(s).", messages.SUCCESS)

    def has_cancel_permission(self, request):
        return request.user.has_perm("deployments.cancel_deployment")

    def has_deploy_permission(self, request):
        return request.user.has_perm("deployments.start_deployment")

    @admin.action(description="Roll back to the selected deployment's image", permissions=["deploy"])
    def roll_back_to(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one deployment to roll back to.", messages.ERROR)
            return
        target = queryset.select_related("app").get()
        try:
            rollback = request_rollback(target.app.name, target, user=request.user, via="admin")
        except DeployRequestError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(
            request,
            format_html('Queued <a href="{}">rollback {}</a> of {} to {}.', rollback.get_absolute_url(),
                        rollback.short_id, target.app.name, target.image),
            messages.SUCCESS,
        )


@admin.register(Snapshot)
class SnapshotAdmin(QuickRows, admin.ModelAdmin):
    list_display = ("database", "app", "kind", "deployment", "path", "size", "short_sha256", "created_at")
    list_filter = (("app", AppFilter), "kind")
    actions = ["restore_snapshot"]
    search_fields = ("database", "path", "app__name")
    # The deployment column names its app.
    list_select_related = ("app", "deployment__app")
    readonly_fields = ("deployment", "app", "database", "path", "size", "sha256", "created_at")

    def get_changelist(self, request, **kwargs):
        return SnapshotChangeList

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="sha256")
    def short_sha256(self, obj):
        return obj.sha256[:12]

    def has_restore_permission(self, request):
        return request.user.has_perm("deployments.start_deployment")

    @admin.action(description="Restore the selected snapshot into its database…", permissions=["restore"])
    def restore_snapshot(self, request, queryset):
        """Asks first, on a page naming the database and the snapshot's time."""
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one snapshot to restore.", messages.ERROR)
            return None
        snapshot = queryset.select_related("app").get()
        if request.POST.get("confirmed") != "yes":
            return render(request, "admin/deployments/snapshot/restore_confirmation.html", {
                **self.admin_site.each_context(request),
                "title": f"Restore {snapshot.database}?",
                "snapshot": snapshot,
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            })
        try:
            restore = request_restore(snapshot, user=request.user, via="admin")
        except DeployRequestError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return None
        self.message_user(
            request,
            format_html('Queued <a href="{}">restore {}</a> of {} to snapshot {}.', restore.get_absolute_url(),
                        restore.short_id, snapshot.database, snapshot.pk),
            messages.SUCCESS,
        )
        return None


# The registry's app list, with what the deployments app adds to it: the
# deploy and rollback actions and the snapshots' disk usage. Registered here
# so the registry does not depend on the deployments app.
admin.site.unregister(App)


@admin.register(App)
class AppWithDeploymentsAdmin(QuickCheckbox, AppAdmin):
    list_display = (*AppAdmin.list_display, "snapshot_usage")
    actions = [*AppAdmin.actions, "deploy_apps", "roll_back_apps"]

    def get_queryset(self, request):
        # One query for the whole list, and sortable. Snapshot disk_usage()
        # totals one queryset: it would take a query per app on this page.
        return super().get_queryset(request).annotate(snapshot_bytes=Sum("snapshots__size"))

    @admin.display(description="Snapshots on disk", ordering="snapshot_bytes")
    def snapshot_usage(self, obj):
        return filesizeformat(obj.snapshot_bytes or 0)

    def has_deploy_permission(self, request):
        return request.user.has_perm("deployments.start_deployment")

    @admin.action(description="Deploy HEAD of the selected apps", permissions=["deploy"])
    def deploy_apps(self, request, queryset):
        for app in queryset:
            self._queue(request, app, lambda: request_deployment(app.name, "HEAD", user=request.user, via="admin"))

    @admin.action(description="Roll the selected apps back to their previous image", permissions=["deploy"])
    def roll_back_apps(self, request, queryset):
        for app in queryset:
            self._queue(request, app, lambda: request_rollback(app.name, user=request.user, via="admin"))

    def _queue(self, request, app, make):
        try:
            deployment = make()
        except DeployRequestError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(
                request,
                format_html('Queued <a href="{}">{} {}</a> of {}.', deployment.get_absolute_url(),
                            deployment.get_kind_display().lower(), deployment.short_id, app.name),
                messages.SUCCESS,
            )

