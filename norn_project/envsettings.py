"""Reading settings from the environment: each helper fails loudly on a bad value.

settings.py uses them; an error names the variable, the value (never a
secret's) and what would be valid, and manage.py prints it without a traceback.
"""

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured


def env(name, default=None):
    return os.environ.get(name, default)


def envbool(name, default):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off"
    )


def envint(name, default, minimum=None, maximum=None):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number") from None
    if (minimum is not None and value < minimum) or (
        maximum is not None and value > maximum
    ):
        raise ImproperlyConfigured(
            f"{name}={raw!r} is out of range; use a number from {minimum} to {maximum}"
        )
    return value


def envchoice(name, default, choices):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not valid; use one of: {', '.join(choices)}"
        )
    return raw


def envpath(name, default):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return Path(default).expanduser()
    path = Path(raw).expanduser()
    if not path.is_absolute():
        # Relative paths would silently depend on the directory Norn was
        # started from; the worker and the web server may differ.
        path = (Path.cwd() / path).resolve()
    if path.exists() and not path.is_dir():
        raise ImproperlyConfigured(f"{name}={raw!r} exists but is not a directory")
    return path


def database_from_env(name, default):
    raw = os.environ.get(name) or default
    try:
        config = dj_database_url.parse(raw, conn_max_age=60, conn_health_checks=True)
    except Exception as exc:  # dj-database-url raises plain ValueError/KeyError
        raise ImproperlyConfigured(
            f"{name} is not a valid database URL ({exc}); "
            "use postgres://USER:PASSWORD@HOST:PORT/NAME"
        ) from None
    if config.get("ENGINE") != "django.db.backends.postgresql":
        raise ImproperlyConfigured(
            f"{name} must point at PostgreSQL (postgres://USER@HOST:PORT/NAME); "
            "Norn relies on its row locks and constraints"
        )
    if not config.get("NAME"):
        raise ImproperlyConfigured(
            f"{name} has no database name; use postgres://USER@HOST:PORT/NAME"
        )
    return config


def redis_url_from_env(name, default):
    raw = os.environ.get(name) or default
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "unix") or not (
        parts.hostname or parts.path
    ):
        raise ImproperlyConfigured(
            f"{name} is not a Redis URL; use redis://HOST:PORT/DB, rediss://… or unix://PATH"
        )
    return raw


def registry_from_env(name):
    """A registry is `host[:port][/namespace]`, the prefix docker tags with."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return ""
    value = re.sub(r"^[a-z]+://", "", raw).rstrip("/")
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[a-z0-9._/-]+)?", value):
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a registry; use HOST[:PORT][/NAMESPACE], "
            "e.g. 127.0.0.1:5000"
        )
    return value


def ssh_key_from_env(name):
    raw = os.environ.get(name)
    if not raw:
        return None
    path = Path(raw).expanduser()
    # Only the path is named in the error: the variable holds a path to the
    # key, never the key itself, so nothing secret is printed.
    if not path.is_file():
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a readable file; set it to the path of an SSH "
            "private key (for example ~/.ssh/id_ed25519)"
        )
    return path


def git_credentials_from_env():
    """{host[:port]: token} from NORN_GIT_CREDENTIALS and NORN_GIT_TOKEN(_HOST).

    Errors name the variable and the host, never a token (an entry without
    "=" may be nothing but a token, so it is only counted).
    """
    hosts = {}
    raw = os.environ.get("NORN_GIT_CREDENTIALS") or ""
    entries = [(f"NORN_GIT_CREDENTIALS entry {n}", e.strip()) for n, e in enumerate(raw.split(","), 1) if e.strip()]
    if os.environ.get("NORN_GIT_TOKEN"):
        # A token must have a host it may go to: github.com unless told.
        host = (os.environ.get("NORN_GIT_TOKEN_HOST") or "github.com").strip()
        entries.append(("NORN_GIT_TOKEN_HOST", f"{host}={os.environ['NORN_GIT_TOKEN']}"))
    for where, entry in entries:
        host, sep, token = entry.partition("=")
        host = host.strip().lower()
        if not sep or not token.strip():
            raise ImproperlyConfigured(
                f"{where} is not HOST=TOKEN; use NORN_GIT_CREDENTIALS=\"github.com=TOKEN,git.example.com:8443=TOKEN2\""
            )
        match = re.fullmatch(r"([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?", host)
        if not match or (match[2] and not 1 <= int(match[2]) <= 65535):
            raise ImproperlyConfigured(
                f"{where}: {host!r} is not a host; use HOST or HOST:PORT, e.g. github.com or git.example.com:8443"
            )
        if match[2] == "443":
            host = match[1]  # https's own port: the same server as without it
        if host in hosts:
            raise ImproperlyConfigured(f"{where}: host {host!r} is given a token twice; keep one")
        hosts[host] = token.strip()
    return hosts


def envlist(name, default=""):
    """A comma-separated list, blanks dropped."""
    raw = os.environ.get(name)
    if raw is None:
        raw = default
    return [item.strip() for item in raw.split(",") if item.strip()]


def origins_from_env(name):
    """CSRF_TRUSTED_ORIGINS: scheme://host[:port] entries, as Django wants them."""
    origins = envlist(name)
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ImproperlyConfigured(
                f"{name}: {origin!r} is not an origin; use SCHEME://HOST[:PORT] entries "
                "separated by commas, e.g. https://norn.example.com"
            )
    return [origin.rstrip("/") for origin in origins]


