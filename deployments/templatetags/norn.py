"""Template filters of the dashboard: `{% load norn %}`.

`duration` is the one place a length of time becomes text; the live page's
running clocks show texts rendered here too (`duration_ticks`), so the page
never formats a duration itself.
"""

from datetime import timedelta

from django import template

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
