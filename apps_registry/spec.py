"""The validated infraspec as typed, frozen values: what the pipeline, the runtimes
and the scheduler read instead of nested dicts.

`Spec.from_dict(data)` takes the validator's normalized dict (infraspec.parse) or
an App row's stored `spec` JSON, which may predate a field, and fills in every
default here, in one place. docs/infraspec.md describes the fields.
"""

import re
import reprlib
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


# --- notify: who hears of a deployment's end (docs/notifications.md) ----------

# The events a deployment's end is announced as: deployed (a deploy went live),
# failed, rolled_back (a rollback went live), restored (a restore went live),
# and any other terminal status by its name (cancelled), only when asked for.
NOTIFY_EVENTS = ("deployed", "failed", "rolled_back", "restored", "cancelled")
DEFAULT_NOTIFY_ON = ("deployed", "failed", "rolled_back", "restored")
MAX_NOTIFY_TARGETS = 10
# A target's name makes its environment variables (ops-slack: NORN_NOTIFY_OPS_SLACK_URL),
# so '-' is the only separator: "ops_slack" would name the same variables.
NOTIFY_TARGET_RE = re.compile(r"[a-z][a-z0-9-]{0,39}")


@dataclass(frozen=True)
class NotifyRule:
    """notify[i]: tell the target `target` of the events in `events`."""

    target: str
    events: tuple[str, ...] = DEFAULT_NOTIFY_ON


def notify_problems(value: list) -> tuple[list[dict], list[tuple[tuple, str]]]:
    """notify as infraspec.yaml gives it (a list of {target, events} mappings,
    or target names) -> (the normalized rules, [(field path, problem)]).

    The key is `events`, not `on`: YAML 1.1 reads a bare `on` as true."""
    rules, problems, seen = [], [], {}
    if not value or len(value) > MAX_NOTIFY_TARGETS:
        return [], [((), f"has {len(value)} targets; list from 1 to {MAX_NOTIFY_TARGETS}, or leave notify out")]
    for index, item in enumerate(value):
        item = {"target": item} if isinstance(item, str) else item
        if not isinstance(item, dict):
            problems.append(((index,), f"{_shown(item)} is not a mapping; give {{target: NAME, events: [EVENT, ...]}}"))
            continue
        for key in item:
            if key is True:  # YAML 1.1 reads a bare `on` as true
                problems.append(((index, "on"), "is not a key here; list the events under events"))
            elif key not in ("target", "events"):
                problems.append(((index, str(key)), f"unknown key {_shown(key)}; valid keys here are target, events"))
        target, events = item.get("target"), item.get("events")
        if target is None:
            problems.append(((index, "target"), "is required: the name of a target configured in Norn's environment"))
        elif not isinstance(target, str) or not NOTIFY_TARGET_RE.fullmatch(target):
            problems.append(((index, "target"), f"{_shown(target)} is not a target name; use 1 to 40 lower-case "
                             "letters, digits and '-', starting with a letter (e.g. ops-slack)"))
            target = None
        elif target in seen:
            problems.append(((index, "target"), f"{_shown(target)} is listed twice (also notify[{seen[target]}]); "
                             "keep one and list all its events there"))
            target = None
        else:
            seen[target] = index
        events = _notify_events(events, index, problems)
        if target is not None and events is not None:
            rules.append({"target": target, "events": events})
    return rules, problems


def _notify_events(given, index, problems):
    valid = ", ".join(NOTIFY_EVENTS)
    if given is None:
        return list(DEFAULT_NOTIFY_ON)
    if not isinstance(given, list) or not given:
        problems.append(((index, "events"), f"{_shown(given)} is not a list of events; give some of {valid}"))
        return None
    events, bad = [], False
    for position, event in enumerate(given):
        if not isinstance(event, str) or event not in NOTIFY_EVENTS:
            problems.append(((index, "events", position), f"{_shown(event)} is not an event; use one of {valid}"))
            bad = True
        elif event not in events:
            events.append(event)
    return None if bad else events


def _shown(value):
    text = reprlib.repr(value)  # a huge value is not built whole
    return text if len(text) <= 60 else text[:59] + "…"


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
    # Targets told of the deployment's end; only names: their URLs and secrets
    # are in Norn's environment (deployments/notifications.py).
    notify: tuple[NotifyRule, ...] = ()

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
            notify=tuple(
                NotifyRule(rule["target"], tuple(rule.get("events") or DEFAULT_NOTIFY_ON))
                for rule in data.get("notify") or ()
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
            # Only when given: specs stored before notify existed read the same.
            **({"notify": [{"target": r.target, "events": list(r.events)} for r in self.notify]} if self.notify else {}),
        }

    @property
    def postgres(self) -> Postgres | None:
        """services.postgres: the app's own database, if it declares one."""
        return self.services.postgres

    @property
    def is_cron(self) -> bool:
        return self.role == "cron"
