"""Change lists' rows written faster than the admin writes them: the
action checkbox directly (QuickCheckbox), and every cell with its column
looked up once per page (QuickRows, with the `quick_result_list` template
tag of templatetags/norn_admin.py)."""

import datetime
from html import escape

from django.contrib import admin
from django.contrib.admin.templatetags.admin_list import _coerce_field_name
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import (
    FieldIsAForeignKeyColumnName, _get_non_gfk_field, display_for_field, display_for_value, lookup_field, quote,
)
from django.core.exceptions import FieldDoesNotExist, ObjectDoesNotExist
from django.db import models
from django.urls import reverse
from django.utils.html import conditional_escape, format_html
from django.utils.translation import gettext


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
