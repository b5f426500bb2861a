"""Norn's settings: one module, every value read from the environment.

The defaults are for development on one machine (PostgreSQL and Redis on
127.0.0.1). A bad value stops Norn at start with the variable's name, the value
and what would be valid; see docs/configuration in the README.
"""

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


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


DEBUG = envbool("DEBUG", True)

SECRET_KEY = env("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off; use a long random string "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))')"
        )
    SECRET_KEY = "norn-development-only-not-secret"

ALLOWED_HOSTS = [
    h.strip()
    for h in env("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if h.strip()
]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "apps_registry",
    "deployments",  # before django_q: its qcluster command wins (deployments/workerstop.py)
    "django_q",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # daphne serves no static files; WhiteNoise does, from the same process.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Everything needs a login except views marked @login_not_required
    # (the health endpoint and the login page itself).
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "norn_project.urls"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "norn_project.asgi.application"

DATABASES = {
    "default": database_from_env(
        "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/norn"
    )
}
# Lets two test runs on one machine use different test databases.
if env("NORN_TEST_DATABASE_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": env("NORN_TEST_DATABASE_NAME")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = redis_url_from_env("REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            # Keeps two Norns (or two test runs) on one Redis apart.
            "prefix": env("NORN_CHANNEL_PREFIX", "norn"),
            # A busy build streams many log events; a viewer's channel must
            # hold a burst of them (clients catch up from the database anyway).
            "capacity": 1000,
        },
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# WhiteNoise serves static/ and the apps' static files straight from where
# they are (Norn's are few), so no collectstatic step is needed to run it.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- Norn -------------------------------------------------------------------

# Where app directories (each with an infraspec.yaml) are discovered.
NORN_APPS_DIR = envpath("NORN_APPS_DIR", "~/projects")
# Pre-migration pg_dump files.
NORN_SNAPSHOT_DIR = envpath("NORN_SNAPSHOT_DIR", BASE_DIR / "var" / "snapshots")
# Per-deployment work directories (clones); crash recovery removes leftovers.
NORN_WORK_DIR = envpath("NORN_WORK_DIR", BASE_DIR / "var" / "work")
# The single-host runtime's proxy: its routes, status and log (manage.py proxy).
NORN_PROXY_DIR = envpath("NORN_PROXY_DIR", BASE_DIR / "var" / "proxy")
# Where images are pushed; empty means images stay on the local engine.
NORN_REGISTRY_URL = registry_from_env("NORN_REGISTRY_URL")
# Where the deploy step puts the app: a Kubernetes cluster or the local Docker
# engine (single host).
NORN_RUNTIME = envchoice("NORN_RUNTIME", "docker", ("docker", "kubernetes"))
# Git credentials. They are handed to git through GIT_ASKPASS/GIT_SSH_COMMAND
# at clone time and never stored, logged or put on a command line. A token is
# bound to one host: git gets it only for an https:// URL of exactly that
# host[:port] (deployments/gitauth.py), never over http://, ssh or file://.


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


NORN_GIT_TOKEN = env("NORN_GIT_TOKEN") or None
NORN_GIT_CREDENTIALS = git_credentials_from_env()
# A PEM bundle of the certificate authorities git trusts for https:// clones
# (GIT_SSL_CAINFO): it replaces the system's bundle, so add those CAs too when
# cloning from public hosts as well.
NORN_GIT_CA_FILE = Path(env("NORN_GIT_CA_FILE")).expanduser() if env("NORN_GIT_CA_FILE") else None
if NORN_GIT_CA_FILE and not NORN_GIT_CA_FILE.is_file():
    raise ImproperlyConfigured(
        f"NORN_GIT_CA_FILE={env('NORN_GIT_CA_FILE')!r} is not a file; set it to a PEM bundle of CA certificates"
    )
NORN_GIT_SSH_KEY = ssh_key_from_env("NORN_GIT_SSH_KEY")

# The PostgreSQL server holding the apps' own databases (infraspec
# services.postgres.database names one on it), as an admin connection that
# only Norn uses (snapshots, restores, creating each app's role). Only host,
# port, user and password are used. No default, and never Norn's own server:
# unset, apps with services.postgres fail their snapshot step and `manage.py
# check` warns (norn.W004). scripts/services writes one for its "apps" cluster
# to /var/lib/norn-services/apps-database-url.
NORN_APP_DATABASES = (
    database_from_env("NORN_APP_DATABASES_URL", None) if env("NORN_APP_DATABASES_URL") else None
)
# Where the apps' containers reach that server: the Docker runtime maps
# host.docker.internal to the host's gateway (--add-host
# host.docker.internal:host-gateway). The port is the admin URL's.
NORN_APP_DATABASES_HOST = env("NORN_APP_DATABASES_HOST") or "host.docker.internal"
# The key each app role's password is derived from (never stored); SECRET_KEY
# when unset. Changing it changes every app's password at the app's next
# deploy, which then hands the new one to the app's new containers.
NORN_APP_DATABASES_KEY = env("NORN_APP_DATABASES_KEY") or None

# Per-step timeouts in seconds: NORN_TIMEOUT_<STEP> (a hung docker build must
# not hang Norn). Cleanup is short: it only removes a directory.
NORN_STEP_TIMEOUTS = {
    step: envint(f"NORN_TIMEOUT_{step.upper()}", default, minimum=1, maximum=86400)
    for step, default in {
        "clone": 300,
        "build": 1800,
        "test": 1800,
        "snapshot": 1800,
        "migrate": 1800,
        "deploy": 600,
        "cleanup": 120,
        "verify": 600,
        "restore": 1800,
    }.items()
}
# A running deployment's worker refreshes its heartbeat every few seconds;
# one silent for this long is considered dead and recovered.
NORN_HEARTBEAT_TIMEOUT = envint("NORN_HEARTBEAT_TIMEOUT", 60, minimum=5, maximum=3600)
# A cron run is stopped after this long; it must end before the task queue's
# own timeout (NORN_TASK_TIMEOUT) kills the worker, so the run is recorded.
NORN_CRON_TIMEOUT = envint("NORN_CRON_TIMEOUT", 3000, minimum=1, maximum=86400)
# Limits of every container Norn runs app code in: the app's own container
# and the throwaway ones of build.test, migrations.command and cron runs
# (deployments/containers.py). NORN_CONTAINER_CPUS: a number of CPUs (docker
# --cpus), NORN_CONTAINER_MEMORY: docker --memory (512m, 1g; swap included),
# NORN_CONTAINER_PIDS: processes at most (a fork bomb stops there).
NORN_CONTAINER_CPUS = env("NORN_CONTAINER_CPUS") or "1"
if not re.fullmatch(r"\d+(\.\d+)?", NORN_CONTAINER_CPUS) or float(NORN_CONTAINER_CPUS) <= 0:
    raise ImproperlyConfigured(
        f"NORN_CONTAINER_CPUS={NORN_CONTAINER_CPUS!r} is not a positive number of CPUs, e.g. 1 or 0.5"
    )
NORN_CONTAINER_MEMORY = (env("NORN_CONTAINER_MEMORY") or "512m").lower()
_memory = re.fullmatch(r"(\d+)([kmg]?)", NORN_CONTAINER_MEMORY)
# 6 MiB is the least docker accepts.
if not _memory or int(_memory[1]) * 1024 ** " kmg".index(_memory[2] or " ") < 6 * 1024 ** 2:
    raise ImproperlyConfigured(
        f"NORN_CONTAINER_MEMORY={NORN_CONTAINER_MEMORY!r} is not a memory size of at least 6m, e.g. 512m or 1g"
    )
NORN_CONTAINER_PIDS = envint("NORN_CONTAINER_PIDS", 512, minimum=16, maximum=1_000_000)
# Kubernetes runtime: a kubeconfig file and context (default: $KUBECONFIG or
# ~/.kube/config and its current context, else the in-cluster service account).
NORN_KUBECONFIG = env("NORN_KUBECONFIG") or None
if NORN_KUBECONFIG and not Path(NORN_KUBECONFIG).expanduser().is_file():
    raise ImproperlyConfigured(f"NORN_KUBECONFIG={NORN_KUBECONFIG!r} is not a file; set it to a kubeconfig path")
NORN_KUBE_CONTEXT = env("NORN_KUBE_CONTEXT") or None
# Known-hosts file for SSH clones; new hosts are accepted once, then pinned.
NORN_GIT_KNOWN_HOSTS = Path(
    env("NORN_GIT_KNOWN_HOSTS") or BASE_DIR / "var" / "ssh" / "known_hosts"
).expanduser()

# Where the CLI finds Norn's server to follow deployments live, and the API
# token it authenticates with (create one in the admin: Deployments > API
# tokens). Without them `manage.py deploy/follow` read the database.
NORN_URL = env("NORN_URL", "")
if NORN_URL and urlsplit(NORN_URL).scheme not in ("http", "https", "ws", "wss"):
    raise ImproperlyConfigured(
        f"NORN_URL={NORN_URL!r} is not a server URL; use http(s)://HOST:PORT, e.g. http://127.0.0.1:8000"
    )
NORN_API_TOKEN = env("NORN_API_TOKEN") or None

# --- django-q2 ----------------------------------------------------------------

# Deploys are few, long and must not be lost, so the broker is PostgreSQL (the
# ORM broker): a queued deploy survives a Redis outage or restart. Tasks take
# primary keys only, and re-read everything from the database when they run.
Q_CLUSTER = {
    "name": "norn",
    "orm": "default",
    # How often an idle cluster asks PostgreSQL for new tasks: the latency a
    # deploy waits before it starts.
    "poll": 0.1,
    "workers": envint("NORN_WORKERS", 2, minimum=1, maximum=64),
    # A worker is killed after `timeout` seconds. Each pipeline step has its own
    # shorter timeout, so this is only the backstop for a wedged worker.
    "timeout": envint("NORN_TASK_TIMEOUT", 3600, minimum=60),
    # The ORM broker hands an unacknowledged task out again after `retry`
    # seconds. It must exceed `timeout`, or a deploy that is still running
    # would be delivered to a second worker while the first works on it.
    "retry": envint("NORN_TASK_TIMEOUT", 3600, minimum=60) + 300,
    # Redelivery is bounded: a deploy whose worker died is failed by crash
    # recovery, and re-running it forever would only repeat that.
    "max_attempts": 3,
    # One deploy at a time per worker process; do not prefetch others behind it.
    "queue_limit": envint("NORN_WORKERS", 2, minimum=1, maximum=64),
    "save_limit": 1000,
    "ack_failures": True,
    "catch_up": False,
    "label": "Task queue",
}

# Seconds a deployment in flight may take after SIGTERM before it is stopped and
# failed (deployments/workerstop.py); below norn-worker.service's TimeoutStopSec.
NORN_STOP_GRACE = envint("NORN_STOP_GRACE", 30, minimum=0, maximum=3600)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {
        "handlers": ["console"],
        "level": envchoice(
            "NORN_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")
        ),
    },
    "loggers": {"django": {"level": "INFO"}},
}
