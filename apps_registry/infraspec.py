"""Parse and validate `infraspec.yaml`, the file that makes a directory deployable.

`load(path)` returns the spec (typed: apps_registry/spec.py, which fills in the
defaults; and as the normalized dict App.spec stores) and every problem found in
the file at once; each problem names the file, the line, the field path, the
bad value and what would be valid. It never raises: whatever the file holds,
the answer is a LoadResult. The YAML is read by apps_registry/yamlsafe.py
(bounded size, nesting and aliases); single values are checked by
apps_registry/fieldchecks.py. docs/infraspec.md is the user-facing description
of the same rules; keep them in step.
"""

from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path

import yaml

from apps_registry import appfiles, yamlsafe
from apps_registry.fieldchecks import (  # noqa: F401 (HEX_RE, branch_name_problem, redact_url: imported from here by deployments)
    HEX_RE, MAX_BRANCH, MAX_COMMAND, MAX_DOMAINS, MAX_HTTP_PATH, MAX_PATH, MAX_REPO_URL, MAX_SCHEDULE,
    ROLES, branch_name_problem, check_app_name, check_branch, check_command, check_database, check_domain,
    check_env_name, check_env_value, check_healthcheck, check_https, check_namespace, check_nonblank,
    check_port, check_quantity, check_relative_path, check_repo_url, check_replicas, check_retain,
    check_run_as_user, check_schedule, quantity_text, quantity_value, redact_url, repo_url_problem, shown,
    too_long,
)
from apps_registry.spec import Spec, notify_problems

FILENAME = "infraspec.yaml"
# Past this many problems a file lists the first ones and how many more: a
# generated file must not produce megabytes of error text.
MAX_ERRORS = 20
# A message or field path longer than this is cut (a key can be any length).
MAX_MESSAGE = 300
MAX_FIELD = 100


def _cut(text, limit):
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class SpecError:
    file: str
    line: int | None
    field: str
    message: str

    def __post_init__(self):
        object.__setattr__(self, "field", _cut(self.field, MAX_FIELD))
        object.__setattr__(self, "message", _cut(self.message, MAX_MESSAGE))

    def __str__(self):
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclass
class LoadResult:
    # The normalized spec as JSON-ready data (what App.spec stores), or None
    # when the file has errors.
    data: dict | None
    errors: list

    @property
    def ok(self):
        return not self.errors

    @cached_property
    def spec(self) -> Spec | None:
        """The typed spec, or None when the file has errors."""
        return Spec.from_dict(self.data) if self.data is not None else None


# --- the schema ----------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    types: tuple
    required: bool = False
    check: object = None
    # For strings: checked before `check`, so no check sees a huge value.
    max_length: int | None = None


@dataclass(frozen=True)
class Mapping:
    fields: dict
    required: bool = False


# No defaults here: apps_registry/spec.py (Spec.from_dict) fills them in.

STR = (str,)
INT = (int,)
BOOL = (bool,)
# A Kubernetes quantity: `cpu: 0.5` and `memory: 1Gi` are both natural YAML.
QUANTITY = (str, int, float)


def _resources(limit):
    return Mapping({
        "cpu": Field(QUANTITY, check=partial(check_quantity, "cpu", limit=limit)),
        "memory": Field(QUANTITY, check=partial(check_quantity, "memory", limit=limit)),
    })


SCHEMA = Mapping(
    {
        "app": Field(STR, required=True, check=check_app_name),
        "role": Field(STR, required=True),
        "repo": Mapping(
            {
                "url": Field(STR, required=True, check=check_repo_url, max_length=MAX_REPO_URL),
                "branch": Field(STR, check=check_branch, max_length=MAX_BRANCH),
                "autoDeploy": Field(BOOL),
            }
        ),
        "build": Mapping(
            {
                "dockerfile": Field(STR, check=check_relative_path, max_length=MAX_PATH),
                "test": Field(STR, check=check_nonblank, max_length=MAX_COMMAND),
            }
        ),
        "services": Mapping(
            {"postgres": Mapping({"database": Field(STR, required=True, check=check_database)})}
        ),
        "migrations": Mapping({"command": Field(STR, required=True, check=check_nonblank, max_length=MAX_COMMAND)}),
        "port": Field(INT, check=check_port),
        "domains": Field((list,)),
        "https": Field((str, bool), check=check_https),
        "healthcheck": Field(STR, check=check_healthcheck, max_length=MAX_HTTP_PATH),
        "replicas": Field(INT, check=check_replicas),
        "namespace": Field(STR, check=check_namespace),
        "schedule": Field(STR, check=check_schedule, max_length=MAX_SCHEDULE),
        "command": Field((str, list), check=check_command),
        "env": Field((dict,)),
        "autoRollback": Field(BOOL),
        "snapshots": Mapping({"retain": Field(INT, check=check_retain)}),
        "resources": Mapping({"requests": _resources(False), "limits": _resources(True)}),
        "security": Mapping({"runAsUser": Field(INT, check=check_run_as_user), "runAsNonRoot": Field(BOOL)}),
        "notify": Field((list,)),
    }
)

