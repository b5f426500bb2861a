"""Login throttling with django-axes: who the client is, and what a lockout says.

settings.py names these (AUTHENTICATION_BACKENDS, AXES_CLIENT_IP_CALLABLE,
AXES_LOCKOUT_CALLABLE); docs/production.md says how to run behind a proxy.
"""

import ipaddress
import math

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_cool_off
from django.conf import settings
from django.shortcuts import render


class LoginThrottleBackend(AxesStandaloneBackend):
    """Axes' refusing backend, for logins that come with a request.

    Only the login pages can be hammered from outside, and they always pass
    the request. An authenticate() without one (the test client's login(), a
    shell) has nobody's address to throttle, and axes would raise instead of
    letting ModelBackend answer.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def client_ip(request):
    """The address a login attempt came from.

    REMOTE_ADDR, unless Norn runs behind NORN_TRUSTED_PROXY_COUNT proxies that
    each append the address they saw to X-Forwarded-For: then the entry the
    outermost trusted proxy appended. Entries left of it are whatever the
    client sent, so they are never believed (a client could otherwise pick a
    fresh address for every guess, or lock out someone else's).
    """
    count = settings.NORN_TRUSTED_PROXY_COUNT
    if count:
        forwarded = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [hop for hop in forwarded if hop]
        if len(forwarded) >= count and _is_address(forwarded[-count]):
            return forwarded[-count]
    # None when there is none (a request built in-process): axes stores the
    # address in an address column, which refuses anything else.
    address = request.META.get("REMOTE_ADDR")
    return address if address and _is_address(address) else None


def _is_address(value):
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def lockout_response(request, *args):
    """The "too many attempts" page, with status 429.

    Axes calls this as (request, response, credentials) or, from its async
    middleware, (request, credentials): only the request is used.
    """
    cool_off = get_cool_off(request)
    minutes = max(1, math.ceil(cool_off.total_seconds() / 60)) if cool_off else None
    context = {"minutes": minutes, "failure_limit": settings.AXES_FAILURE_LIMIT}
    return render(request, "registration/lockout.html", context, status=settings.AXES_HTTP_RESPONSE_CODE)
