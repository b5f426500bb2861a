"""Identifiers shown short, whole on demand: `{% load ids %}`.

    {% short_id deployment.public_id %}        first 8 characters (UUIDs)
    {% short_id deployment.commit_sha 7 %}     a commit, as git abbreviates it
    {% short_middle snapshot.path 32 %}        both ends of a path or a database
                                               name, … between
    {% short_image deployment.image %}         an image reference: its name whole
                                               (up to 40), its tag's first 12 characters

Each renders one unbreakable unit (CSS `.ident`, static/norn/norn.css):

    <span class="ident"><code title="FULL">SHORT</code><button type="button"
      class="copy" data-copy="FULL" aria-label="Copy FULL">…</button></span>

static/norn/copy.js puts FULL on the clipboard when the button is clicked
(and shows the buttons at all: without JavaScript they could do nothing).
Python code writing HTML itself (the admin) calls `ident_html`.
"""

from html import escape

from django import template
from django.utils.safestring import mark_safe

register = template.Library()

ELLIPSIS = "…"
# Two overlapping pages: the copy icon, drawn in the text's colour.
COPY_ICON = (
    '<svg aria-hidden="true" viewBox="0 0 16 16" width="12" height="12"><path fill="currentColor" d="'
    "M5 1.5A1.5 1.5 0 0 1 6.5 0h7A1.5 1.5 0 0 1 15 1.5v9a1.5 1.5 0 0 1-1.5 1.5h-7A1.5 1.5 0 0 1 5 10.5zm1.5 0v9h7v-9z"
    'M1 5.5A1.5 1.5 0 0 1 2.5 4H4v1.5H2.5v9h7V13H11v1.5A1.5 1.5 0 0 1 9.5 16h-7A1.5 1.5 0 0 1 1 14.5z"/></svg>'
)


def shorten(value: str, length: int, *, middle: bool = False) -> str:
    """`value` cut to `length` characters: its start, or (middle) its start
    and its end around an ellipsis, the end getting the larger share (a
    path's file name, an image's tag)."""
    if length < 1 or len(value) <= length:
        return value
    if not middle:
        return value[:length]
    head = max(1, (length - 1) * 2 // 5)
    tail = max(1, length - 1 - head)
    return f"{value[:head]}{ELLIPSIS}{value[-tail:]}"


def shorten_image(image: str, name_length: int = 40, tag_length: int = 12) -> str:
    """`registry/name:tag` with the tag (Norn's are commit SHAs) cut to its
    start and a long name cut in its middle: what tells images apart stays."""
    name, colon, tag = image.rpartition(":")
    if not colon or "/" in tag:  # no tag (the colon was a registry's port)
        return shorten(image, name_length, middle=True)
    return f"{shorten(name, name_length, middle=True)}:{shorten(tag, tag_length)}"


def ident_html(value, length: int = 8, *, middle: bool = False, copy: bool = True, short: str | None = None) -> str:
    """The markup of one identifier (see the module's docstring); "—" for
    no value. Escaped here: callers may mark it safe."""
    full = "" if value is None else str(value)
    if not full.strip():
        return "—"
    short = short if short is not None else shorten(full, int(length), middle=middle)
    quoted = escape(full)
    button = (
        f'<button type="button" class="copy" data-copy="{quoted}" aria-label="Copy {quoted}">{COPY_ICON}</button>'
        if copy else ""
    )
    return f'<span class="ident"><code title="{quoted}">{escape(short)}</code>{button}</span>'


@register.simple_tag
def short_id(value, length=8, copy=True):
    """An id, a commit or a checksum: its first `length` characters."""
    return mark_safe(ident_html(value, length, copy=copy))


@register.simple_tag
def short_middle(value, length=32, copy=True):
    """A path, an image reference or a database name: its ends, … between."""
    return mark_safe(ident_html(value, length, middle=True, copy=copy))


@register.simple_tag
def short_image(value, copy=True):
    """An image reference: its name, and its tag's start."""
    full = "" if value is None else str(value)
    return mark_safe(ident_html(full, copy=copy, short=shorten_image(full)))


@register.filter
def middle(value, length=24):
    """A long value as plain text with … in its middle, for a heading or a
    button, where a copy button would not belong: `{{ snapshot.database|middle:24 }}`."""
    return shorten("" if value is None else str(value), int(length), middle=True)
