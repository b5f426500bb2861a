"""Asking for a deployment: validate everything, then queue it.

Every check happens here, before any command runs: an unknown app, an
invalid infraspec, or a ref that is neither HEAD, a valid branch name nor a
hex SHA is refused with a message that says why, and nothing is created.
"""

import logging
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.db import transaction

from apps_registry import discovery
from apps_registry.infraspec import HEX_RE, branch_name_problem, redact_url
from apps_registry.models import App
from deployments import gitauth, queue, runner, transitions, workdirs

log = logging.getLogger(__name__)
VERIFY_TIMEOUT = 60


class DeployRequestError(Exception):
    pass


def validate_ref(ref):
    if ref == "HEAD" or HEX_RE.match(ref):
        return ref
    if len(ref) > 255:
        raise DeployRequestError(f"ref is {len(ref)} characters long; at most 255")
    problem = branch_name_problem(ref)
    if problem:
        raise DeployRequestError(
            f"{ref!r} is not a valid git ref: it {problem}. Use HEAD, a branch name "
            "or a commit SHA (4 to 40 hex digits)"
        )
    return ref


def find_app(name, allow_invalid=False):
    discovery.ensure_fresh()
    try:
        app = App.objects.get(name=name)
    except App.DoesNotExist:
        known = ", ".join(App.objects.exclude(status=App.Status.MISSING).values_list("name", flat=True))
        raise DeployRequestError(
            f"unknown app {name!r}; known apps: {known or 'none'} (apps are directories "
            f"with an infraspec.yaml in NORN_APPS_DIR={settings.NORN_APPS_DIR})"
        ) from None
    if app.status == App.Status.MISSING:
        raise DeployRequestError(f"app {name!r} is missing: {app.directory}/infraspec.yaml is gone")
    if app.status == App.Status.INVALID and not allow_invalid:
        raise DeployRequestError(
            f"app {name!r} has an invalid infraspec.yaml; fix it first:\n  " + "\n  ".join(app.errors)
        )
    return app


def request_deployment(app_name, ref="HEAD", *, user=None, name="", via="cli"):
    """Validate and queue a deployment; returns it. Raises DeployRequestError."""
    ref = validate_ref((ref or "HEAD").strip())
    app = find_app(app_name)
    spec = app.infraspec
    if not spec.repo and ref != "HEAD" and not HEX_RE.match(ref):
        raise DeployRequestError(
            f"app {app.name!r} has no repo in infraspec.yaml, so there is no branch {ref!r}; "
            "deploy HEAD (its directory as it is)"
        )
    if spec.repo and ref != "HEAD":
        verify_ref_exists(spec.repo.url, ref)
    runtime = "cron" if spec.is_cron else settings.NORN_RUNTIME
    with transaction.atomic():  # the deployment and its task: one commit
        deployment = transitions.create(app, ref, user=user, name=name, via=via, runtime=runtime)
        queue.enqueue(deployment.pk)
    return deployment


def verify_ref_exists(url, ref):
    """Refuse a branch or commit the repository does not have, before queueing.

    It runs while the user waits, so with as few git processes as it can: a
    branch is one `ls-remote` of that branch; a full SHA that is a branch or
    tag tip (the usual case) one `ls-remote`; any other SHA a clone of commit
    objects only (--filter=tree:0) and a `rev-parse`. When the remote cannot
    be reached, the request goes ahead: the clone step retries and can fall
    back to the local copy, saying so.
    """
    root = workdirs.make_root()
    # mkdtemp makes it 0700: it may hold the askpass script.
    scratch = Path(tempfile.mkdtemp(prefix=".verify-", dir=root))
    redact = runner.Redactor(gitauth.secrets())
    try:
        # The same credential rules as the clone step: a token only for its
        # own host, over https.
        env = gitauth.git_env(scratch, url)
        shown = redact_url(url)

        def git(*args):
            return runner.run(["git", *args], env=env, timeout=VERIFY_TIMEOUT, redact=redact, capture=True)

        if not HEX_RE.match(ref):
            listed = git("ls-remote", "--heads", "--exit-code", "--", url, f"refs/heads/{ref}")
            if listed.returncode == 2:
                raise DeployRequestError(f"branch {ref!r} does not exist in {shown}")
            if listed.returncode != 0:
                log.warning("could not list branches of %s: %s", shown, listed.tail.strip()[-300:])
            return
        if len(ref) == 40:
            listed = git("ls-remote", "--", url)
            if listed.returncode == 0 and ref in {line.split("\t", 1)[0] for line in listed.text.splitlines()}:
                return
        repo = str(scratch / "probe.git")
        fetched = git("clone", "--quiet", "--bare", "--no-tags", "--filter=tree:0", "--", url, repo)
        if fetched.returncode != 0:
            log.warning("could not check %s in %s: %s", ref, shown, fetched.tail.strip()[-300:])
            return
        found = git("-C", repo, "rev-parse", "--quiet", "--verify", "--end-of-options", f"{ref}^{{commit}}")
        if found.returncode != 0:
            raise DeployRequestError(f"commit {ref} does not exist in {shown} (or the abbreviation is ambiguous)")
    except runner.CommandError as exc:
        log.warning("could not check %s in %s: %s", ref, redact_url(url), exc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def request_rollback(app_name, to=None, *, user=None, name="", via="cli"):
    """Queue a rollback of the app to `to` (a Deployment) or, by default, to
    its previous successfully deployed image. Raises DeployRequestError."""
    from deployments import rollback

    app = find_app(app_name, allow_invalid=True)
    try:
        target, replaces = rollback.choose(app, to)
    except rollback.NothingToRollBackTo as exc:
        raise DeployRequestError(f"cannot roll back {app.name}: {exc}") from None
    with transaction.atomic():
        deployment = rollback.queue(app, target, replaces, user=user, name=name, via=via)
        queue.enqueue(deployment.pk)
    return deployment


def request_restore(snapshot, *, user=None, name="", via="cli"):
    """Queue a restore of `snapshot` into its app's database. Refuses at once
    (touching nothing) when the file is missing or does not match its checksum."""
    from deployments.steps.verify import file_problem

    if snapshot.pruned_at is not None:
        raise DeployRequestError(f"{snapshot.pruned_message}; nothing was changed")
    problem = file_problem(snapshot)
    if problem:
        raise DeployRequestError(f"cannot restore snapshot {snapshot.pk}: {problem}; nothing was changed")
    with transaction.atomic():
        deployment = transitions.create(
            snapshot.app, "HEAD", user=user, name=name, via=via, runtime="postgres",
            kind="restore", snapshot=snapshot,
        )
        queue.enqueue(deployment.pk)
    return deployment

