"""Parse and validate `infraspec.yaml`, the file that makes a directory deployable.

`load(path)` returns the spec (typed: apps_registry/spec.py, which fills in the
defaults; and as the normalized dict App.spec stores) and every problem found in
the file at once; each problem names the file, the line, the field path, the
bad value and what would be valid. docs/infraspec.md is the user-facing
description of the same rules; keep the two in step.
"""

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit

import yaml
from croniter import croniter

from apps_registry import appfiles
from apps_registry.spec import Spec

FILENAME = "infraspec.yaml"
ROLES = ("webserver", "worker", "cron")
APP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# A Kubernetes namespace is a DNS-1123 label.
NAMESPACE_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
DATABASE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REPO_SCHEMES = ("https", "http", "ssh", "git", "file")
SCP_LIKE_RE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$")
# A commit SHA as a ref: 4 to 40 lowercase hex digits (git's shortest abbreviation).
HEX_RE = re.compile(r"^[0-9a-f]{4,40}$")


@dataclass(frozen=True)
class SpecError:
    file: str
    line: int | None
    field: str
    message: str

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


# --- value checks -------------------------------------------------------------
# Each returns None when the value is acceptable, or the problem as a sentence
# fragment that names the value and what would be valid.


def check_app_name(value):
    if len(value) > 63:
        return f"{value!r} is {len(value)} characters long; an app name has at most 63"
    if not APP_NAME_RE.match(value):
        return (
            f"{value!r} is not a valid app name; use lowercase letters, digits and '-', "
            "starting with a letter or digit (it becomes a Kubernetes name)"
        )
    return None


def branch_name_problem(value):
    """git's ref-name rules (git-check-ref-format), plus no leading '-'.

    A leading '-' would be read as an option by git; the rest keeps values
    that git itself would reject from ever reaching it.
    """
    if not value:
        return "is empty"
    if value.startswith("-"):
        return "starts with '-'"
    if value == "@" or "@{" in value:
        return "contains '@{' or is '@'"
    if ".." in value or "//" in value:
        return "contains '..' or '//'"
    if re.search(r"[\x00-\x20\x7f~^:?*\[\\]", value):
        return "contains a space, a control character or one of ~ ^ : ? * [ \\"
    if value.endswith(("/", ".", ".lock")) or value.startswith("/"):
        return "starts with '/' or ends with '/', '.' or '.lock'"
    if any(part.startswith(".") for part in value.split("/")):
        return "has a path component starting with '.'"
    return None


def check_branch(value):
    problem = branch_name_problem(value)
    if problem:
        return f"{value!r} is not a valid git branch name: it {problem}"
    return None


def redact_url(url):
    """The URL with any password replaced, safe for error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def repo_url_problem(url):
    """Why `url` may not be handed to git, or None. Shared with the deploy CLI."""
    if not url:
        return "is empty"
    if url.startswith("-"):
        return "starts with '-' (git would read it as an option)"
    if "::" in url.split("/", 1)[0]:
        return "uses a git remote-helper transport such as ext:: (it can run commands)"
    if re.search(r"\s|[\x00-\x1f]", url):
        return "contains white space or a control character"
    if url.startswith("/"):
        return None
    if SCP_LIKE_RE.match(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a URL"
    if parts.scheme not in REPO_SCHEMES:
        return f"has scheme {parts.scheme or '(none)'!r}; use one of {', '.join(REPO_SCHEMES)}, user@host:path or an absolute path"
    if parts.password is not None:
        return "contains a password or token; put it in NORN_GIT_CREDENTIALS or NORN_GIT_TOKEN instead"
    if parts.scheme != "file" and not parts.hostname:
        return "has no host"
    return None


def check_repo_url(value):
    problem = repo_url_problem(value)
    if problem:
        return f"{redact_url(value)!r} is not a usable repository URL: it {problem}"
    return None


def check_relative_path(value):
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or not value.strip():
        return f"{value!r} must be a path inside the repository, like Dockerfile or docker/web.Dockerfile"
    return None


def check_nonblank(value):
    if not value.strip():
        return "is empty; give a shell command"
    return None


def check_database(value):
    if len(value) > 63 or not DATABASE_RE.match(value):
        return (
            f"{value!r} is not a valid database name; use letters, digits and '_', "
            "not starting with a digit, at most 63 characters"
        )
    return None


def check_port(value):
    if not 1 <= value <= 65535:
        return f"{value!r} is not a port; use a number from 1 to 65535"
    return None


def check_replicas(value):
    if not 0 <= value <= 1000:
        return f"{value!r} is out of range; use a number from 0 to 1000"
    return None


def check_retain(value):
    if not 1 <= value <= 1000:
        return f"{value!r} is out of range; keep from 1 to 1000 snapshots"
    return None


def check_healthcheck(value):
    if not value.startswith("/") or re.search(r"\s", value):
        return f"{value!r} is not an HTTP path; use a path like /healthz"
    return None


def check_namespace(value):
    if len(value) > 63 or not NAMESPACE_RE.match(value):
        return (
            f"{value!r} is not a valid Kubernetes namespace; use lowercase letters, "
            "digits and '-', at most 63 characters, starting and ending with a letter or digit"
        )
    return None


def check_schedule(value):
    if not croniter.is_valid(value) or len(value.split()) != 5:
        return (
            f"{value!r} is not a cron schedule; use five fields "
            "'minute hour day-of-month month day-of-week', e.g. '*/15 * * * *'"
        )
    return None


def check_command(value):
    if isinstance(value, str):
        return check_nonblank(value)
    if not value or not all(isinstance(item, str) and item for item in value):
        return "must be a shell command string or a non-empty list of strings (argv)"
    return None


# --- the schema ----------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    types: tuple
    required: bool = False
    check: object = None


@dataclass(frozen=True)
class Mapping:
    fields: dict
    required: bool = False


# No defaults here: apps_registry/spec.py (Spec.from_dict) fills them in.

STR = (str,)
INT = (int,)
BOOL = (bool,)

SCHEMA = Mapping(
    {
        "app": Field(STR, required=True, check=check_app_name),
        "role": Field(STR, required=True),
        "repo": Mapping(
            {
                "url": Field(STR, required=True, check=check_repo_url),
                "branch": Field(STR, check=check_branch),
                "autoDeploy": Field(BOOL),
            }
        ),
        "build": Mapping(
            {
                "dockerfile": Field(STR, check=check_relative_path),
                "test": Field(STR, check=check_nonblank),
            }
        ),
        "services": Mapping(
            {"postgres": Mapping({"database": Field(STR, required=True, check=check_database)})}
        ),
        "migrations": Mapping({"command": Field(STR, required=True, check=check_nonblank)}),
        "port": Field(INT, check=check_port),
        "healthcheck": Field(STR, check=check_healthcheck),
        "replicas": Field(INT, check=check_replicas),
        "namespace": Field(STR, check=check_namespace),
        "schedule": Field(STR, check=check_schedule),
        "command": Field((str, list), check=check_command),
        "env": Field((dict,)),
        "autoRollback": Field(BOOL),
        "snapshots": Mapping({"retain": Field(INT, check=check_retain)}),
    }
)

TYPE_NAMES = {str: "a string", int: "a whole number", bool: "true or false", list: "a list", dict: "a mapping"}


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
        self.errors.append(SpecError(self.file, line, ".".join(path), message))

    def mapping(self, value, schema, path):
        if not isinstance(value, dict):
            self.error(path, f"{value!r} is not a mapping; expected keys {', '.join(schema.fields)}")
            return None
        result = {}
        for key in value:
            if key not in schema.fields:
                self.error(
                    path + (str(key),),
                    f"unknown key {key!r}; valid keys here are {', '.join(schema.fields)}",
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
            self.error(path, f"{value!r} is not {expected}")
            return None
        if field.check:
            problem = field.check(value)
            if problem:
                self.error(path, problem)
                return None
        return value


def _key_lines(node, path=(), lines=None, duplicates=None):
    """Map each field path to its 1-based line, and find duplicate keys.

    PyYAML keeps the last of two equal keys without a word; in a deploy spec
    that hides a typo, so duplicates are reported as errors.
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
    return lines, duplicates


