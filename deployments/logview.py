"""A step's output as the log viewer shows it: numbered lines, each with the
time it was stored, ANSI colours as classes (other escape sequences dropped),
Docker's legacy-builder banner marked as noise, and only a window of it (the
tail, or the part before an offset for "Load earlier"), so that a 10 MB
output never reaches the browser whole. Text is escaped here. The time of a
line is when the piece of output it starts in was stored: its `deploy.log`
event's created_at (written in the same transaction as the text).
"""

import bisect
import html
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Length
from django.http import HttpResponse, HttpResponseBadRequest
from django.utils.http import content_disposition_header

from deployments.events import LOG
from deployments.models import Event

# What one page (or one "Load earlier") renders at most.
WINDOW_LINES = 2000
WINDOW_CHARS = 256 * 1024

# Line breaks as the HTML parser reads them in the server-rendered copy, and
# as live.js treats the text it appends: CR LF, a lone CR, LF.
BREAK = re.compile(r"\r\n|\r|\n")

# Escape sequences and other control characters a terminal would act on.
# Only SGR (CSI … m) means something here; the rest is dropped.
ESCAPE = re.compile(
    r"\x1b\[([0-?]*)[ -/]*([@-~])"  # CSI: SGR when the final byte is m
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC (window titles, links)
    r"|\x1b[ -/]*[0-~]?"  # any other escape, or an ESC alone
    r"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
)
# An escape sequence cut off at the end of what was written so far: the rest
# comes with the next piece (logview.js joins the two).
UNFINISHED = re.compile(r"\x1b(?:\[[0-?]*[ -/]*)?\Z")
SGR = re.compile(r"\x1b\[([0-9;:]*)m")

# Docker's CLI prints this before every build with BuildKit off (the build
# step turns it off: no buildx plugin here); its indented lines and the blank
# line after it belong to it.
BANNER = "DEPRECATED: The legacy builder is deprecated"


@dataclass(frozen=True)
class Style:
    bold: bool = False
    fg: int | None = None  # 0-15: the 8 colours, then their bright forms
    bg: int | None = None

    def classes(self) -> str:
        names = []
        if self.bold:
            names.append("a-b")
        if self.fg is not None:
            names.append(f"a-f{self.fg}")
        if self.bg is not None:
            names.append(f"a-g{self.bg}")
        return " ".join(names)

    def encode(self) -> str:
        """For data-sgr: where logview.js carries on."""
        return f"{int(self.bold)},{'' if self.fg is None else self.fg},{'' if self.bg is None else self.bg}"


PLAIN = Style()


def apply_sgr(style: Style, params: str) -> Style:
    """The style after one SGR sequence; unknown codes change nothing."""
    codes = [int(c) if c.isdigit() else 0 for c in re.split("[;:]", params)] if params else [0]
    bold, fg, bg = style.bold, style.fg, style.bg
    i = 0
    while i < len(codes):
        code = codes[i]
        if code == 0:
            bold, fg, bg = False, None, None
        elif code == 1:
            bold = True
        elif code == 22:
            bold = False
        elif 30 <= code <= 37:
            fg = code - 30
        elif 90 <= code <= 97:
            fg = code - 90 + 8
        elif code == 39:
            fg = None
        elif 40 <= code <= 47:
            bg = code - 40
        elif 100 <= code <= 107:
            bg = code - 100 + 8
        elif code == 49:
            bg = None
        elif code in (38, 48) and i + 1 < len(codes):
            # 256 colours (5;n) or RGB (2;r;g;b): not shown, but their
            # numbers are arguments, not codes of their own.
            i += 2 if codes[i + 1] == 5 else 4 if codes[i + 1] == 2 else 0
        i += 1
    return Style(bold, fg, bg)


def style_at(text: str, offset: int) -> Style:
    """The SGR style in force at `offset`: from the last reset before it on."""
    resets = [text.rfind(reset, 0, offset) for reset in ("\x1b[0m", "\x1b[m")]
    style = PLAIN
    for match in SGR.finditer(text, max(0, *resets), offset):
        style = apply_sgr(style, match.group(1))
    return style


def count_breaks(text: str, start: int, end: int) -> int:
    return text.count("\n", start, end) + text.count("\r", start, end) - text.count("\r\n", start, end)


def line_number_at(text: str, offset: int) -> int:
    return 1 + count_breaks(text, 0, offset)


def window_start(text: str, end: int, lines: int = WINDOW_LINES, chars: int = WINDOW_CHARS) -> int:
    """Where the part of `text` ending at `end` that is shown at once begins:
    at most `lines` lines and about `chars` characters, starting at a line's
    start unless one line alone is longer than that."""
    low = max(0, end - chars)
    starts = [] if low else [0]
    starts += [m.end() for m in BREAK.finditer(text, low, end) if m.end() < end]
    if not starts:
        return low  # inside one very long line
    return starts[-lines:][0] if len(starts) > lines else starts[0]


@dataclass
class Rendered:
    html: str
    start: int  # offset of the first character shown
    end: int
    first_line: int
    next_line: int  # the number of the line after the last one (or of the unfinished last line)
    style: Style  # at the end, for what is appended live
    carry: str = ""  # an escape sequence cut off at the end
    noise: bool = False
    lines: int = 0

    @property
    def last_line(self) -> int:
        return self.first_line + max(self.lines, 1) - 1

    @property
    def digits(self) -> int:
        """How wide the line numbers are: the gutter's width (logview.css)."""
        return max(3, len(str(self.next_line)))

    @property
    def earlier(self) -> bool:
        return self.start > 0


