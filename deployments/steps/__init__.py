"""The seven pipeline steps, one module each, and the context they share.

A step module has `run(ctx)`. It returns normally when it succeeded, raises
`Skip(reason)` when it does not apply to this app, and `StepFailed(message)`
(or lets a runner.CommandError through) when it failed. The pipeline
(deployments/pipeline.py) records all of it; steps never write state rows
themselves, except the snapshot step's Snapshot row.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from deployments import runner


class Skip(Exception):
    """The step does not apply; the argument is the reason shown to users."""


class StepFailed(Exception):
    """The step failed; the argument is the error shown to users."""


# Variables passed through to every command; nothing else of Norn's own
# environment (which holds NORN_GIT_TOKEN and the like) reaches a step.
PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "DOCKER_HOST", "DOCKER_CONFIG", "KUBECONFIG", "MINIKUBE_HOME")


def host_env(**extra):
    """The environment every command starts from: PASSTHROUGH_ENV plus `extra`."""
    env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({k: str(v) for k, v in extra.items()})
    return env


@dataclass
class Context:
    deployment_id: int
    public_id: str
    app_name: str
    spec: dict
    ref: str
    workdir: Path
    app_dir: Path
    # "deploy", "rollback" or "restore" (see states.STEPS_BY_KIND).
    kind: str = "deploy"
    # A restore's Snapshot row.
    restore_snapshot: object = None
    # Set by steps as they learn them.
    commit_sha: str = ""
    image: str = ""
    snapshot: object = None
    # Wired by the pipeline: output sink, cancel probe, pgid recorder, secrets.
    output: object = None
    cancel_reason: object = None
    record_pgid: object = None
    redact: runner.Redactor = field(default_factory=runner.Redactor)
    timeout: float | None = None

    def log(self, text):
        """Append a line (or lines) to the current step's output."""
        if not text.endswith("\n"):
            text += "\n"
        if self.output:
            self.output(self.redact(text))

    def base_env(self, **extra):
        return host_env(**extra)

    def app_env(self, **extra):
        """The app's own environment (infraspec `env`) plus Norn's NORN_* facts."""
        env = self.base_env(**self.spec.get("env", {}))
        env.update(NORN_APP=self.app_name, NORN_COMMIT=self.commit_sha, NORN_DEPLOYMENT=self.public_id)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def run(self, argv, *, cwd=None, env=None, check=True, timeout=None, stdin_data=None, echo=True, output=True):
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

    @property
    def local_image(self):
        """The tag docker build gives: <app>:<sha>."""
        return f"{self.app_name}:{self.commit_sha}"

    @property
    def registry(self):
        return settings.NORN_REGISTRY_URL