TYPE_NAMES = {
    str: "a string", int: "a whole number", float: "a number", bool: "true or false", list: "a list", dict: "a mapping",
}


def _type_ok(value, types):
    # YAML's `true` is a bool, and bool is an int in Python: keep them apart.
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


class _Validator:
    def __init__(self, file, lines):
        self.file = file
        self.lines = lines
        self.errors = []

    def error(self, path, message):
        line = self.lines.get(path)
        probe = path
        while line is None and probe:
            probe = probe[:-1]
            line = self.lines.get(probe)
        self.errors.append(SpecError(self.file, line, _field_name(path), message))

    def mapping(self, value, schema, path):
        if not isinstance(value, dict):
            self.error(path, f"{shown(value)} is not a mapping; expected keys {', '.join(schema.fields)}")
            return None
        result = {}
        for key in value:
            if key not in schema.fields:
                self.error(
                    path + (str(key),),
                    f"unknown key {shown(key)}; valid keys here are {', '.join(schema.fields)}",
                )
        for name, sub in schema.fields.items():
            sub_path = path + (name,)
            if name not in value or value[name] is None:
                if sub.required:
                    self.error(sub_path, "is required")
                result[name] = None
                continue
            if isinstance(sub, Mapping):
                result[name] = self.mapping(value[name], sub, sub_path)
            else:
                result[name] = self.field(value[name], sub, sub_path)
        return result

    def field(self, value, field, path):
        if not _type_ok(value, field.types):
            expected = " or ".join(TYPE_NAMES[t] for t in field.types)
            self.error(path, f"{shown(value)} is not {expected}")
            return None
        problem = None
        if field.max_length is not None and isinstance(value, str):
            problem = too_long(value, field.max_length)
        if problem is None and field.check:
            problem = field.check(value)
        if problem:
            self.error(path, problem)
            return None
        return value


