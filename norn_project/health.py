"""The health endpoint: the one URL that needs no login (for load balancers).

Anyone gets ok/failing per component; only a logged-in staff user gets the
reason, which may name a host, a port or a role (never a password).
"""

from django.contrib.auth.decorators import login_not_required
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from norn_project import services


@login_not_required
@never_cache
@require_GET
def healthz(request):
    problems = {
        "database": services.database_problem(),
        "redis": services.redis_problem(),
    }
    ok = not any(problems.values())
    body = {
        "status": "ok" if ok else "unavailable",
        "checks": {name: "failing" if problem else "ok" for name, problem in problems.items()},
    }
    if not ok and request.user.is_authenticated and request.user.is_staff:
        # Reasons never include credentials (see services.database_problem).
        body["details"] = {name: problem for name, problem in problems.items() if problem}
    return JsonResponse(body, status=200 if ok else 503)
