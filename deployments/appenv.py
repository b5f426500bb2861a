"""The environment an app's container runs with, shared by both runtimes and the scheduler.

The infraspec `env`, Norn's NORN_* facts, the app database's connection and
$PORT, and the private env file the Docker engine reads it from, so values
never appear in argv.
"""

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from apps_registry.spec import Spec
from deployments import appdb, runner
from deployments.outcomes import StepFailed
from deployments.runner import PASSTHROUGH_ENV


class StepContext(Protocol):
    """The parts of a step's Context (deployments.steps.Context) that the runtimes,
    the scheduler and container_env use: typed here, below them, because the
    steps import the runtimes and never the other way round."""

    deployment_id: int
    public_id: str
    app_name: str
    spec: Spec
    kind: str
    # "docker", "kubernetes" or "cron": where the app's containers run.
    runtime: str
    commit_sha: str
    image: str
    timeout: float | None
    cancel_reason: Callable[[], str | None] | None

    def log(self, text: str) -> None: ...

    def defer(self, work: Callable[[Callable[[str], None]], None]) -> None: ...

    def run(self, argv: list, **kwargs) -> runner.Result: ...

    def app_env(self, **extra) -> dict[str, str]: ...


def database_env(spec: Spec, runtime: str = "docker") -> dict[str, str]:
    """DATABASE_URL and the PG* variables of the app's own database role, when it
    declares services.postgres: for use inside its containers and Jobs only.

    The role owns the app's database and nothing else; the snapshot step
    creates it (appdb.ensure_database). The host is NORN_APP_DATABASES_HOST
    (host.docker.internal, which the Docker runtime maps to the host's
    gateway), never Norn's admin connection; on the Kubernetes runtime it is
    appdb.kubernetes_host(), and a loopback host fails the step (StepFailed)
    before anything is written to the cluster.
    """
    if not spec.postgres:
        return {}
    host = None
    if runtime == "kubernetes":
        try:
            host = appdb.kubernetes_host()
        except appdb.DatabaseProblem as exc:
            raise StepFailed(str(exc)) from None
    return appdb.container_env(spec.app, spec.postgres.database, host=host)


def container_env(ctx: StepContext, *, database: bool = True, port: bool = True) -> dict[str, str]:
    """The app's environment inside its container (and the throwaway ones of
    deployments/containers.py): nothing of Norn's own.

    ctx.app_env() plus the database connection (database=False: without it,
    for build.test) and PORT (port=False: without it), minus the host's PATH,
    HOME and friends: those describe this machine, and passing them would
    override the image's own PATH. A variable the infraspec sets itself is
    kept even when its name is one of those.
    """
    extra = database_env(ctx.spec, ctx.runtime) if database else {}
    if port and ctx.spec.port:
        extra["PORT"] = ctx.spec.port
    env = ctx.app_env(**extra)
    declared = set(ctx.spec.env) | set(extra)
    return {k: v for k, v in env.items() if k not in PASSTHROUGH_ENV or k in declared}


def env_problem(env: Mapping[str, object]) -> str | None:
    """Why `env` cannot go into a docker --env-file, or None."""
    for name, value in env.items():
        if any(c in str(value) for c in "\n\r\0"):
            return (
                f"environment variable {name} contains a line break or NUL character; "
                "the Docker runtime passes the environment through an env file, one "
                "variable per line, so such values are not supported"
            )
    return None


@contextlib.contextmanager
def env_file(env: Mapping[str, object]) -> Iterator[str]:
    """A private (mode 600) docker --env-file holding `env`, removed on exit.

    Values travel in a file, never in argv: they can hold the database
    password, and every user of the machine can read argv in ps and /proc.
    """
    problem = env_problem(env)
    if problem:
        raise ValueError(problem)
    fd, path = tempfile.mkstemp(prefix="norn-env-", suffix=".env")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            # mkstemp already creates it 0600; keep that true even if it changes.
            os.fchmod(f.fileno(), 0o600)
            f.writelines(f"{name}={value}\n" for name, value in env.items())
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
