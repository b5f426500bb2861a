"""Clone: get the requested commit's source into the deployment's work directory.

`git clone --depth 1 --branch <branch>`, then the requested SHA if one was
asked for. Credentials reach git only through its environment
(deployments/gitauth.py): an HTTPS token via GIT_ASKPASS, and only for the
host it is bound to, an SSH key via GIT_SSH_COMMAND. If the clone itself
fails and the app has a local directory, that is copied instead (the output
says so). Apps without a repo are always copied.
"""

import datetime
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from apps_registry.infraspec import HEX_RE, redact_url
from apps_registry.spec import Repo
from deployments import gitauth, runner
from deployments.steps import Context, StepFailed

FULL_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def is_sha(ref: str) -> bool:
    return bool(HEX_RE.match(ref))


def run(ctx: Context) -> None:
    spec_repo = ctx.spec.repo
    source = ctx.workdir / "src"
    if not spec_repo:
        ctx.log(f"No repo in infraspec.yaml: copying {ctx.app_dir}")
        copy_local(ctx, source)
        return
    try:
        clone(ctx, spec_repo, source)
    except CloneFailed as exc:
        if not ctx.app_dir.is_dir():
            raise StepFailed(str(exc)) from None
        ctx.log(f"Clone failed ({exc}); falling back to copying the local directory {ctx.app_dir}")
        shutil.rmtree(source, ignore_errors=True)
        copy_local(ctx, source)


class CloneFailed(Exception):
    """The clone itself failed: the only case where the local copy is used."""


def clone(ctx: Context, spec_repo: Repo, source: Path) -> None:
    url = spec_repo.url
    branch = spec_repo.branch
    ref = ctx.ref
    if ref != "HEAD" and not is_sha(ref):
        branch = ref
    env = gitauth.git_env(ctx.workdir, url)
    token = env.get("NORN_GIT_PASSWORD")
    if token and token not in ctx.redact.secrets:
        # Whatever git prints is masked with the token it was handed, even
        # when the context was made without it.
        ctx.redact = runner.Redactor([*ctx.redact.secrets, token])
    shown = redact_url(url)
    ctx.log(f"Cloning {shown} (branch {branch})")
    result = ctx.run(
        ["git", "clone", "--depth", "1", "--branch", branch, "--", url, source],
        env=env, check=False,
    )
    if result.returncode != 0:
        raise CloneFailed(f"git clone of {shown} branch {branch} exited with status {result.returncode}")
    if is_sha(ref):
        checkout_sha(ctx, ref, source, env, shown)
    sha, ctx.commit_context = read_head(source, env)
    ctx.commit_sha = sha or git_head(ctx, source, env)  # which says why HEAD has no SHA
    ctx.log(f"Checked out {ctx.commit_sha}" + _described(ctx.commit_context))


