"""Change lists that stay cheap with a million rows: the action checkbox
written directly (QuickCheckbox), every cell with its column looked up once
per page (QuickRows, with the `quick_result_list` template tag of
templatetags/norn_admin.py), filters that read no table to offer their
choices (RuntimeFilter, AppFilter) and the snapshot list's rows read with
only the columns it shows (SnapshotChangeList)."""

import datetime
import uuid
from html import escape

from django.contrib import admin
from django.contrib.admin.templatetags.admin_list import _coerce_field_name
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.views.main import ChangeList
from django.contrib.admin.utils import (
    FieldIsAForeignKeyColumnName, _get_non_gfk_field, display_for_field, display_for_value, lookup_field, quote,
)
from django.core.exceptions import FieldDoesNotExist, ObjectDoesNotExist
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils.html import conditional_escape, format_html
from django.utils.translation import gettext

from apps_registry.models import App


class QuickCheckbox:
    """Each row's action checkbox written directly: the admin renders a form
    widget's template per row, a third of a 100-row list's time."""

    def action_checkbox(self, obj):
        label = format_html(gettext("Select this object for an action - {}"), str(obj))
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            admin.helpers.ACTION_CHECKBOX_NAME, obj.pk, label,
        )


class QuickRows(QuickCheckbox):
    """The change list's rows with each column looked up once per page, not
    once per cell (the change_list template's `quick_result_list`): the
    admin's items_for_result finds the field, its label and the change URL
    again for every cell, most of a list's time. The cells are the admin's
    own (tests/test_history_paging.py compares them); popups and editable
    lists keep the admin's rows."""

    def list_rows(self, cl):
        columns = [self._cell_writer(cl, index, name) for index, name in enumerate(cl.list_display)]
        return [[write(obj) for write in columns] for obj in cl.result_list]

    def _cell_writer(self, cl, index, name):
        """A function writing column `name`'s cell of a row, as items_for_result does."""
        empty = self.get_empty_value_display()
        try:
            field = _get_non_gfk_field(cl.lookup_opts, name)
        except (FieldDoesNotExist, FieldIsAForeignKeyColumnName):
            field = None
        classes = ["field-" + _coerce_field_name(name, index)]
        if field is not None and isinstance(field, (models.DateField, models.TimeField, models.ForeignKey)):
            classes.append("nowrap")

        def shown(obj):
            """(the cell's text, escaped; its classes)."""
            try:
                if field is None or field.auto_created:
                    _, attr, value = lookup_field(name, obj, self)
                    boolean = getattr(attr.fget if isinstance(attr, property) else attr, "boolean", False)
                    if isinstance(value, str) and not value.strip():
                        value = ""
                    text = display_for_value(value, getattr(attr, "empty_value_display", empty), boolean)
                    dated = isinstance(value, (datetime.date, datetime.time))
                    return conditional_escape(text), (["action-checkbox"] if name == "action_checkbox" else
                                                      classes + ["nowrap"] if dated else classes)
                if isinstance(field.remote_field, models.ManyToOneRel):
                    related = getattr(obj, field.name)
                    return conditional_escape(empty if related is None else related), classes
                value = getattr(obj, name)
                if isinstance(value, str) and not value.strip():
                    value = ""
                return conditional_escape(display_for_field(value, field, empty, avoid_link=linked)), classes
            except ObjectDoesNotExist:
                return conditional_escape(empty), classes

        linked = self._linked(cl, index, name)
        if not linked:
            def write(obj):
                text, row_classes = shown(obj)
                return f'<td class="{" ".join(row_classes)}">{text}</td>'
            return write
        placeholder = "0-norn-pk-0"
        change_url = escape(add_preserved_filters(
            {"preserved_filters": cl.preserved_filters, "opts": cl.opts},
            reverse(f"admin:{cl.opts.app_label}_{cl.opts.model_name}_change", args=[placeholder],
                    current_app=self.admin_site.name),
        ))
        # The first linked cell is the row's header.
        tag = "th" if not any(self._linked(cl, i, n) for i, n in enumerate(cl.list_display[:index])) else "td"

        def write_linked(obj):
            text, row_classes = shown(obj)
            url = change_url.replace(placeholder, escape(str(quote(obj.pk))))
            return f'<{tag} class="{" ".join(row_classes)}"><a href="{url}">{text}</a></{tag}>'
        return write_linked

    @staticmethod
    def _linked(cl, index, name):
        """Whether the admin links column `name` to the row's change page."""
        links = cl.list_display_links
        return links is not None and (name in links or (not links and index == 0))


class RuntimeFilter(admin.SimpleListFilter):
    """The runtimes Norn has (settings.NORN_RUNTIME), named rather than
    found with a SELECT DISTINCT over every deployment."""

    title = "runtime"
    parameter_name = "runtime__exact"

    def lookups(self, request, model_admin):
        return [("docker", "Docker"), ("kubernetes", "Kubernetes")]

    def queryset(self, request, queryset):
        return queryset.filter(runtime=self.value()) if self.value() else queryset


class AppFilter(admin.RelatedFieldListFilter):
    """The filter by app from the apps' ids and names alone: the admin's
    reads every app's whole row (its infraspec's JSON too) for the links."""

    def field_choices(self, field, request, model_admin):
        ordering = self.field_admin_ordering(field, request, model_admin) or App._meta.ordering
        return list(App.objects.order_by(*ordering).values_list("pk", "name"))


class SnapshotChangeList(ChangeList):
    def get_results(self, request):
        # The rows with only what the columns show (actions still get whole
        # rows: cl.get_queryset()): reading the apps' infraspecs (JSON) and
        # the deployments' other columns was a third of the list's time.
        self.queryset = self.queryset.only(
            "database", "app__name", "kind", "deployment__ref", "deployment__public_id", "deployment__app__name",
            "path", "size", "sha256", "created_at",
        )
        super().get_results(request)


def indexed_search(queryset, search_term):
    """The admin deployment list's search (DeploymentAdmin), each word read
    through an index: every word must match an id by its first characters,
    an app by its name, a ref, a commit by its first characters, or an
    image, exactly. The admin's own (icontains on every field) reads every row."""
    words = search_term.split()[:10]
    app_ids = dict(App.objects.filter(name__in=words).values_list("name", "pk")) if words else {}
    for word in words:
        match = Q(ref=word) | Q(image=word)
        if word in app_ids:
            match |= Q(app_id=app_ids[word])
        hex_digits = word.lower().replace("-", "")
        if 1 <= len(hex_digits) <= 32 and all(c in "0123456789abcdef" for c in hex_digits):
            low = uuid.UUID(hex_digits.ljust(32, "0"))
            high = uuid.UUID(hex_digits.ljust(32, "f"))
            match |= Q(public_id__range=(low, high))
            if len(hex_digits) >= 4 and "-" not in word:
                match |= Q(commit_sha__startswith=word.lower())
        queryset = queryset.filter(match)
    return queryset
