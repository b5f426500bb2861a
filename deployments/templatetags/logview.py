"""The log viewer's tag: `{% load logview %}{% step_log step seq as log %}`.

Renders the tail of a step's output (deployments/logview.py) with the times
its lines were stored. The times of all the deployment's steps come from one
query, made once per rendering of the steps (the render context holds it), so
the page costs the same number of queries however many steps have output.
"""

from django import template
from django.utils import timezone
from django.utils.safestring import mark_safe

from deployments import logview

register = template.Library()


@register.simple_tag(takes_context=True)
def step_log(context, step, seq):
    key = ("logview-marks", step.deployment_id, seq)
    cache = context.render_context
    if key not in cache:
        cache[key] = logview.stored_marks(step.deployment_id, through_seq=seq if isinstance(seq, int) else None) if _any_output(context) else {}
    rendered = logview.tail(step.output, cache[key].get(step.name, ()))
    rendered.html = mark_safe(rendered.html)
    return rendered


def _any_output(context) -> bool:
    return any(step.output for step in context.get("steps") or ())


@register.simple_tag
def server_now_ms() -> int:
    """The server's clock, for the times of lines that arrive live (logview.js)."""
    return int(timezone.now().timestamp() * 1000)