def checkout_sha(ctx: Context, ref: str, source: Path, env: dict[str, str], shown: str) -> None:
    """Fetch and check out exactly the requested commit, never the branch tip."""
    if FULL_SHA_RE.match(ref):
        fetched = ctx.run(["git", "-C", source, "fetch", "--depth", "1", "origin", ref], env=env, check=False)
        target = ref
    else:
        # An abbreviated SHA cannot be fetched by name: fetch all branches'
        # history and let git resolve it (and refuse if it is ambiguous).
        fetched = ctx.run(
            ["git", "-C", source, "fetch", "--unshallow", "origin", "+refs/heads/*:refs/remotes/origin/*"],
            env=env, check=False,
        )
        target = None
        if fetched.returncode == 0:
            resolved = ctx.run(
                ["git", "-C", source, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
                env=env, check=False, echo=False,
            )
            target = resolved.tail.strip() if resolved.returncode == 0 else None
    if fetched.returncode != 0 or not target:
        raise StepFailed(f"commit {ref} does not exist in {shown} (or is ambiguous)")
    ctx.run(["git", "-C", source, "checkout", "--quiet", "--detach", target], env=env)


def git_head(ctx: Context, source: Path, env: dict[str, str]) -> str:
    result = ctx.run(["git", "-C", source, "rev-parse", "HEAD"], env=env, echo=False)
    sha = result.tail.strip().splitlines()[-1]
    if not FULL_SHA_RE.match(sha):
        raise StepFailed(f"could not resolve HEAD in {source}: {sha!r}")
    return sha


# One call reads the commit's SHA, subject, author name and committer date,
# NUL-separated: no subject or name can hold a NUL, any other byte can.
COMMIT_FORMAT = "%H%x00%s%x00%an%x00%cI"
# More than a subject and a name need: what a commit message could make
# huge is cut here, before it is decoded.
COMMIT_READ_LIMIT = 8192
SUBJECT_MAX, AUTHOR_MAX = 300, 200  # Deployment.commit_subject, commit_author
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def commit_context(source: Path, env: dict[str, str]) -> dict:
    """{"commit_subject", "commit_author", "commit_time"} of HEAD in `source`
    (read_head)."""
    return read_head(source, env)[1]


def read_head(source: Path, env: dict[str, str]) -> tuple[str | None, dict]:
    """The SHA of HEAD in `source` and its {"commit_subject", "commit_author",
    "commit_time"}, for Deployment's columns, from one git call; (None, {})
    when git cannot say (the context never fails the step: the SHA is what
    the deployment needs, and git_head says why there is none). The values
    come from the repository, so they are bounded, invalid UTF-8 is replaced
    and control characters (a terminal's escape sequences) become spaces."""
    argv = ["git", "-C", str(source), "show", "-s", "--no-show-signature", f"--format={COMMIT_FORMAT}", "HEAD"]
    try:
        with subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL) as proc:
            raw = proc.stdout.read(COMMIT_READ_LIMIT)
            proc.kill()  # whatever is left unread (a subject past the limit)
            proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None, {}
    parts = raw.decode("utf-8", "replace").split("\x00")
    if len(parts) != 4 or not FULL_SHA_RE.match(parts[0]):
        return None, {}
    sha = parts[0]
    subject, author, when = (_CONTROL.sub(" ", part).strip() for part in parts[1:])
    try:
        moment = datetime.datetime.fromisoformat(when)
    except ValueError:
        moment = None
    return sha, {
        "commit_subject": _bounded(subject, SUBJECT_MAX),
        "commit_author": _bounded(author, AUTHOR_MAX),
        "commit_time": moment,
    }


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _described(context: dict) -> str:
    """ ": <subject> (<author>)" for the step's output, or ""."""
    if not context.get("commit_subject"):
        return ""
    author = f" ({context['commit_author']})" if context.get("commit_author") else ""
    return f": {context['commit_subject']}{author}"


def copy_local(ctx: Context, source: Path) -> None:
    if not ctx.app_dir.is_dir():
        raise StepFailed(f"the app directory {ctx.app_dir} does not exist")
    shutil.copytree(ctx.app_dir, source, symlinks=True)
    if (source / ".git").exists():
        env = ctx.base_env(GIT_CONFIG_NOSYSTEM="1")
        # The copied checkout may be owned by another user: git's
        # safe.directory check would refuse to read it.
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="safe.directory", GIT_CONFIG_VALUE_0="*")
        sha, ctx.commit_context = read_head(source, env)
        sha = sha or git_head(ctx, source, env)
        if is_sha(ctx.ref) and not sha.startswith(ctx.ref):
            raise StepFailed(
                f"commit {ctx.ref} was requested, but the local copy in {ctx.app_dir} is at {sha}"
            )
        ctx.commit_sha = sha
    else:
        if ctx.ref != "HEAD":
            raise StepFailed(f"{ctx.ref} was requested, but the local copy in {ctx.app_dir} is not a git checkout")
        ctx.commit_sha = tree_digest(source)
        ctx.log(f"{ctx.app_dir} is not a git checkout; its content digest {ctx.commit_sha} tags the image")
    ctx.log(f"Copied {ctx.app_dir} at {ctx.commit_sha}")


def tree_digest(root: Path) -> str:
    """A 40-hex digest of a directory's files: same content, same tag."""
    digest = hashlib.sha1()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            if path.is_symlink():
                digest.update(os.readlink(path).encode())
            else:
                digest.update(path.read_bytes())
    return digest.hexdigest()
