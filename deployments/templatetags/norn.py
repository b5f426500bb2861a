"""Template filters of the dashboard: `{% load norn %}`.

`duration` is the one place a length of time becomes text; the live page's
running clocks show texts rendered here too (`duration_ticks`), so the page
never formats a duration itself.
"""

import uuid
from datetime import timedelta
from html import escape

from django import template
from django.urls import reverse
from django.utils import dateformat, timezone
from django.utils.safestring import mark_safe

from deployments.templatetags.ids import ident_html

register = template.Library()

# A running clock's texts cover this many seconds; live.js fetches the page's
# partials again when they run out.
TICKS = 600
_NO_ID = uuid.UUID(int=0)


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
# written in one call per chart rather than by template loops per bar,
# segment and cell: those loops took most of the app page's time. Plain
# escaping: the coordinates are numbers charts.py computed.


def _segments(bar) -> str:
    """A bar's segments, bottom to top, as SVG rectangles."""
    return "".join(
        f'<rect class="seg seg-{escape(s["step"])}" x="{s["x"]}" y="{s["y"]}" '
        f'width="{s["w"]}" height="{s["h"]}" data-step="{escape(s["step"])}"/>'
        for s in bar["segments"]
    )


@register.simple_tag
def chart_bars(chart) -> str:
    """The bars, each a link to its deployment with a tooltip naming it,
    its status, its total and each step's duration."""
    url = reverse("deployment-detail", args=[_NO_ID])
    out = []
    for bar in chart["bars"]:
        d = bar["deployment"]
        steps = "".join(f"; {s['step']} {duration(s['seconds'])}" for s in bar["segments"])
        title = f"{d.short_id} · {d.ref} · {d.get_status_display()} · {duration(bar['total'])}{steps}"
        mark = (f'<text class="bar-mark" x="{bar["cx"]}" y="{bar["top"]}" dy="-0.3em" text-anchor="middle" '
                f'aria-hidden="true">{bar["mark"]}</text>' if bar["mark"] else "")
        out.append(
            f'<a href="{url.replace(str(_NO_ID), str(d.public_id))}" class="bar bar-{escape(d.status)}">'
            f"<title>{escape(title)}</title>{_segments(bar)}{mark}</a>"
        )
    return mark_safe("\n".join(out))


@register.simple_tag
def chart_table_rows(chart) -> str:
    """The chart's table: a row per bar, a cell per step."""
    url = reverse("deployment-detail", args=[_NO_ID])
    out = []
    for bar in chart["bars"]:
        d = bar["deployment"]
        queued = dateformat.format(timezone.localtime(d.queued_at), "M j H:i")
        cells = "".join(f'<td class="num">{escape(duration(seconds))}</td>' for seconds in bar["durations"])
        out.append(
            f'<tr><th scope="row"><a href="{url.replace(str(_NO_ID), str(d.public_id))}"><code>{d.short_id}</code></a> '
            f'<span class="muted">{escape(queued)}</span></th>'
            f"<td>{status_badge(d.status, d.get_status_display())}</td>{cells}"
            f'<td class="num">{escape(duration(bar["total"]))}</td></tr>'
        )
    return mark_safe("\n".join(out))


# A status's symbol: never shown by colour alone (templates/deployments/_status.html).
STATUS_SYMBOLS = {
    "deployed": "✓", "succeeded": "✓", "failed": "✗", "rolled_back": "↩", "skipped": "–", "cancelled": "⊘",
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


def clipped(text: str, width: int) -> str:
    """`text` escaped, cut to `width` characters ("…") with the whole of it
    in the title when cut."""
    if len(text) <= width:
        return escape(text)
    return f'<span title="{escape(text)}">{escape(text[: width - 1])}…</span>'


LIVE_ROW = '<tr class="live">'
LIVE_MARKER = ' <span class="live-marker" title="Its image serves the traffic now">● Live</span>'
SUBJECT_SHOWN = 60  # characters of a commit subject in a history row
REASON_SHOWN = 90  # characters of a failure reason


def what_cell(d) -> str:
    """A history row's "What": a deploy's ref, or the kind badge of a
    rollback ("rollback to 1a2b3c4d") or a restore ("restore of snapshot 3")."""
    if d.kind == "deploy":
        return f"<code>{escape(d.ref)}</code>"
    return f'<span class="kind kind-{escape(d.kind)}">{escape(d.kind_label)}</span>'


@register.simple_tag
def history_rows(deployments, live=None) -> str:
    """The history table's rows (templates/deployments/_history.html), one
    f-string each: the template's URL, date and display lookups per cell
    were a third of the app page's time. `deployment.took` is set by the
    view; `live` is the deployment in service (its row is marked). Every
    cell reads the row's own columns (failure_reason, kind_label with the
    view's rollback_to_public_id): no query per row.
    tests/test_history_paging.py checks the rows against template markup."""
    # One reverse for the page: the UUID is the URL's only variable part.
    url = reverse("deployment-detail", args=[_NO_ID])
    live_id = live.pk if live is not None else None
    rows = []
    for d in deployments:
        queued = timezone.localtime(d.queued_at)
        commit = ident_html(d.commit_sha, 12) if d.commit_sha else "—"
        if d.commit_subject:
            commit += f'<br><span class="subject">{clipped(d.commit_subject, SUBJECT_SHOWN)}</span>'
        if d.commit_author:
            # Who wrote the commit (the By column says who deployed it), and when.
            when = f' title="committed {timezone.localtime(d.commit_time):%Y-%m-%d %H:%M}"' if d.commit_time else ""
            commit += f' <span class="muted"{when}>by {escape(d.commit_author)}</span>'
        reason = d.failure_reason
        # A cancel is someone's choice, not an error: its reason is not red.
        why = f'<span class="why why-{escape(d.status)}">{clipped(reason, REASON_SHOWN)}</span>' if reason else ""
        is_live = d.pk == live_id
        rows.append(
            (LIVE_ROW if is_live else "<tr>") + "\n"
            f'        <th scope="row"><a href="{url.replace(str(_NO_ID), str(d.public_id))}"><code>{d.short_id}</code></a>'
            f'{LIVE_MARKER if is_live else ""}</th>\n'
            f'        <td data-label="Status">{status_badge(d.status, d.get_status_display())}</td>\n'
            f'        <td data-label="What">{what_cell(d)}</td>\n'
            f'        <td data-label="Commit">{commit}</td>\n'
            f'        <td data-label="Why">{why}</td>\n'
            f'        <td data-label="Queued"><time datetime="{queued.isoformat()}">{queued:%Y-%m-%d %H:%M}</time></td>\n'
            f'        <td data-label="Took">{escape(duration(d.took))}</td>\n'
            f'        <td data-label="By">{escape(d.requested_by_label)}</td>\n      </tr>'
        )
    return mark_safe("\n".join(rows))
