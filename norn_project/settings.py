"""Norn's settings: one module, every value read from the environment.

The defaults are for development on one machine (PostgreSQL and Redis on
127.0.0.1), except DEBUG, which is off unless asked for. A bad value stops
Norn at start with the variable's name, the value and what would be valid;
docs/production.md lists what a production environment sets.
"""

import re
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from norn_project import process
from norn_project.envsettings import (
    addresses_from_env,
    database_from_env,
    env,
    envbool,
    envchoice,
    envint,
    envlist,
    envpath,
    file_from_env,
    git_credentials_from_env,
    https_url_from_env,
    ingress_admin_from_env,
    origins_from_env,
    proxy_ssl_header_from_env,
    redis_url_from_env,
    registry_from_env,
    ssh_key_from_env,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# Off unless asked for: the debug pages list every URL pattern to anyone and
# show settings (REDIS_URL with its password) to whoever triggers an error.
DEBUG = envbool("DEBUG", False)

SECRET_KEY = env("SECRET_KEY", "")
# Commands that sign and derive nothing run without a key: validate_infraspec
# (in app repositories' CI, far from Norn's secrets) and any --help.
_KEYLESS = sys.argv[0].endswith("manage.py") and (
    sys.argv[1:2] in (["validate_infraspec"], ["help"]) or "--help" in sys.argv or "-h" in sys.argv
)
if not SECRET_KEY:
    if _KEYLESS:
        SECRET_KEY = secrets.token_urlsafe(50)  # this process only; nothing outlives it
    elif not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off; use a long random string "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))'), or DEBUG=true "
            "for development on this machine"
        )
    else:
        SECRET_KEY = "norn-development-only-not-secret"

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

