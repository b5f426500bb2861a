"""A YAML loader for files Norn did not write: bounded in size, nesting and
alias expansion, and giving only plain values (strings, numbers, booleans,
null, lists and mappings).

The bounds are counted while PyYAML composes the node graph, before any
Python value is built: an alias bomb is refused after a few thousand counted
values, not after gigabytes, and deep nesting never reaches Python's
recursion limit. `load(text)` raises `Refused` or a `yaml.YAMLError`, nothing
else. docs/infraspec.md documents the limits.
"""

import os

import yaml
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingStartEvent, ScalarEvent, SequenceStartEvent
from yaml.nodes import MappingNode, ScalarNode
from yaml.resolver import Resolver

try:
    from yaml._yaml import CParser
except ImportError:  # PyYAML built without libyaml
    CParser = None

MAX_BYTES_SETTING = "NORN_INFRASPEC_MAX_BYTES"
DEFAULT_MAX_BYTES = 64 * 1024
MAX_BYTES_RANGE = (1024, 16 * 1024 * 1024)
# An infraspec nests four levels at most (services.postgres.database); the
# slack is for people who lay out env values oddly, not for the recursion limit.
MAX_DEPTH = 32
# Values in the document with every alias expanded where it is used. A full
# infraspec has a few dozen.
MAX_NODES = 10_000

_YAML = "tag:yaml.org,2002:"
# Tags a plain scalar may carry explicitly (`!!str 8000` is a string).
SCALAR_TAGS = {_YAML + name for name in ("str", "int", "float", "bool", "null")}
COLLECTION_TAGS = {SequenceStartEvent: _YAML + "seq", MappingStartEvent: _YAML + "map"}
# Implicit resolution keeps numbers, booleans, null and merge keys (`<<: *base`);
# a date stays the string it was written as, and `=` is just a string.
IMPLICIT_TAGS = SCALAR_TAGS | {_YAML + "merge"}


class Refused(Exception):
    """The document breaks a bound or uses YAML an infraspec may not.

    `problem` says what and what would be valid; `line` and `column` are
    1-based, or None.
    """

    def __init__(self, problem, mark=None):
        super().__init__(problem)
        self.problem = problem
        self.line = mark.line + 1 if mark is not None else None
        self.column = mark.column + 1 if mark is not None else None


