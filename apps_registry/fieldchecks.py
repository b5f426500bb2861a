"""The checks of single infraspec values, used by the validator (infraspec.py)
and by the deploy requests that take a branch or a URL from a user.

Each check returns None when the value is acceptable, or the problem as a
sentence fragment that names the value and what would be valid. Values are
shown through `shown()`, so no message grows with its value.
"""

import ipaddress
import re
import reprlib
from decimal import Decimal
from pathlib import PurePosixPath
from urllib.parse import urlsplit, urlunsplit

from croniter import croniter

ROLES = ("webserver", "worker", "cron")
# The app name is the name of the Deployment, the container and the Service, and
# a label value. A Service name is the strictest: an RFC 1035 label (a letter
# first, a letter or digit last); that is also a valid DNS-1123 label and label
# value, so every object Norn derives from the name is accepted.
APP_NAME_RE = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
# A Kubernetes namespace is a DNS-1123 label.
NAMESPACE_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
DATABASE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REPO_SCHEMES = ("https", "http", "ssh", "git", "file")
SCP_LIKE_RE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$")
# A commit SHA as a ref: 4 to 40 lowercase hex digits (git's shortest abbreviation).
HEX_RE = re.compile(r"^[0-9a-f]{4,40}$")

# Longest values, in characters. Where a value lands in a database column the
# limit is that column's (App.repo_url, App.branch and Deployment.ref,
# CronJob.schedule, Snapshot.database); the rest are far above any real use
# and keep one file from filling pages, manifests and argv.
MAX_APP_NAME = 63
MAX_REPO_URL = 2048
MAX_BRANCH = 255
MAX_PATH = 1024
MAX_COMMAND = 16 * 1024
MAX_ARGV_ITEMS = 1000
MAX_HTTP_PATH = 2048
MAX_NAMESPACE = 63
MAX_DATABASE = 63
MAX_SCHEDULE = 255
MAX_ENV_NAME = 255
MAX_ENV_VALUE = 32 * 1024
# A DNS name is at most 253 characters (RFC 1035, written without the root dot).
MAX_DOMAIN = 253
MAX_DOMAINS = 100

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = _repr.maxlong = 80
_repr.maxlist = _repr.maxdict = 5
_repr.maxlevel = 2


def shown(value):
    """repr(value), cut short: a value in a message is at most 100 characters.

    reprlib shortens each string and list without building the whole repr
    first (a list of a million items costs as much as one of five)."""
    text = _repr.repr(value)
    return text if len(text) <= 100 else text[:99] + "…"


def too_long(value, limit):
    """The problem with a string over `limit` characters, or None."""
    if len(value) > limit:
        return f"is {len(value)} characters long; at most {limit} are allowed"
    return None


def check_app_name(value):
    if len(value) > MAX_APP_NAME:
        return f"{shown(value)} is {len(value)} characters long; an app name has at most {MAX_APP_NAME}"
    if not APP_NAME_RE.match(value):
        return (
            f"{shown(value)} is not a valid app name; use lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit (it names the app's "
            "Kubernetes Service, which must be an RFC 1035 label)"
        )
    return None


def branch_name_problem(value):
    """git's ref-name rules (git-check-ref-format), plus no leading '-' and
    Norn's column width.

    A leading '-' would be read as an option by git; the rest keeps values
    that git itself would reject from ever reaching it.
    """
    if not value:
        return "is empty"
    if len(value) > MAX_BRANCH:
        return f"is {len(value)} characters long (at most {MAX_BRANCH})"
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
        return f"{shown(value)} is not a valid git branch name: it {problem}"
    return None


def redact_url(url):
    """The URL with any password replaced, safe for error messages.

    Never raises: the host and port are kept as written, since a port such
    as 99999 or `abc` makes urlsplit's `.port` raise ValueError.
    """
    if "://" not in url and "@" in url:
        # scp-like user:password@host:path, which urlsplit reads as a scheme.
        user, _, rest = url.rpartition("@")
        return f"{user.split(':', 1)[0]}:***@{rest}" if ":" in user else url
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def repo_url_problem(url):
    """Why `url` may not be handed to git, or None. Shared with the deploy CLI."""
    if not url:
        return "is empty"
    if len(url) > MAX_REPO_URL:
        return f"is {len(url)} characters long (at most {MAX_REPO_URL})"
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
        hostname = parts.hostname
        password = parts.password
    except ValueError:
        return "is not a URL"
    if parts.scheme not in REPO_SCHEMES:
        return f"has scheme {shown(parts.scheme or '(none)')}; use one of {', '.join(REPO_SCHEMES)}, user@host:path or an absolute path"
    if password is not None:
        return "contains a password or token; put it in NORN_GIT_CREDENTIALS or NORN_GIT_TOKEN instead"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return "has a port that is not a number from 1 to 65535"
    if parts.scheme != "file" and not hostname:
        return "has no host"
    return None


