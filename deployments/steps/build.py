"""Build: `docker build` the checked-out tree into <app>:<sha>, then ship it.

With NORN_REGISTRY_URL the image is tagged and pushed there; otherwise, when
the deployment goes to Kubernetes (ctx.runtime) on a minikube cluster, it is
loaded into minikube. Skipped when the
infraspec has no build section (the image must then exist already).
"""

import shutil

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
    elif ctx.runtime == "kubernetes" and is_minikube():
        if not shutil.which("minikube"):
            raise StepFailed("the Kubernetes context is minikube, but the minikube command is not installed")
        ctx.run(["minikube", "image", "load", ctx.local_image], env=env)


def registry_image(ctx: Context) -> str:
    return f"{ctx.registry}/{ctx.app_name}:{ctx.commit_sha}"


def is_minikube() -> bool:
    """Whether the Kubernetes context Norn deploys to is a minikube cluster."""
    from deployments.runtimes.kubeclient import current_context_name

    return current_context_name() == "minikube"