def proxy_ssl_header_from_env(name):
    """SECURE_PROXY_SSL_HEADER as `Header-Name: value`, e.g. `X-Forwarded-Proto: https`.

    Django wants ("HTTP_X_FORWARDED_PROTO", "https"): the header's request.META key.
    """
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return None
    header, sep, value = raw.partition(":")
    header, value = header.strip(), value.strip()
    if not sep or not value or not re.fullmatch(r"[A-Za-z0-9-]+", header):
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not HEADER: VALUE; use the header your TLS-terminating "
            "proxy sets on HTTPS requests, e.g. 'X-Forwarded-Proto: https'"
        )
    return ("HTTP_" + header.upper().replace("-", "_"), value)


def ingress_admin_from_env(name, default):
    """Caddy's admin address: unix//ABSOLUTE/PATH or HOST:PORT (never a URL)."""
    raw = (os.environ.get(name) or default).strip()
    if raw.startswith("unix//"):
        if not raw[len("unix/"):].startswith("/") or len(raw) <= len("unix//"):
            raise ImproperlyConfigured(f"{name}={raw!r}: use unix//ABSOLUTE/PATH/TO/admin.sock")
        return raw
    host, _, port = raw.rpartition(":")
    if not host or "/" in raw or not port.isdigit() or not 0 < int(port) < 65536:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not an admin address; use unix//ABSOLUTE/PATH (recommended) or HOST:PORT, "
            "e.g. 127.0.0.1:2019"
        )
    return raw


def addresses_from_env(name):
    """Listen addresses (IPv4/IPv6 literals or host names), comma-separated; [] = all interfaces."""
    addresses = envlist(name)
    for address in addresses:
        if not re.fullmatch(r"[0-9A-Za-z.:\-\[\]]{1,253}", address) or address.count(":") == 1:
            raise ImproperlyConfigured(
                f"{name}: {address!r} is not an address to listen on; give addresses without ports, "
                "separated by commas, e.g. 127.0.0.1,::1 (empty: all interfaces)"
            )
    return [address.strip("[]") for address in addresses]


def https_url_from_env(name):
    """An https:// URL (an ACME directory), or '' when unset."""
    raw = (os.environ.get(name) or "").strip()
    if raw and (urlsplit(raw).scheme != "https" or not urlsplit(raw).netloc):
        raise ImproperlyConfigured(f"{name}={raw!r} is not an https:// URL (an ACME directory)")
    return raw


def file_from_env(name):
    """An existing file's absolute Path, or None when unset."""
    raw = os.environ.get(name)
    if not raw:
        return None
    path = Path(raw).expanduser().resolve()
    if not path.is_file():
        raise ImproperlyConfigured(f"{name}={raw!r} is not a file")
    return path
