"""Step contexts for tests that run one step or runtime on its own."""

import uuid

from apps_registry import infraspec
from apps_registry.spec import Spec
from deployments import runner
from deployments.steps import Context


def parse_spec(text: str) -> Spec:
    """The typed infraspec from YAML text; fails the test if invalid."""
    result = infraspec.parse(text, "infraspec.yaml")
    assert result.ok, [str(e) for e in result.errors]
    return result.spec


def step_context(spec, *, workdir=None, app_dir=None, image="", ref="HEAD", commit_sha="",
                 deployment_id=1, public_id=None, timeout=30, cancel_reason=None, secrets=(), runtime="docker"):
    """A Context whose output is collected: ctx.text() and ctx.lines() read it.

    `spec` is a Spec, or a normalized spec dict (as App.spec stores it)."""
    if not isinstance(spec, Spec):
        spec = Spec.from_dict(spec)
    output = []
    ctx = Context(
        deployment_id=deployment_id,
        public_id=public_id or str(uuid.uuid4()),
        app_name=spec.app,
        spec=spec,
        ref=ref,
        workdir=workdir,
        app_dir=app_dir,
        commit_sha=commit_sha,
        image=image,
        output=output.append,
        cancel_reason=cancel_reason or (lambda: None),
        redact=runner.Redactor(secrets),
        timeout=timeout,
        runtime=runtime,
    )
    ctx.text = lambda: "".join(output)
    ctx.lines = lambda: ctx.text().splitlines()
    return ctx


def run_deferred(ctx):
    """Run the work the step left with ctx.defer(), in order, as the worker
    does once the deployment ended: what it logs joins the step's output."""
    while ctx.deferred:
        _, work = ctx.deferred.pop(0)
        work(ctx.log)