# Behind a TLS-terminating proxy (docs/production.md). Off by default because
# the quickstart serves plain http://127.0.0.1:8000, where secure cookies
# would never come back; `manage.py check --deploy` asks for each of them.
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", False)
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", False)
# A load balancer probing over plain HTTP gets its answer, not a redirect.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0, minimum=0, maximum=10 * 365 * 86400)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", False)
# ("HTTP_X_FORWARDED_PROTO", "https") from "X-Forwarded-Proto: https". Only
# set it when the proxy in front always sets (or strips) that header.
SECURE_PROXY_SSL_HEADER = proxy_ssl_header_from_env("SECURE_PROXY_SSL_HEADER")
CSRF_TRUSTED_ORIGINS = origins_from_env("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    # daphne's runserver (HTTP + WebSocket) without importing Twisted in
    # every command; before staticfiles so its runserver wins.
    "norn_project.apps.DaphneRunserverConfig",
    # The admin, its modules imported when its URLs or checks need them.
    "norn_project.apps.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "apps_registry",
    "deployments",  # before django_q: its qcluster command wins (deployments/workerstop.py)
    "django_q",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Malformed input (a NUL anywhere, an admin action's ids that are no
    # ids) is a 400 before a view can hand it to PostgreSQL and get a 500.
    "norn_project.middleware.BadInputMiddleware",
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
    # Last, as django-axes asks: it turns a lockout into the lockout page.
    "axes.middleware.AxesMiddleware",
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
# A web process (daphne) takes its connections from a pool of at most this
# many (norn_project/process.py says why); 0: a new connection per request.
NORN_DB_POOL_SIZE = envint("NORN_DB_POOL_SIZE", 8, minimum=0, maximum=100)
if process.WEB and NORN_DB_POOL_SIZE:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps them; Django requires 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1, "max_size": NORN_DB_POOL_SIZE, "timeout": 10,
    }
# Lets two test runs on one machine use different test databases.
if env("NORN_TEST_DATABASE_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": env("NORN_TEST_DATABASE_NAME")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = redis_url_from_env("REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL_LAYERS = {
    "default": {
        # Redis pub/sub: an event is one PUBLISH per group, and each web
        # process receives it once and hands it to its own viewers, instead
        # of one Redis list push and pop per viewer (channels_redis.core):
        # 1,000 viewers of a deployment cost one message per process, not
        # 1,000. Pub/sub keeps nothing for absent listeners; consumers fill
        # any gap from the Event table by seq (docs/live.md).
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            # Keeps two Norns (or two test runs) on one Redis apart.
            "prefix": env("NORN_CHANNEL_PREFIX", "norn"),
        },
    }
}

# Login throttling (django-axes) on /login/ and /admin/login/: after
# NORN_LOGIN_FAILURE_LIMIT wrong passwords for one username from one address,
# that pair is locked out for NORN_LOGIN_COOLOFF_MINUTES, the right password
# included. The backend goes first; it only refuses, ModelBackend logs in.
AUTHENTICATION_BACKENDS = [
    "norn_project.loginthrottle.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("NORN_LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(minutes=envint("NORN_LOGIN_COOLOFF_MINUTES", 15, minimum=1, maximum=7 * 24 * 60))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "norn_project.loginthrottle.lockout_response"
# The client's address: REMOTE_ADDR, or behind NORN_TRUSTED_PROXY_COUNT
# proxies the X-Forwarded-For entry the nearest of them saw connect
# (norn_project/loginthrottle.py). Without it, behind a proxy every client
# would share the proxy's address.
NORN_TRUSTED_PROXY_COUNT = envint("NORN_TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10)
AXES_CLIENT_IP_CALLABLE = "norn_project.loginthrottle.client_ip"
# Axes logs every attempt at INFO with the username; one line per failure
# (WARNING) is enough.
AXES_VERBOSE = False

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
# The single-host runtime's ingress: Caddy, its own service, driven through its
# admin API (deployments/ingress.py; docs/production.md, "The ingress").
NORN_INGRESS_ADMIN = ingress_admin_from_env("NORN_INGRESS_ADMIN", "unix//run/norn-ingress/admin.sock")
NORN_INGRESS_LISTEN = addresses_from_env("NORN_INGRESS_LISTEN")  # [] = every interface
NORN_INGRESS_HTTP_PORT = envint("NORN_INGRESS_HTTP_PORT", 80, minimum=1, maximum=65535)
NORN_INGRESS_HTTPS_PORT = envint("NORN_INGRESS_HTTPS_PORT", 443, minimum=1, maximum=65535)
NORN_INGRESS_TLS = envchoice("NORN_INGRESS_TLS", "acme", ("acme", "internal", "off"))
NORN_ACME_EMAIL = env("NORN_ACME_EMAIL", "")
NORN_ACME_CA = https_url_from_env("NORN_ACME_CA")  # '' = Let's Encrypt
NORN_ACME_CA_ROOT = file_from_env("NORN_ACME_CA_ROOT")
NORN_INGRESS_CERTIFICATES = envpath("NORN_INGRESS_CERTIFICATES", "") if env("NORN_INGRESS_CERTIFICATES") else None
# Where images are pushed; empty means images stay on the local engine.
NORN_REGISTRY_URL = registry_from_env("NORN_REGISTRY_URL")
# Where the deploy step puts the app: a Kubernetes cluster or the local Docker
# engine (single host).
NORN_RUNTIME = envchoice("NORN_RUNTIME", "docker", ("docker", "kubernetes"))
# Git credentials. They are handed to git through GIT_ASKPASS/GIT_SSH_COMMAND
# at clone time and never stored, logged or put on a command line. A token is
# bound to one host: git gets it only for an https:// URL of exactly that
# host[:port] (deployments/gitauth.py), never over http://, ssh or file://.


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
# Where pods on the Kubernetes runtime reach that server (a Service name, a
# node's or the server's own address); unset: the admin URL's host. A
# loopback host (localhost, 127.0.0.1, ::1) fails the deploy with an error
# naming this setting: inside a pod it is the pod itself.
NORN_KUBE_APP_DATABASES_HOST = env("NORN_KUBE_APP_DATABASES_HOST") or None
if NORN_KUBE_APP_DATABASES_HOST and not re.fullmatch(
    r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]", NORN_KUBE_APP_DATABASES_HOST
):
    raise ImproperlyConfigured(
        f"NORN_KUBE_APP_DATABASES_HOST={NORN_KUBE_APP_DATABASES_HOST!r} is not a host name or address; "
        "use e.g. postgres.databases.svc.cluster.local, 10.0.0.5 or [fd00::5]"
    )
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
_memory = re.fullmatch(r"(\d+)([kmg]?)", NORN_CONTAINER_MEMORY)  # in bytes below, for the engine's API
NORN_CONTAINER_MEMORY_BYTES = int(_memory[1]) * 1024 ** " kmg".index(_memory[2] or " ") if _memory else 0
if NORN_CONTAINER_MEMORY_BYTES < 6 * 1024 ** 2:  # the least docker accepts
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
# How long a new pod of an app without a health check must stay up before the rollout
# counts it available (the Deployment's minReadySeconds): catches crash-on-start.
NORN_KUBE_MIN_READY_SECONDS = envint("NORN_KUBE_MIN_READY_SECONDS", 10, minimum=0, maximum=3600)
# Secrets (in the app's namespace) the kubelet pulls the app's images with.
NORN_KUBE_IMAGE_PULL_SECRETS = [
    name.strip() for name in env("NORN_KUBE_IMAGE_PULL_SECRETS", "").split(",") if name.strip()
]
for _name in NORN_KUBE_IMAGE_PULL_SECRETS:
    if len(_name) > 253 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", _name):
        raise ImproperlyConfigured(
            f"NORN_KUBE_IMAGE_PULL_SECRETS: {_name!r} is not a Secret name (lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit, at most 253 characters); give names separated by commas"
        )
# Kubernetes Ingress for infraspec `domains`: its ingressClassName (empty: the cluster's
# default class) and the cert-manager ClusterIssuer that issues <app>-tls (empty: the
# operator provides that Secret).
NORN_KUBE_INGRESS_CLASS = env("NORN_KUBE_INGRESS_CLASS", "").strip()
NORN_KUBE_TLS_ISSUER = env("NORN_KUBE_TLS_ISSUER", "").strip()
for _name, _value in (("NORN_KUBE_INGRESS_CLASS", NORN_KUBE_INGRESS_CLASS), ("NORN_KUBE_TLS_ISSUER", NORN_KUBE_TLS_ISSUER)):
    if _value and (len(_value) > 253 or not re.fullmatch(
            r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", _value)):
        raise ImproperlyConfigured(
            f"{_name}={_value!r} is not a Kubernetes object name (lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit, at most 253 characters)"
        )
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
    # The ORM broker, woken by PostgreSQL's NOTIFY when a task is queued
    # instead of asking for new tasks every `poll` seconds: a deploy starts at
    # once. Its own wait replaces the poll's sleep (deployments/broker.py).
    "broker_class": "deployments.broker.NotifiedORM",
    "poll": 0,
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

# A refused request (400/403/404, CSRF, a disallowed host) logs one line; a
# traceback is kept for real server errors (norn_project/logfilters.py). The
# filter sits on the loggers that report refusals, so every handler (and
# pytest's caplog) gets the short record, and on the console for any other.
REFUSAL_LOGGERS = ["django.request", "django.security"] + [
    f"django.security.{name}"
    for name in (
        "csrf", "DisallowedHost", "DisallowedRedirect", "RequestDataTooBig", "TooManyFieldsSent",
        "TooManyFilesSent", "SuspiciousFileOperation", "SuspiciousMultipartForm", "SuspiciousSession",
        "SuspiciousOperation",
    )
]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"one_line_refusals": {"()": "norn_project.logfilters.OneLineRefusals"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["one_line_refusals"]},
    },
    "root": {
        "handlers": ["console"],
        "level": envchoice("NORN_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
    },
    "loggers": {
        "django": {"level": "INFO"},
        # Axes reports every login at INFO; failures and lockouts are WARNING.
        "axes": {"level": "WARNING"},
        **{name: {"filters": ["one_line_refusals"]} for name in REFUSAL_LOGGERS},
    },
}
# Deploy on push and notifications (docs/autodeploy.md, docs/notifications.md).
from norn_project.integrations import *  # noqa: E402,F401,F403