def _env_max_bytes():
    raw = os.environ.get(MAX_BYTES_SETTING, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    low, high = MAX_BYTES_RANGE
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ImproperlyConfigured(
            f"{MAX_BYTES_SETTING}={raw!r} is not a size in bytes; use a whole number "
            f"from {low} to {high} (default {DEFAULT_MAX_BYTES})"
        )
    return value


# Read once, at import (Django's startup): a bad value stops Norn at once
# rather than failing each page that reads an infraspec.
_ENV_MAX_BYTES = _env_max_bytes()


def max_bytes():
    """The size cap of an infraspec file: settings.NORN_INFRASPEC_MAX_BYTES if
    set (tests), else the environment variable of that name, else 64 KiB."""
    return getattr(settings, MAX_BYTES_SETTING, None) or _ENV_MAX_BYTES


def tag_name(tag):
    short = "!!" + tag[len(_YAML):] if tag.startswith(_YAML) else tag
    return short if len(short) <= 40 else short[:40] + "…"


def _clip(text, limit=40):
    return text if len(text) <= limit else text[:limit] + "…"


if CParser is not None:

    class _Reader(Composer, CParser, SafeConstructor, Resolver):
        """libyaml's scanner and parser (events), PyYAML's composer and
        constructor. libyaml scans a 64 KiB file in milliseconds where the
        pure-Python scanner takes most of a second, and is linear where the
        Python one is quadratic on deep flow nesting."""

        def __init__(self, text):
            CParser.__init__(self, text)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            Composer.__init__(self)

else:
    _Reader = yaml.SafeLoader


class _Loader(_Reader):
    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag in IMPLICIT_TAGS]
        for first, resolvers in Resolver.yaml_implicit_resolvers.items()
    }
    yaml_constructors = {
        tag: constructor
        for tag, constructor in SafeConstructor.yaml_constructors.items()
        if tag in SCALAR_TAGS or tag in COLLECTION_TAGS.values()
    }

    def __init__(self, text, max_chars):
        super().__init__(text)
        self.max_chars = max_chars
        self.depth = 0
        self.nodes = 0
        self.chars = 0
        # anchor -> (values, characters) of its expanded content, once composed.
        self.sizes = {}

    def count(self, nodes, chars, mark):
        self.nodes += nodes
        self.chars += chars
        if self.nodes > MAX_NODES:
            raise Refused(
                f"holds more than {MAX_NODES} values (each use of an alias counts all of "
                "its value again); an infraspec needs a few dozen",
                mark,
            )
        if self.chars > self.max_chars:
            raise Refused(
                f"holds more than {self.max_chars} characters of text (each use of an alias "
                "counts all of its value again), more than an infraspec file may hold",
                mark,
            )

    def compose_node(self, parent, index):
        event = self.peek_event()
        is_key = isinstance(parent, MappingNode) and index is None
        if isinstance(event, AliasEvent):
            size = self.sizes.get(event.anchor)
            if size is None and event.anchor in self.anchors:
                raise Refused(
                    f"alias *{_clip(event.anchor)} is used inside its own anchor: "
                    "a recursive value cannot be an infraspec value",
                    event.start_mark,
                )
            node = super().compose_node(parent, index)  # an undefined alias raises here
            self.count(*size, event.start_mark)
            if is_key and not isinstance(node, ScalarNode):
                raise Refused("a mapping key must be a plain value, not a list or mapping", event.start_mark)
            return node
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Refused(
                f"nests deeper than {MAX_DEPTH} levels; an infraspec needs four at most",
                event.start_mark,
            )
        self.check_tag(event)
        before = (self.nodes, self.chars)
        self.count(1, len(event.value) if isinstance(event, ScalarEvent) else 0, event.start_mark)
        node = super().compose_node(parent, index)
        self.depth -= 1
        if event.anchor is not None:
            self.sizes[event.anchor] = (self.nodes - before[0], self.chars - before[1])
        if is_key and not isinstance(node, ScalarNode):
            raise Refused("a mapping key must be a plain value, not a list or mapping", event.start_mark)
        return node

    def check_tag(self, event):
        tag = event.tag
        if tag is None or tag == "!":
            return
        if isinstance(event, ScalarEvent):
            if tag not in SCALAR_TAGS:
                raise Refused(
                    f"the tag {tag_name(tag)} is not allowed; infraspec values are plain strings, "
                    "numbers, true/false, null, lists and mappings (quote a value to make it a string)",
                    event.start_mark,
                )
            # `!!int abc` would reach int() and fail there; `!!null x` would
            # quietly drop x. The value must be what its tag says.
            if tag != _YAML + "str" and self.resolve(ScalarNode, event.value, (True, False)) != tag:
                raise Refused(
                    f"{_clip(event.value)!r} is tagged {tag_name(tag)} but is not one; "
                    "remove the tag, or quote the value to make it a string",
                    event.start_mark,
                )
        elif tag != COLLECTION_TAGS[type(event)]:
            raise Refused(
                f"the tag {tag_name(tag)} is not allowed; infraspec values are plain strings, "
                "numbers, true/false, null, lists and mappings",
                event.start_mark,
            )

    def construct_undefined(self, node):
        raise Refused(f"{tag_name(node.tag)} values are not allowed here", node.start_mark)

    def construct_number(self, node, construct):
        # Plain scalars such as `0b_` or `0x_` match YAML 1.1's number
        # patterns but are no number; a 5,000-digit integer exceeds int()'s limit.
        try:
            return construct(self, node)
        except (ValueError, ArithmeticError):
            raise Refused(
                f"{_clip(node.value)!r} looks like a number but is not one (or is too long); "
                "quote it to make it a string",
                node.start_mark,
            ) from None

    def construct_int(self, node):
        return self.construct_number(node, SafeConstructor.construct_yaml_int)

    def construct_float(self, node):
        return self.construct_number(node, SafeConstructor.construct_yaml_float)


_Loader.add_constructor(_YAML + "int", _Loader.construct_int)
_Loader.add_constructor(_YAML + "float", _Loader.construct_float)
_Loader.add_constructor(None, _Loader.construct_undefined)


def load(text):
    """The single YAML document in `text` as (data, root node), or (None, None)
    for an empty document.

    Raises Refused for text over max_bytes() or a document over a bound, and
    yaml.YAMLError for what is not YAML.
    """
    limit = max_bytes()
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no file decodes to that
        raise Refused("is not valid Unicode text") from None
    if len(raw) > limit:
        raise Refused(f"is {len(raw)} bytes long; an infraspec may be at most {limit} bytes ({MAX_BYTES_SETTING})")
    loader = _Loader(raw if CParser is not None else text, max_chars=limit)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        return loader.construct_document(node), node
    finally:
        loader.dispose()