Marks = list[tuple[int, int, datetime]]  # (start, end, when): text[start:end] was stored at `when`


def render(text: str, start: int, end: int, marks: Marks = ()) -> Rendered:
    """Lines of text[start:end] as HTML (escaped): each a span.ln with its
    number (data-n) and the time it was stored (a span.lt, empty when not
    known, e.g. output written before times were kept)."""
    marks = list(marks)
    offsets = [mark[0] for mark in marks]
    first = line_number_at(text, start)
    number = first
    style = style_at(text, start)
    parts = []
    in_banner = False
    noise = False
    carry = ""
    position = start
    count = 0
    while position < end:
        match = BREAK.search(text, position, end)
        stop, after = (match.start(), match.end()) if match else (end, end)
        line = text[position:stop]
        if not match:
            unfinished = UNFINISHED.search(line)
            if unfinished:
                carry, line = unfinished.group(), line[: unfinished.start()]
        body, style = _styled(line, style)
        classes = "ln"
        plain = ESCAPE.sub("", line)
        if plain.startswith(BANNER):
            in_banner = True
            classes += " noise noise-head"
        elif in_banner and (plain[:1].isspace() or plain == ""):
            classes += " noise"
            in_banner = plain != ""
        else:
            in_banner = False
        noise = noise or "noise" in classes
        parts.append(
            f'<span class="{classes}" data-n="{number}">{_time(offsets, marks, position)}{body}'
            f'{"" if match is None else chr(10)}</span>'
        )
        count += 1
        if match:
            number += 1
        position = after
    return Rendered("".join(parts), start, end, first, number, style, carry, noise, count)


def tail(text: str, marks=()) -> Rendered:
    return render(text, window_start(text, len(text)), len(text), _matching(text, marks))


def before(text: str, end: int, marks=()) -> Rendered:
    end = max(0, min(end, len(text)))
    return render(text, window_start(text, end), end, _matching(text, marks))


def _matching(text: str, marks) -> Marks:
    """The marks, if they account for all of the text: output written without
    events (seeded, or older than them) gets no times rather than wrong ones.
    More marks than text is a page read just before an append."""
    marks = list(marks)
    return marks if marks and marks[-1][1] >= len(text) else []


def _styled(line: str, style: Style) -> tuple[str, Style]:
    out = []
    position = 0
    for match in ESCAPE.finditer(line):
        out.append(_span(line[position:match.start()], style))
        if match.group(2) == "m":
            style = apply_sgr(style, match.group(1))
        position = match.end()
    out.append(_span(line[position:], style))
    return "".join(out), style


def _span(text: str, style: Style) -> str:
    if not text:
        return ""
    classes = style.classes()
    escaped = html.escape(text, quote=False)
    return f'<span class="{classes}">{escaped}</span>' if classes else escaped


def _time(offsets, marks: Marks, position: int) -> str:
    i = bisect.bisect_right(offsets, position) - 1
    if i < 0 or position >= marks[i][1]:
        return '<span class="lt"></span>'
    when = marks[i][2].astimezone(timezone.utc)
    return f'<span class="lt" data-t="{when:%H:%M:%S}" title="{when.isoformat(timespec="milliseconds")}"></span>'


def stored_marks(deployment_id: int, through_seq: int | None = None, step: str | None = None) -> dict[str, Marks]:
    """Per step, where each piece of its output begins and ends and when it
    was stored, from the deployment's log events (one query; their texts are
    what was appended to Step.output, in the same order)."""
    rows = Event.objects.filter(deployment_id=deployment_id, kind=LOG)
    if through_seq is not None:
        rows = rows.filter(seq__lte=through_seq)
    if step is not None:
        rows = rows.filter(payload__step=step)
    rows = rows.annotate(
        step_name=KeyTextTransform("step", "payload"), size=Length(KeyTextTransform("text", "payload"))
    ).order_by("seq").values_list("step_name", "size", "created_at")
    marks: dict[str, Marks] = {}
    for name, size, when in rows:
        pieces = marks.setdefault(name, [])
        start = pieces[-1][1] if pieces else 0
        pieces.append((start, start + (size or 0), when))
    return marks


# --- the responses of views.step_output ------------------------------------------


def download(step, filename: str) -> HttpResponse:
    response = HttpResponse(step.output, content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["X-Content-Type-Options"] = "nosniff"
    return response


def earlier(step, value: str) -> HttpResponse:
    """The lines before character `value` of the step's output, as a <pre>
    whose data-start says where the next "Load earlier" goes on from."""
    text = step.output
    # Length first: int() refuses strings of over 4,300 digits with an error of its own.
    if not (value.isascii() and value.isdigit() and len(value) <= 20) or int(value) > len(text):
        shown = value if len(value) <= 40 else value[:40] + "…"
        return HttpResponseBadRequest(
            f"before: expected a whole number from 0 to {len(text)} (the length of the {step.name} output), got {shown!r}",
            content_type="text/plain; charset=utf-8",
        )
    rendered = before(text, int(value), stored_marks(step.deployment_id, step=step.name).get(step.name, ()))
    return HttpResponse(
        f'<pre data-start="{rendered.start}" data-first-line="{rendered.first_line}"'
        f' data-last-line="{rendered.last_line}">{rendered.html}</pre>',
        content_type="text/html; charset=utf-8",
    )