def parse(text, file, directory_name=None):
    """Validate infraspec `text` (from `file`); see the module docstring."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = f", column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        return LoadResult(
            None, [SpecError(file, line, "", f"YAML syntax error{column}: {problem}")]
        )
    except yaml.YAMLError as exc:
        return LoadResult(None, [SpecError(file, None, "", f"YAML error: {exc}")])

    if data is None:
        return LoadResult(None, [SpecError(file, None, "", "the file is empty; it needs at least app and role")])
    lines, duplicates = _key_lines(node)
    validator = _Validator(file, lines)
    for path, line in duplicates:
        validator.errors.append(
            SpecError(file, line, ".".join(path), "appears twice; keep one")
        )
    spec = validator.mapping(data, SCHEMA, ())
    if spec is not None:
        _check_cross_fields(validator, data, spec, directory_name)
    if validator.errors:
        errors = sorted(validator.errors, key=lambda e: (e.line or 0, e.field))
        return LoadResult(None, errors)
    # Defaults are filled in by Spec, in one place; the dict is its JSON form.
    return LoadResult(Spec.from_dict(spec).to_dict(), [])


def _check_cross_fields(v, data, spec, directory_name):
    """Rules that involve more than one field."""
    role = spec["role"]
    if role is not None and role not in ROLES:
        v.error(("role",), f"{role!r} is not a role; use one of {', '.join(ROLES)}")
    app = data.get("app")
    if directory_name is not None and isinstance(app, str) and app != directory_name:
        v.error(
            ("app",),
            f"{app!r} does not match its directory {directory_name!r}; "
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
    if spec["healthcheck"] and data.get("port") is None:
        v.error(("healthcheck",), "needs a port to be probed on; add port")
    env = spec["env"]
    if env is not None:
        normalized = {}
        for key, value in env.items():
            if not isinstance(key, str) or not ENV_NAME_RE.match(key):
                v.error(("env", str(key)), f"{key!r} is not a valid environment variable name; use letters, digits and '_', not starting with a digit")
            elif isinstance(value, (dict, list)) or value is None:
                v.error(("env", key), f"{value!r} is not a string, number or boolean")
            elif isinstance(value, bool):
                normalized[key] = "true" if value else "false"
            else:
                normalized[key] = str(value)
        spec["env"] = normalized


def load(path, directory_name=None, apps_dir=None):
    """Read and validate the infraspec at `path` (a file); one named inside
    `apps_dir` (NORN_APPS_DIR) is read only if it resolves inside it."""
    path = Path(path)
    try:
        text = appfiles.read_bytes(path, apps_dir).decode("utf-8")
    except UnicodeDecodeError:
        return LoadResult(None, [SpecError(str(path), None, "", "is not UTF-8 text")])
    except OSError as exc:
        return LoadResult(None, [SpecError(str(path), None, "", f"cannot be read: {exc.strerror}")])
    return parse(text, str(path), directory_name)
