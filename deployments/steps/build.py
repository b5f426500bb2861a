"""Build: `docker build` the checked-out tree into <app>:<sha>, then ship it.

With NORN_REGISTRY_URL the image is tagged and pushed there; otherwise, when
the deployment goes to Kubernetes (ctx.runtime), it is loaded into the local
cluster the way that cluster needs (minikube, kind, k3d: runtimes/kubeimages.py),
and any other cluster fails the step before anything is built. Skipped when
the infraspec has no build section (the image must then exist already).
"""

import shutil

from deployments.runtimes import kubeclient, kubeimages
from deployments.steps import Context, Skip, StepFailed


def run(ctx: Context) -> None:
    build = ctx.spec.build
    source = ctx.workdir / "src"
    if build is None:
        ctx.image = registry_image(ctx) if ctx.registry else ctx.local_image
        raise Skip("no build section in infraspec.yaml")
    dockerfile = source / build.dockerfile
    if not dockerfile.is_file():
        raise StepFailed(f"{build.dockerfile} (build.dockerfile) does not exist in the repository at {ctx.commit_sha[:12]}")
    loader = None
    if ctx.runtime == "kubernetes" and not ctx.registry:
        # Decided before the build: a cluster that could never pull the
        # image should not cost a whole build to find out, nor should a
        # kubeconfig that cannot be used at all (its own error says why).
        try:
            kubeclient.load_configuration()
        except kubeclient.KubernetesError as exc:
            raise StepFailed(str(exc)) from None
        target = kubeimages.current_target()
        try:
            loader = kubeimages.loader_for(ctx.local_image, target)
        except kubeimages.NoImageLoader as exc:
            raise StepFailed(str(exc)) from None
        if not shutil.which(loader.tool):
            raise StepFailed(
                f"the Kubernetes cluster is a {loader.tool} cluster ({target.describe()}), "
                f"but the {loader.tool} command is not installed on Norn's PATH, so the image cannot be loaded "
                "into it. Install it, or set NORN_REGISTRY_URL to a registry the cluster pulls from."
            )
    env = ctx.base_env(DOCKER_BUILDKIT="0")
    ctx.run(
        [
            "docker", "build",
            # A failed RUN leaves no stopped container behind.
            "--force-rm",
            "-f", dockerfile,
            "-t", ctx.local_image,
            "--label", f"norn.app={ctx.app_name}",
            "--label", f"norn.commit={ctx.commit_sha}",
            source,
        ],
        env=env,
    )
    ctx.image = ctx.local_image
    if ctx.registry:
        remote = registry_image(ctx)
        ctx.run(["docker", "tag", ctx.local_image, remote], env=env)
        ctx.run(["docker", "push", remote], env=env)
        ctx.image = remote
    elif loader is not None:
        ctx.run(loader.argv, env=env)


def registry_image(ctx: Context) -> str:
    return f"{ctx.registry}/{ctx.app_name}:{ctx.commit_sha}"

