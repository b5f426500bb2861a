"""Settings for deploy on push (docs/autodeploy.md), deployment
notifications (docs/notifications.md) and /metrics (docs/metrics.md), read from
the environment like the rest (norn_project/settings.py imports them).

Only what every target shares is here: each target's own URL, secret or
addresses (NORN_NOTIFY_<TARGET>_*) are read by deployments/notifications.py
when it sends, since their names come from the apps' infraspecs.
"""

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import validate_email

from norn_project.envsettings import env, envbool, envint, envlist

__all__ = [
    "NORN_WEBHOOK_MAX_BYTES", "NORN_POLL_INTERVAL",
    "NORN_NOTIFY_RETRY_DELAYS", "NORN_NOTIFY_TIMEOUT", "NORN_NOTIFY_EMAIL_FROM",
    "EMAIL_BACKEND", "EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD",
    "EMAIL_USE_TLS", "EMAIL_USE_SSL", "EMAIL_TIMEOUT",
    "NORN_METRICS_TOKEN", "NORN_METRICS_PUBLIC",
]

# Deploy on push. The webhook secrets (NORN_WEBHOOK_SECRET, and per app
# NORN_WEBHOOK_SECRET_<APP>) are read by deployments/hooks.py when a push
# arrives, so they never sit in the settings. The largest body a webhook may
# have, and the seconds between two polls of an autoDeploy app's branch (0:
# no polling; under 60 polls at each tick of the once-a-minute schedule).
NORN_WEBHOOK_MAX_BYTES = envint("NORN_WEBHOOK_MAX_BYTES", 5 << 20, minimum=1024)
NORN_POLL_INTERVAL = envint("NORN_POLL_INTERVAL", 60, minimum=0, maximum=86400)


def _retry_delays(name, default):
    """Seconds to wait before each retry: "10,30,120,600" is five attempts."""
    delays = []
    for item in envlist(name, default):
        if not item.isdigit() or not 1 <= int(item) <= 86400:
            raise ImproperlyConfigured(
                f"{name}: {item!r} is not a delay; use whole seconds from 1 to 86400, comma-separated, "
                f"e.g. {default}"
            )
        delays.append(int(item))
    if len(delays) > 10:
        raise ImproperlyConfigured(f"{name} lists {len(delays)} delays; at most 10 retries")
    return tuple(delays)


# Each notice is tried once, then again after each of these delays (seconds)
# while the target answers with a connection error, a timeout, 429 or 5xx.
# django-q2's scheduler looks for due retries every 30 seconds.
NORN_NOTIFY_RETRY_DELAYS = _retry_delays("NORN_NOTIFY_RETRY_DELAYS", "10,30,120,600")
# Seconds a target may take to connect and to answer (each); email's SMTP too.
NORN_NOTIFY_TIMEOUT = envint("NORN_NOTIFY_TIMEOUT", 5, minimum=1, maximum=60)

NORN_NOTIFY_EMAIL_FROM = env("NORN_NOTIFY_EMAIL_FROM", "norn@localhost")
try:
    validate_email(NORN_NOTIFY_EMAIL_FROM)
except ValidationError:
    raise ImproperlyConfigured(
        f"NORN_NOTIFY_EMAIL_FROM={NORN_NOTIFY_EMAIL_FROM!r} is not an email address; use one like norn@example.com"
    ) from None

# Django's own mail settings, under Django's names.
EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = envbool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured(
        "EMAIL_USE_TLS and EMAIL_USE_SSL are both true; set one: TLS is STARTTLS (port 587), SSL is port 465"
    )
EMAIL_TIMEOUT = NORN_NOTIFY_TIMEOUT

# /metrics (deployments/metrics.py): scrapers send `Authorization: Bearer
# <NORN_METRICS_TOKEN>`; without a token it answers 404 unless
# NORN_METRICS_PUBLIC=true opens it to anyone who can reach Norn.
NORN_METRICS_TOKEN = env("NORN_METRICS_TOKEN", "")
NORN_METRICS_PUBLIC = envbool("NORN_METRICS_PUBLIC", False)
if NORN_METRICS_TOKEN and NORN_METRICS_PUBLIC:
    raise ImproperlyConfigured(
        "NORN_METRICS_TOKEN is set and NORN_METRICS_PUBLIC is true; set one: the token keeps /metrics private, "
        "NORN_METRICS_PUBLIC=true opens it to anyone"
    )
if NORN_METRICS_TOKEN and (len(NORN_METRICS_TOKEN) < 16 or any(c.isspace() for c in NORN_METRICS_TOKEN)):
    raise ImproperlyConfigured(
        "NORN_METRICS_TOKEN must be at least 16 characters without spaces, e.g. "
        "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )
