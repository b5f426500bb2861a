"""Admin template tags: `{% load norn_admin %}`.

`quick_result_list` is the admin's `result_list` with the rows written by
the model admin's list_rows (DeploymentAdmin's, or QuickRows'), the columns
looked up once rather than per row (the change_list.html templates under
templates/admin/deployments/).
"""

from django import template
from django.contrib.admin.templatetags.admin_list import result_headers, result_list
from django.contrib.admin.templatetags.base import InclusionAdminNode
from django.utils.safestring import mark_safe

register = template.Library()


def quick_result_list(cl):
    if cl.formset or cl.is_popup:  # neither is used here; then the admin's own rows
        return result_list(cl)
    headers = list(result_headers(cl))
    return {
        "cl": cl,
        "result_hidden_fields": [],
        "result_headers": headers,
        "num_sorted_fields": sum(1 for h in headers if h["sortable"] and h["sorted"]),
        # A row's cells as one string: the template writes each "item" of a row.
        "results": [[mark_safe("".join(row))] for row in cl.model_admin.list_rows(cl)],
    }


@register.tag(name="quick_result_list")
def quick_result_list_tag(parser, token):
    return InclusionAdminNode(
        parser, token, func=quick_result_list, template_name="change_list_results.html", takes_context=False,
    )
