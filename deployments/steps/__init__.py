"""The seven pipeline steps, one module each, and the context they share.

A step module has `run(ctx)`. It returns normally when it succeeded, raises
`Skip(reason)` when it does not apply to this app, and `StepFailed(message)`
(or lets a runner.CommandError through) when it failed. The pipeline
(deployments/pipeline.py) records all of it; steps never write state rows
themselves, except the snapshot step's Snapshot row.
"""

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from apps_registry.spec import Spec
from deployments import containers, enginerun, runner
from deployments.outcomes import Skip, StepFailed
from deployments.runner import host_env

__all__ = ["Context", "Skip", "StepFailed", "host_env"]


@dataclass
class Context:
    deployment_id: int
    public_id: str
    app_name: str
    spec: Spec
    ref: str
    workdir: Path
    app_dir: Path
    # "deploy", "rollback" or "restore" (see states.STEPS_BY_KIND).
    kind: str = "deploy"
    # Where the deploy step puts the app: the deployment's recorded runtime
    # ("docker" or "kubernetes"), fixed when it was queued.
    runtime: str = "docker"
    # A restore's Snapshot row.
    restore_snapshot: object = None
    # Set by steps as they learn them.
    commit_sha: str = ""
    # The commit's {"commit_subject", "commit_author", "commit_time"} (clone),
    # written with commit_sha.
    commit_context: dict = field(default_factory=dict)
    image: str = ""
    snapshot: object = None
    # The snapshot step's appdb.ensure_database, started ahead (snapshot.prepare_ahead).
    database_ready: object = None
    # Wired by the pipeline: output sink, cancel probe, pgid recorder, secrets.
    output: object = None
    cancel_reason: object = None
    record_pgid: object = None
    record_workdir: object = None
    redact: runner.Redactor = field(default_factory=runner.Redactor)
    timeout: float | None = None
    # Work a step leaves for after the deployment's final status is recorded
    # (defer()): (step name, callable), run by the pipeline in order.
    deferred: list = field(default_factory=list)
    # The step that is running, set by the pipeline.
    step: str = ""

    def log(self, text: str) -> None:
        """Append a line (or lines) to the current step's output."""
        if not text.endswith("\n"):
            text += "\n"
        if self.output:
            self.output(self.redact(text))

    def defer(self, work) -> None:
        """Run `work(log)` once the deployment's final status is recorded and
        its followers were told: for what need not hold up "deployed" (the
        previous container's retirement). It runs in a thread of the worker,
        which takes its next task meanwhile, and finishes before the worker
        process exits. `log(text)` appends to this step's output; what `work`
        raises is logged there and in the worker's log, and changes no status.
        """
        self.deferred.append((self.step, work))

    def base_env(self, **extra) -> dict[str, str]:
        return host_env(**extra)

    def app_env(self, **extra) -> dict[str, str]:
        """The app's own environment (infraspec `env`) plus Norn's NORN_* facts."""
        env = self.base_env(**self.spec.env)
        env.update(NORN_APP=self.app_name, NORN_COMMIT=self.commit_sha, NORN_DEPLOYMENT=self.public_id)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def run(self, argv, *, cwd=None, env=None, check=True, timeout=None, stdin_data=None, echo=True,
            output=True) -> runner.Result:
        """Run a command for this step, streaming its output into the step.

        With check=True a non-zero exit raises StepFailed naming the command
        and the tail of its output. output=False keeps the output out of the
        step and returns all of it in Result.text instead (for queries).
        """
        if echo:
            self.log("$ " + " ".join(str(a) for a in argv))
        result = runner.run(
            argv,
            cwd=cwd,
            env=env if env is not None else self.base_env(),
            timeout=timeout or self.timeout,
            on_output=self.output if output else None,
            should_cancel=self.cancel_reason,
            on_start=self.record_pgid,
            redact=self.redact,
            stdin_data=stdin_data,
            capture=not output,
        )
        if check and result.returncode != 0:
            raise StepFailed(
                f"{Path(str(argv[0])).name} exited with status {result.returncode}"
                + (f":\n{runner.tail_lines(result.tail, 10)}" if result.tail.strip() else "")
            )
        return result

    def run_in_container(self, purpose: str, command: str, *, env: dict[str, str], setting: str,
                         workspace: Path | None = None) -> runner.Result:
        """Run the infraspec's shell command `command` with `sh -c` in a
        throwaway container of ctx.image (deployments/containers.py),
        streaming its output into the step; StepFailed when it exits non-zero
        or the image has no /bin/sh (`setting` names the infraspec key)."""
        # One piece of output, so one write and one event, as the command starts.
        self.log(
            (f"Working directory {containers.WORKSPACE}: the checked-out tree, mounted read-write\n"
             if workspace else "")
            + f"$ sh -c {shlex.quote(command)}\n"
            f"  (in a throwaway container of {self.image} on the network {containers.network_name(self.app_name)})"
        )
        try:
            result = containers.run(
                lambda argv, timeout: self.run(argv, check=False, echo=False, timeout=timeout),
                name=f"norn-{self.app_name}-{purpose}-{self.public_id[:12]}",
                app_name=self.app_name,
                purpose=purpose,
                deployment=self.public_id,
                image=self.image,
                command=[command],
                env=env,
                timeout=self.timeout,
                workspace=str(workspace) if workspace else None,
                shell=True,
                engine=lambda name, body, timeout: enginerun.run(
                    name=name, body=body, timeout=timeout, on_output=self.output,
                    should_cancel=self.cancel_reason, redact=self.redact,
                ),
            )
        except containers.NoShell as exc:
            raise StepFailed(
                f"{exc}: {setting} is a shell command, run with /bin/sh -c in a container of the "
                "app's image, so the image needs /bin/sh (a distroless or FROM scratch image has none; "
                "add a shell, e.g. busybox, or build FROM an image that has one)"
            ) from None
        if result.returncode != 0:
            raise StepFailed(
                f"sh exited with status {result.returncode}"
                + (f":\n{runner.tail_lines(result.tail, 10)}" if result.tail.strip() else "")
            )
        return result

    @property
    def local_image(self) -> str:
        """The tag docker build gives: <app>:<sha>."""
        return f"{self.app_name}:{self.commit_sha}"

    @property
    def registry(self) -> str:
        return settings.NORN_REGISTRY_URL
