"""The health endpoint: the one URL that needs no login (for load balancers)."""

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
        # Reasons are only shown when something is wrong; they never include
        # credentials (see services.database_problem).
        "checks": {name: (problem or "ok") for name, problem in problems.items()},
    }
    return JsonResponse(body, status=200 if ok else 503)
