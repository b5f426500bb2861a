"""The validated infraspec as typed, frozen values: what the pipeline, the runtimes
and the scheduler read instead of nested dicts.

`Spec.from_dict(data)` takes the validator's normalized dict (infraspec.parse) or
an App row's stored `spec` JSON, which may predate a field, and fills in every
default here, in one place. docs/infraspec.md describes the fields.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_BRANCH = "main"
DEFAULT_DOCKERFILE = "Dockerfile"
DEFAULT_NAMESPACE = "default"
DEFAULT_RETAIN = 5
DEFAULT_REPLICAS = 1
# https: redirect (HTTPS, plain HTTP redirected with 308), both, or off (plain HTTP only).
DEFAULT_HTTPS = "redirect"
# Roles whose apps run all the time (and so have replicas); cron apps run on a schedule.
LONG_RUNNING_ROLES = ("webserver", "worker")


@dataclass(frozen=True)
class Repo:
    url: str
    branch: str = DEFAULT_BRANCH
    auto_deploy: bool = False


@dataclass(frozen=True)
class Build:
    dockerfile: str = DEFAULT_DOCKERFILE
    # A shell command run with sh -c in the checked-out tree; None: no test step.
    test: str | None = None


@dataclass(frozen=True)
class Postgres:
    database: str


@dataclass(frozen=True)
class Services:
    postgres: Postgres | None = None


@dataclass(frozen=True)
class Migrations:
    command: str


@dataclass(frozen=True)
class Snapshots:
    retain: int = DEFAULT_RETAIN


@dataclass(frozen=True)
class Amounts:
    """cpu and memory as Kubernetes quantity text ("250m", "256Mi"), or None."""

    cpu: str | None = None
    memory: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Amounts":
        data = data or {}
        return cls(*(None if data.get(k) is None else str(data[k]) for k in ("cpu", "memory")))

    def to_dict(self) -> dict[str, str]:
        """Only the amounts given, as a container's resources.requests/limits take them."""
        return {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v is not None}


@dataclass(frozen=True)
class Resources:
    """resources: the app container's requests and limits (Kubernetes runtime)."""

    requests: Amounts = field(default_factory=Amounts)
    limits: Amounts = field(default_factory=Amounts)

    def __bool__(self) -> bool:
        return bool(self.requests.to_dict() or self.limits.to_dict())


@dataclass(frozen=True)
class Security:
    """security: overrides of the restricted securityContext (Kubernetes runtime).

    By default pods run with runAsNonRoot: true, so the image's USER must be a
    numeric uid other than 0, or run_as_user must give one.
    """

    run_as_user: int | None = None
    run_as_non_root: bool = True


@dataclass(frozen=True)
class Spec:
    app: str
    role: str
    repo: Repo | None = None
    build: Build | None = None
    services: Services = field(default_factory=Services)
    migrations: Migrations | None = None
    port: int | None = None
    # Host names the app is served on (lower-case, unique, in the file's order).
    domains: tuple[str, ...] = ()
    https: str = DEFAULT_HTTPS
    healthcheck: str | None = None
    # None for cron apps; 1 by default for the others.
    replicas: int | None = None
    # Whether infraspec says `replicas`: without it the Kubernetes runtime leaves the
    # field to whoever scales the app (an autoscaler), and the normalized dict says None.
    replicas_declared: bool = False
    namespace: str = DEFAULT_NAMESPACE
    schedule: str | None = None
    # A shell command string, or an argv tuple.
    command: str | tuple[str, ...] | None = None
    # Treat as read-only: one Spec is shared by every step of a deployment.
    env: dict[str, str] = field(default_factory=dict)
    auto_rollback: bool = False
    snapshots: Snapshots = field(default_factory=Snapshots)
    resources: Resources = field(default_factory=Resources)
    security: Security = field(default_factory=Security)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Spec":
        """The Spec for a validated infraspec dict, every default applied.

        Missing keys take their defaults, so specs stored before a field
        existed read the same as a freshly validated file.
        """
        data = data or {}
        role = data.get("role") or ""
        repo = data.get("repo")
        build = data.get("build")
        postgres = (data.get("services") or {}).get("postgres")
        migrations = data.get("migrations")
        replicas = data.get("replicas")
        replicas_declared = replicas is not None
        if replicas is None and role in LONG_RUNNING_ROLES:
            replicas = DEFAULT_REPLICAS
        auto_rollback = data.get("autoRollback")
        if auto_rollback is None:
            # A web server that fails its rollout is rolled back by default:
            # a broken site is worse than an old one.
            auto_rollback = role == "webserver"
        command = data.get("command")
        resources = data.get("resources") or {}
        security = data.get("security") or {}
        return cls(
            app=data.get("app") or "",
            role=role,
            repo=Repo(
                url=repo["url"],
                branch=repo.get("branch") or DEFAULT_BRANCH,
                auto_deploy=bool(repo.get("autoDeploy")),
            ) if repo else None,
            build=Build(
                dockerfile=build.get("dockerfile") or DEFAULT_DOCKERFILE,
                test=build.get("test"),
            ) if build is not None else None,
            services=Services(Postgres(postgres["database"]) if postgres else None),
            migrations=Migrations(migrations["command"]) if migrations and migrations.get("command") else None,
            port=data.get("port"),
            domains=tuple(data.get("domains") or ()),
            https=data.get("https") or DEFAULT_HTTPS,
            healthcheck=data.get("healthcheck"),
            replicas=replicas,
            replicas_declared=replicas_declared,
            namespace=data.get("namespace") or DEFAULT_NAMESPACE,
            schedule=data.get("schedule"),
            command=tuple(command) if isinstance(command, list | tuple) else command,
            env={k: str(v) for k, v in (data.get("env") or {}).items()},
            auto_rollback=bool(auto_rollback),
            snapshots=Snapshots((data.get("snapshots") or {}).get("retain") or DEFAULT_RETAIN),
            resources=Resources(
                requests=Amounts.from_dict(resources.get("requests")),
                limits=Amounts.from_dict(resources.get("limits")),
            ),
            security=Security(
                run_as_user=security.get("runAsUser"),
                run_as_non_root=security.get("runAsNonRoot") is not False,
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        """The normalized dict form, as App.spec stores it (infraspec.yaml's key names)."""
        return {
            "app": self.app,
            "role": self.role,
            "repo": {"url": self.repo.url, "branch": self.repo.branch, "autoDeploy": self.repo.auto_deploy}
            if self.repo else None,
            "build": {"dockerfile": self.build.dockerfile, "test": self.build.test} if self.build else None,
            "services": {"postgres": {"database": self.postgres.database}} if self.postgres else None,
            "migrations": {"command": self.migrations.command} if self.migrations else None,
            "port": self.port,
            "domains": list(self.domains),
            "https": self.https,
            "healthcheck": self.healthcheck,
            "replicas": self.replicas if self.replicas_declared else None,
            "namespace": self.namespace,
            "schedule": self.schedule,
            "command": list(self.command) if isinstance(self.command, tuple) else self.command,
            "env": dict(self.env),
            "autoRollback": self.auto_rollback,
            "snapshots": {"retain": self.snapshots.retain},
            "resources": {
                "requests": self.resources.requests.to_dict(),
                "limits": self.resources.limits.to_dict(),
            } if self.resources else None,
            "security": {"runAsUser": self.security.run_as_user, "runAsNonRoot": self.security.run_as_non_root},
        }

    @property
    def postgres(self) -> Postgres | None:
        """services.postgres: the app's own database, if it declares one."""
        return self.services.postgres

    @property
    def is_cron(self) -> bool:
        return self.role == "cron"