def check_repo_url(value):
    problem = repo_url_problem(value)
    if problem:
        return f"{shown(redact_url(value))} is not a usable repository URL: it {problem}"
    return None


def check_relative_path(value):
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or not value.strip():
        return f"{shown(value)} must be a path inside the repository, like Dockerfile or docker/web.Dockerfile"
    return None


def check_nonblank(value):
    if not value.strip():
        return "is empty; give a shell command"
    return None


def check_database(value):
    if len(value) > MAX_DATABASE or not DATABASE_RE.match(value):
        return (
            f"{shown(value)} is not a valid database name; use letters, digits and '_', "
            f"not starting with a digit, at most {MAX_DATABASE} characters"
        )
    return None


def check_port(value):
    if not 1 <= value <= 65535:
        return f"{shown(value)} is not a port; use a number from 1 to 65535"
    return None


def check_replicas(value):
    if not 0 <= value <= 1000:
        return f"{shown(value)} is out of range; use a number from 0 to 1000"
    return None


def check_retain(value):
    if not 1 <= value <= 1000:
        return f"{shown(value)} is out of range; keep from 1 to 1000 snapshots"
    return None


def check_healthcheck(value):
    if not value.startswith("/") or re.search(r"\s", value):
        return f"{shown(value)} is not an HTTP path; use a path like /healthz"
    return None


def check_namespace(value):
    if len(value) > MAX_NAMESPACE or not NAMESPACE_RE.match(value):
        return (
            f"{shown(value)} is not a valid Kubernetes namespace; use lowercase letters, "
            f"digits and '-', at most {MAX_NAMESPACE} characters, starting and ending with a letter or digit"
        )
    return None


def check_schedule(value):
    if len(value.split()) != 5 or not croniter.is_valid(value):
        return (
            f"{shown(value)} is not a cron schedule; use five fields "
            "'minute hour day-of-month month day-of-week', e.g. '*/15 * * * *'"
        )
    return None


def check_command(value):
    if isinstance(value, str):
        return too_long(value, MAX_COMMAND) or check_nonblank(value)
    if not value or not all(isinstance(item, str) and item for item in value):
        return "must be a shell command string or a non-empty list of strings (argv)"
    if len(value) > MAX_ARGV_ITEMS:
        return f"has {len(value)} items; at most {MAX_ARGV_ITEMS} are allowed"
    total = sum(len(item) for item in value)
    if total > MAX_COMMAND:
        return f"is {total} characters long in all; at most {MAX_COMMAND} are allowed"
    return None


def check_env_name(key):
    if not isinstance(key, str) or len(key) > MAX_ENV_NAME or not ENV_NAME_RE.match(key):
        return (
            f"{shown(key)} is not a valid environment variable name; use letters, digits and '_', "
            f"not starting with a digit, at most {MAX_ENV_NAME} characters"
        )
    return None


def check_env_value(value):
    if isinstance(value, (dict, list)) or value is None:
        return f"{shown(value)} is not a string, number or boolean"
    if isinstance(value, str):
        return too_long(value, MAX_ENV_VALUE)
    return None


# --- domains and https ---------------------------------------------------------

HTTPS_MODES = ("redirect", "both", "off")
DOMAIN_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
DOMAIN_EXAMPLE = "shop.example.com"


def _is_ip_address(value):
    try:
        ipaddress.ip_address(value[1:-1] if value.startswith("[") and value.endswith("]") else value)
    except ValueError:
        return False
    return True


def domain_problem(value):
    """Why `value` (lower-cased) is not a host name an app may be served on, or None.

    RFC 1123 names as the ingress (Caddy's Host matcher, a Kubernetes Ingress
    rule) and an ACME CA take them: ASCII labels of letters, digits and '-',
    no wildcard, no address, at least two labels (or NAME.localhost).
    """
    if not value:
        return "is empty"
    if len(value) > MAX_DOMAIN:
        return f"is {len(value)} characters long; a host name has at most {MAX_DOMAIN}"
    if "://" in value:
        return f"is a URL; give the host name only, like {DOMAIN_EXAMPLE}"
    if _is_ip_address(value):
        return "is an IP address; domains are host names (use port: for an address)"
    if "*" in value:
        return "is a wildcard; wildcard domains need DNS challenges, which Norn does not configure; list each name"
    if "/" in value:
        return f"has a path; give the host name only, like {DOMAIN_EXAMPLE}"
    if ":" in value:
        return "has a port; the ingress serves domains on its HTTP and HTTPS ports (use port: for another port)"
    if not value.isascii():
        try:
            hint = f" ({value.encode('idna').decode('ascii')})"
        except UnicodeError:
            hint = ""
        return f"is not ASCII; write an international name in its xn-- form{hint}"
    if value.endswith("."):
        return "ends with '.'; write the name without the trailing dot"
    labels = value.split(".")
    for label in labels:
        if not label:
            return "has an empty label ('..' or a leading '.')"
        if len(label) > 63 or not DOMAIN_LABEL_RE.match(label):
            return (
                f"has the label {shown(label)}; each label is 1 to 63 letters, digits and '-', "
                "not starting or ending with '-'"
            )
    if len(labels) < 2 and value != "localhost":
        return f"is a single label; use a full host name like {DOMAIN_EXAMPLE} (or NAME.localhost)"
    if labels[-1].isdigit():
        return "ends in an all-digit label, which no top-level domain is; use a host name (or port: for an address)"
    return None


