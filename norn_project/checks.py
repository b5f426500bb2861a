"""System checks: a missing or unreachable service is an error with a hint.

They run before every management command and at server start, so a user sees
"start PostgreSQL with scripts/services" instead of a traceback from deep
inside the first query.
"""

from django.conf import settings
from django.core.checks import Error, Warning, register

from norn_project import services

START_HINT = "Run scripts/services to install and start what Norn needs."


@register("norn")
def check_database(app_configs=None, **kwargs):
    problem = services.database_problem()
    if problem is None:
        return []
    target = services.safe_database_target()
    if "does not exist" in problem:
        hint = (
            f"Create it with: createdb -h {settings.DATABASES['default'].get('HOST') or 'localhost'} "
            f"-U postgres {settings.DATABASES['default']['NAME']} (scripts/services does this "
            "for the default database), or point DATABASE_URL at an existing one."
        )
    else:
        hint = f"Is PostgreSQL running at {target}? {START_HINT} Or set DATABASE_URL."
    return [Error(f"PostgreSQL at {target} is unreachable: {problem}", hint=hint, id="norn.E001")]


@register("norn")
def check_redis(app_configs=None, **kwargs):
    problem = services.redis_problem()
    if problem is None:
        return []
    target = services.safe_redis_target()
    return [
        Error(
            f"Redis at {target} is unreachable: {problem}",
            hint=f"Live progress needs Redis. {START_HINT} Or set REDIS_URL.",
            id="norn.E002",
        )
    ]


@register("norn")
def check_apps_dir(app_configs=None, **kwargs):
    path = settings.NORN_APPS_DIR
    if path.is_dir():
        return []
    return [
        Warning(
            f"NORN_APPS_DIR {path} does not exist, so no apps can be discovered.",
            hint="Create it and put one directory per app (with an infraspec.yaml) "
            "in it, or set NORN_APPS_DIR, e.g. to this project's examples/ folder.",
            id="norn.W001",
        )
    ]


@register("norn")
def check_docker(app_configs=None, **kwargs):
    problem = services.docker_problem()
    if problem is None:
        return []
    return [
        Warning(
            f"The Docker engine is unreachable: {problem}. Builds and the docker "
            "runtime will fail until it is running.",
            hint=START_HINT,
            id="norn.W002",
        )
    ]


TCP_MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"


@register("norn")
def check_ingress_kernel(app_configs=None, **kwargs):
    """The ingress re-creates its listeners on each route switch; without
    net.ipv4.tcp_migrate_req=1 connections arriving at that instant are reset."""
    if settings.NORN_RUNTIME != "docker":
        return []
    try:
        with open(TCP_MIGRATE_REQ) as f:
            if f.read().strip() == "1":
                return []
    except OSError:
        pass
    return [
        Warning(
            "net.ipv4.tcp_migrate_req is not 1: each route switch of the ingress may reset "
            "connections arriving at that instant.",
            hint="sysctl -w net.ipv4.tcp_migrate_req=1 (Linux 5.14+; deploy/install.sh and scripts/services set it).",
            id="norn.W006",
        )
    ]


@register("norn")
def check_timeouts(app_configs=None, **kwargs):
    task_timeout = settings.Q_CLUSTER["timeout"]
    longest = max(max(settings.NORN_STEP_TIMEOUTS.values()), settings.NORN_CRON_TIMEOUT)
    if longest < task_timeout:
        return []
    return [
        Error(
            f"A step or cron timeout ({longest} s) is not below NORN_TASK_TIMEOUT ({task_timeout} s): "
            "the task queue would kill the worker before Norn could record the timeout.",
            hint="Lower NORN_TIMEOUT_<STEP>/NORN_CRON_TIMEOUT or raise NORN_TASK_TIMEOUT.",
            id="norn.E003",
        )
    ]


@register("norn")
def check_kubernetes_config(app_configs=None, **kwargs):
    if settings.NORN_RUNTIME != "kubernetes":
        return []
    import os
    from pathlib import Path

    candidates = [settings.NORN_KUBECONFIG, *(os.environ.get("KUBECONFIG") or "").split(os.pathsep), "~/.kube/config"]
    if any(c and Path(c).expanduser().is_file() for c in candidates) or os.environ.get("KUBERNETES_SERVICE_HOST"):
        return []
    return [
        Warning(
            "NORN_RUNTIME is kubernetes, but no kubeconfig was found (NORN_KUBECONFIG, $KUBECONFIG, "
            "~/.kube/config) and Norn is not running in a cluster.",
            hint="Set NORN_KUBECONFIG to a kubeconfig file, or NORN_RUNTIME=docker for a single host.",
            id="norn.W003",
        )
    ]


def _address(config):
    return (str(config.get("HOST") or "localhost"), str(config.get("PORT") or 5432))


@register("norn")
def check_app_databases(app_configs=None, **kwargs):
    server = settings.NORN_APP_DATABASES
    if not server:
        return [
            Warning(
                "NORN_APP_DATABASES_URL is not set: apps with services.postgres will fail "
                "their snapshot step.",
                hint="Set it to an admin connection of the apps' own PostgreSQL server; "
                "scripts/services starts one and writes its URL to "
                "/var/lib/norn-services/apps-database-url.",
                id="norn.W004",
            )
        ]
    own = settings.DATABASES["default"]
    if _address(server) == _address(own):
        return [
            Warning(
                f"NORN_APP_DATABASES_URL points at Norn's own PostgreSQL server ({':'.join(_address(own))}): "
                "an app's role would live next to Norn's tables, and a server Norn reaches "
                "without a password is not one to give apps.",
                hint="Use a server of the apps' own, e.g. scripts/services' apps cluster (port 5433).",
                id="norn.W005",
            )
        ]
    return []