def _field_name(path):
    """A field path as errors show it: keys joined by '.', list indexes as [i]."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" if i else p for i, p in enumerate(path))


def _key_lines(node, path=(), lines=None, duplicates=None):
    """Map each field path (a list item's: its index, an int) to its 1-based
    line, and find duplicate keys.

    PyYAML keeps the last of two equal keys without a word; in a deploy spec
    that hides a typo, so duplicates are reported as errors. Recursion is
    bounded: yamlsafe refused deep nesting, recursive aliases and non-scalar
    keys already.
    """
    if lines is None:
        lines, duplicates = {}, []
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value
            key_path = path + (key,)
            if key in seen:
                duplicates.append((key_path, key_node.start_mark.line + 1))
            seen.add(key)
            lines[key_path] = key_node.start_mark.line + 1
            _key_lines(value_node, key_path, lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _key_lines(item, path + (index,), lines, duplicates)
    return lines, duplicates


def _yaml_error(file, exc):
    """The SpecError for a file yamlsafe refused or PyYAML could not read."""
    if isinstance(exc, yamlsafe.Refused):
        column = f", column {exc.column}" if exc.column else ""
        return SpecError(file, exc.line, "", f"refused{column}: {exc.problem}")
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = f", column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        return SpecError(file, line, "", f"YAML syntax error{column}: {problem}")
    return SpecError(file, None, "", f"YAML error: {exc}")


def parse(text, file, directory_name=None):
    """Validate infraspec `text` (from `file`); see the module docstring."""
    try:
        data, node = yamlsafe.load(text)
    except (yamlsafe.Refused, yaml.YAMLError) as exc:
        return LoadResult(None, [_yaml_error(file, exc)])

    if data is None:
        return LoadResult(None, [SpecError(file, None, "", "the file is empty; it needs at least app and role")])
    lines, duplicates = _key_lines(node)
    validator = _Validator(file, lines)
    for path, line in duplicates:
        validator.errors.append(
            SpecError(file, line, _field_name(path), "appears twice; keep one")
        )
    spec = validator.mapping(data, SCHEMA, ())
    if spec is not None:
        _check_cross_fields(validator, data, spec, directory_name)
    if validator.errors:
        errors = sorted(validator.errors, key=lambda e: (e.line or 0, e.field))
        if len(errors) > MAX_ERRORS:
            more = len(errors) - MAX_ERRORS
            errors = errors[:MAX_ERRORS] + [
                SpecError(file, None, "", f"and {more} more problems; fix these first")
            ]
        return LoadResult(None, errors)
    # Defaults are filled in by Spec, in one place; the dict is its JSON form.
    return LoadResult(Spec.from_dict(spec).to_dict(), [])


def parse_bytes(raw, file, directory_name=None):
    """parse() for the bytes of a file."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return LoadResult(None, [SpecError(file, None, "", "is not UTF-8 text")])
    return parse(text, file, directory_name)


def _check_cross_fields(v, data, spec, directory_name):
    """Rules that involve more than one field."""
    role = spec["role"]
    if role is not None and role not in ROLES:
        v.error(("role",), f"{shown(role)} is not a role; use one of {', '.join(ROLES)}")
    app = data.get("app")
    if directory_name is not None and isinstance(app, str) and app != directory_name:
        v.error(
            ("app",),
            f"{shown(app)} does not match its directory {shown(directory_name)}; "
            "rename one so they are equal",
        )
    if role == "cron":
        for name in ("schedule", "command"):
            if data.get(name) is None:
                v.error((name,), "is required for a cron app")
        for name in ("port", "healthcheck", "replicas"):
            if data.get(name) is not None:
                v.error((name,), "is only for webserver and worker apps, not cron")
    elif role in ("webserver", "worker"):
        for name in ("schedule", "command"):
            if data.get(name) is not None:
                v.error((name,), f"is only for cron apps; this app's role is {role}")
    if role == "cron":
        # Cron runs (and a cron app's migrations) are containers on Norn's Docker engine.
        for name in ("resources", "security"):
            if data.get(name) is not None:
                v.error((name,), "is only for webserver and worker apps (cron runs on the Docker engine)")
    _check_resources(v, spec)
    _check_security(v, spec)
    _check_domains(v, role, spec)
    if spec["notify"] is not None:  # target names only (docs/notifications.md)
        spec["notify"], problems = notify_problems(spec["notify"])
        for path, problem in problems:
            v.error(("notify", *path), problem)
    if spec["healthcheck"] and data.get("port") is None and not data.get("domains"):
        v.error(("healthcheck",), "needs port or domains (the new version is probed on its $PORT); add one")
    env = spec["env"]
    if env is not None:
        normalized = {}
        for key, value in env.items():
            problem = check_env_name(key)
            if problem:
                v.error(("env", str(key)), problem)
                continue
            problem = check_env_value(value)
            if problem:
                v.error(("env", key), problem)
            elif isinstance(value, bool):
                normalized[key] = "true" if value else "false"
            else:
                normalized[key] = str(value)
        spec["env"] = normalized


def _check_domains(v, role, spec):
    """domains: unique lower-cased host names, for webservers; https only with them."""
    domains = spec["domains"]
    if domains is None:
        if spec["https"] is not None:
            v.error(("https",), "applies to domains; add domains")
        return
    if role in ("worker", "cron"):
        v.error(("domains",), f"is only for webserver apps; this app's role is {role}")
        return
    if not domains or len(domains) > MAX_DOMAINS:
        v.error(("domains",), f"has {len(domains)} names; list from 1 to {MAX_DOMAINS}, or leave domains out")
        return
    if spec["https"] is False:
        spec["https"] = "off"
    seen = {}
    for index, name in enumerate(domains):
        if not isinstance(name, str):
            problem = f"{shown(name)} is not a string; give a host name like shop.example.com"
        elif name.lower() in seen:
            problem = f"{shown(name)} is listed twice (also domains[{seen[name.lower()]}]); keep one"
        else:
            problem = check_domain(name)
        if problem:
            v.error(("domains", index), problem)
        else:
            seen[name.lower()] = index
    spec["domains"] = list(seen)


def _check_resources(v, spec):
    """Quantities as the text Kubernetes reads; each limit at least its request."""
    resources = spec["resources"]
    if not resources:
        return
    for kind in ("requests", "limits"):
        for name, value in (resources[kind] or {}).items():
            if value is not None:
                resources[kind][name] = quantity_text(value)
    requests, limits = resources["requests"] or {}, resources["limits"] or {}
    for name in ("cpu", "memory"):
        request, limit = requests.get(name), limits.get(name)
        if request is not None and limit is not None and quantity_value(limit) < quantity_value(request):
            v.error(("resources", "limits", name),
                    f"{shown(limit)} is less than the request {shown(request)}; a limit must be at least its request")


def _check_security(v, spec):
    security = spec["security"]
    if security and security["runAsUser"] == 0 and security["runAsNonRoot"] is not False:
        v.error(("security", "runAsUser"),
                "0 is root, which runAsNonRoot (true by default) forbids; use a non-root uid such as 1000, "
                "or set runAsNonRoot: false as well")


def load(path, directory_name=None, apps_dir=None):
    """Read and validate the infraspec at `path` (a file); one named inside
    `apps_dir` (NORN_APPS_DIR) is read only if it resolves inside it. A file
    over yamlsafe.max_bytes() is refused unread."""
    path = Path(path)
    try:
        raw = appfiles.read_bytes(path, apps_dir, limit=yamlsafe.max_bytes())
    except OSError as exc:
        return unreadable(path, exc)
    return parse_bytes(raw, str(path), directory_name)


def unreadable(path, exc):
    """The LoadResult of a file that could not or may not be read."""
    if isinstance(exc, appfiles.TooLarge):
        return LoadResult(None, [SpecError(str(path), None, "", exc.strerror)])
    return LoadResult(None, [SpecError(str(path), None, "", f"cannot be read: {exc.strerror}")])