def check_domain(value):
    problem = domain_problem(value.lower())
    if problem:
        return f"{shown(value)} {problem}"
    return None


def check_https(value):
    """One of HTTPS_MODES, or false: YAML 1.1 reads a plain `off` (and no, false) as false."""
    if value is True:
        return ("true is not an https mode (YAML reads on, yes and true as true); use redirect (HTTPS, "
                "plain HTTP redirected), both (HTTPS and plain HTTP) or off (plain HTTP only)")
    if value is not False and value not in HTTPS_MODES:
        return (
            f"{shown(value)} is not an https mode; use redirect (HTTPS, plain HTTP redirected), "
            "both (HTTPS and plain HTTP) or off (plain HTTP only)"
        )
    return None


# --- resources and security (Kubernetes) -------------------------------------

# Kubernetes' quantity syntax (k8s.io/apimachinery resource.Quantity), unsigned:
# a decimal number and a binary-SI, decimal-SI or exponent suffix. The
# exponent is kept to two digits and the whole to MAX_QUANTITY characters so
# no value makes Decimal arithmetic large.
QUANTITY_RE = re.compile(
    r"^(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[mkMGTPE]|[eE][+-]?[0-9]{1,2})?$"
)
QUANTITY_SUFFIXES = {
    "": Decimal(1), "m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}
MAX_QUANTITY = 32
# The apiserver keeps quantities as int64 milli-units at most.
LARGEST_QUANTITY = Decimal(2 ** 63 - 1) / 1000
# The least memory limit Docker (and runc under the kubelet) starts a container with.
MIN_MEMORY_LIMIT = 6 * 2 ** 20
RESOURCE_EXAMPLES = {"cpu": "250m, 0.5 or 2", "memory": "256Mi, 1Gi or 500M"}
# What a uid may be in a securityContext (int32, not negative).
MAX_UID = 2 ** 31 - 1


def quantity_text(value):
    """A YAML number or string as the quantity text Kubernetes reads (`0.5` -> "0.5")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        # repr keeps 1e-05 as an exponent, which the quantity syntax allows; inf and nan fail the pattern.
        return repr(value)
    return str(value)


def quantity_value(text):
    """The Decimal a valid quantity stands for, or None for text that is not one."""
    match = QUANTITY_RE.match(text) if len(text) <= MAX_QUANTITY else None
    if not match:
        return None
    number, suffix = Decimal(match["number"]), match["suffix"] or ""
    if suffix not in QUANTITY_SUFFIXES:  # an exponent: e3, E-2 (E alone is exa, Ei exbi)
        return number.scaleb(int(suffix[1:]))
    return number * QUANTITY_SUFFIXES[suffix]


def check_quantity(resource, value, *, limit=False):
    """The problem with `value` as a cpu or memory request/limit, or None."""
    text = quantity_text(value)
    amount = quantity_value(text) if text is not None else None
    example = RESOURCE_EXAMPLES[resource]
    if amount is None:
        return (
            f"{shown(value)} is not a Kubernetes quantity; use a number with an optional suffix "
            f"(m, k, M, G, Ki, Mi, Gi ...), e.g. {example}"
        )
    if amount <= 0:
        return f"{shown(value)} is not more than zero; use a positive amount, e.g. {example}"
    if amount > LARGEST_QUANTITY:
        return f"{shown(value)} is larger than Kubernetes can hold; use a real amount, e.g. {example}"
    if resource == "cpu" and (amount * 1000) % 1:
        return f"{shown(value)} is finer than 1m (a thousandth of a CPU); Kubernetes counts CPU in whole m"
    if resource == "memory":
        if amount % 1:
            hint = " ('m' means thousandths; for mebibytes write Mi)" if text.endswith("m") else ""
            return f"{shown(value)} is not a whole number of bytes{hint}; e.g. {example}"
        if limit and amount < MIN_MEMORY_LIMIT:
            return f"{shown(value)} is less than 6Mi, the least memory a container can start with"
    return None


def check_run_as_user(value):
    if not 0 <= value <= MAX_UID:
        return f"{shown(value)} is not a user id; use a number from 0 to {MAX_UID}"
    return None
