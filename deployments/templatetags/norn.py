"""Template filters of the dashboard: `{% load norn %}`.

`duration` is the one place a length of time becomes text; the live page's
running clocks show texts rendered here too (`duration_ticks`), so the page
never formats a duration itself.
"""

from datetime import timedelta

from html import escape

from django import template
from django.utils.safestring import mark_safe

register = template.Library()

# A running clock's texts cover this many seconds; live.js fetches the page's
# partials again when they run out.
TICKS = 600


@register.filter
def duration(seconds: float | timedelta | str | None) -> str:
    """12.3 -> "12 s", 185 -> "3 min 05 s": short enough for a table cell."""
    if seconds == "":  # a variable the context lacks, as Django passes it
        return ""
    if seconds is None:
        return "—"
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


@register.filter
def duration_ticks(seconds: float | timedelta | str | None, count: int = TICKS) -> str:
    """What a clock started at `seconds` shows each second from now on,
    separated by "|": live.js shows the n-th text n seconds after the
    element arrived."""
    if seconds in ("", None):
        return ""
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    return "|".join(duration(seconds + i) for i in range(count))


# The duration chart's repeated parts (templates/deployments/_duration_chart.html),
# written in one call each rather than by a template loop per segment and
# cell: those loops took a third of the app page's time.


@register.simple_tag
def chart_rects(bar) -> str:
    """A bar's segments, bottom to top, as SVG rectangles. Plain escaping
    (the coordinates are numbers charts.py computed): format_html per
    segment costs as much as the template loop did."""
    return mark_safe("".join(
        f'<rect class="seg seg-{escape(s["step"])}" x="{s["x"]}" y="{s["y"]}" '
        f'width="{s["w"]}" height="{s["h"]}" data-step="{escape(s["step"])}"/>'
        for s in bar["segments"]
    ))


@register.simple_tag
def chart_steps_title(bar) -> str:
    """"; build 3 min 05 s; test 12 s": the steps in a bar's tooltip."""
    return "".join(f"; {s['step']} {duration(s['seconds'])}" for s in bar["segments"])


@register.simple_tag
def chart_cells(bar) -> str:
    """A bar's row in the chart's table: one cell per step."""
    return mark_safe("".join(f'<td class="num">{escape(duration(seconds))}</td>' for seconds in bar["durations"]))


# A status's symbol: never shown by colour alone (templates/deployments/_status.html).
STATUS_SYMBOLS = {
    "deployed": "✓", "succeeded": "✓", "failed": "✗", "rolled_back": "↩", "skipped": "–",
    "pending": "○", "queued": "○",
}


@register.simple_tag
def status_badge(status: str, label: str) -> str:
    """A status as a symbol and its name (▶ for any running state): one call
    instead of an {% include %} per row of a list."""
    symbol = STATUS_SYMBOLS.get(status, "▶")
    return mark_safe(
        f'<span class="status status-{escape(str(status))}"><span class="symbol" aria-hidden="true">{symbol} </span>'
        f"{escape(str(label))}</span>"
    )
