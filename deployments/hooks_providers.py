"""What each git host sends with a push webhook: how it signs it, where its
delivery id and event name are, and how its push payload reads
(docs/autodeploy.md). Pure functions over headers and parsed JSON."""

import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

ZERO_SHA = re.compile(r"^0{40}$")
FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


class BadPayload(Exception):
    """The body is not the push event it claims to be; the message names what is wrong."""


@dataclass(frozen=True)
class Provider:
    name: str
    # Request headers (as Django's META keys) in the order they are tried.
    signature_headers: tuple
    delivery_headers: tuple
    event_headers: tuple
    push_events: tuple
    # Events answered 200 without doing anything (a hook's test ping).
    ping_events: tuple = ()

    def header(self, request, keys):
        for key in keys:
            value = request.META.get(key)
            if value:
                return value.strip()
        return ""

    def signature(self, request):
        return self.header(request, self.signature_headers)

    def verify(self, body: bytes, given: str, secret: str) -> bool:
        """As the provider documents it, compared in constant time."""
        if self.name == "gitlab":
            # X-Gitlab-Token is the secret itself.
            return hmac.compare_digest(given.encode(), secret.encode())
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if self.name == "github":
            # X-Hub-Signature-256: "sha256=" + hex HMAC-SHA256 of the raw body.
            expected = "sha256=" + digest
        else:
            # X-Gitea-Signature / X-Forgejo-Signature: the hex digest alone.
            expected = digest
        return hmac.compare_digest(given.encode(), expected.encode())


PROVIDERS = {
    "github": Provider(
        "github",
        signature_headers=("HTTP_X_HUB_SIGNATURE_256",),
        delivery_headers=("HTTP_X_GITHUB_DELIVERY",),
        event_headers=("HTTP_X_GITHUB_EVENT",),
        push_events=("push",),
        ping_events=("ping",),
    ),
    "gitlab": Provider(
        "gitlab",
        signature_headers=("HTTP_X_GITLAB_TOKEN",),
        # X-Gitlab-Event-UUID names one event (the same on a retry);
        # Idempotency-Key (GitLab 17.4+) is the same on every retry too.
        delivery_headers=("HTTP_X_GITLAB_EVENT_UUID", "HTTP_IDEMPOTENCY_KEY", "HTTP_X_GITLAB_WEBHOOK_UUID"),
        event_headers=("HTTP_X_GITLAB_EVENT",),
        push_events=("Push Hook", "Tag Push Hook"),
    ),
    "gitea": Provider(
        "gitea",
        # Gitea and Forgejo sign the same way; Forgejo names its headers too.
        signature_headers=("HTTP_X_GITEA_SIGNATURE", "HTTP_X_FORGEJO_SIGNATURE"),
        delivery_headers=("HTTP_X_GITEA_DELIVERY", "HTTP_X_FORGEJO_DELIVERY", "HTTP_X_GITHUB_DELIVERY"),
        event_headers=("HTTP_X_GITEA_EVENT", "HTTP_X_FORGEJO_EVENT", "HTTP_X_GITHUB_EVENT"),
        push_events=("push",),
    ),
}


def normalize_repo_url(url: str) -> str:
    """One spelling per repository: "host/path", lower case, without scheme,
    user, port, trailing slash or ".git"; so https://GitHub.com/a/b.git,
    git@github.com:a/b and ssh://git@github.com:22/a/b/ are the same.
    A local repository (a path or file:// URL) is its path."""
    url = (url or "").strip()
    if not url:
        return ""
    if "://" in url:
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
        except ValueError:
            return ""
        path = parts.path
        if parts.scheme.lower() == "file":
            host = ""
    elif re.match(r"^[^/]+:", url) and not url.startswith("/"):
        # scp-like [user@]host:path
        host, _, path = url.partition(":")
        host = host.rpartition("@")[2]
    else:
        host, path = "", url
    path = path.strip("/")
    while path.endswith(".git") or path.endswith("/"):
        path = path.removesuffix(".git").rstrip("/")
    if host:
        return f"{host.lower()}/{path.lower()}"
    return "/" + path.lower()


def repository_urls(provider: str, payload: dict) -> list[str]:
    """Every URL the payload gives for its repository."""
    if provider == "gitlab":
        sources = [payload.get("project"), payload.get("repository")]
        keys = ("git_http_url", "git_ssh_url", "web_url", "http_url", "ssh_url", "url", "homepage")
    else:
        sources = [payload.get("repository")]
        keys = ("clone_url", "html_url", "ssh_url", "git_url", "url", "svn_url")
    urls = []
    for source in sources:
        if isinstance(source, dict):
            urls += [source[key] for key in keys if isinstance(source.get(key), str) and source[key]]
    if not urls:
        where = "project" if provider == "gitlab" else "repository"
        raise BadPayload(f"the payload has no {where} URL ({where}.{keys[0]} and the like)")
    return urls


def pusher_name(provider: str, payload: dict) -> str:
    if provider == "gitlab":
        candidates = [payload.get("user_username"), payload.get("user_name")]
    else:
        pusher = payload.get("pusher") if isinstance(payload.get("pusher"), dict) else {}
        sender = payload.get("sender") if isinstance(payload.get("sender"), dict) else {}
        candidates = [pusher.get("login"), pusher.get("username"), pusher.get("name"), sender.get("login")]
    return next((c for c in candidates if isinstance(c, str) and c.strip()), "").strip()[:150]


@dataclass
class PushEvent:
    ref: str
    after: str
    before: str
    pusher: str
    commits: list
    commits_total: int

    @property
    def branch(self):
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else ""

    @property
    def deleted(self):
        return bool(ZERO_SHA.match(self.after))


def push_event(provider: str, payload: dict, max_commits: int) -> PushEvent:
    """The push in a provider's payload; BadPayload names a missing or
    malformed field."""
    ref = payload.get("ref")
    if not isinstance(ref, str) or not ref.startswith("refs/"):
        raise BadPayload(f"ref must be a string like 'refs/heads/main'; got {_shown(ref)}")
    # GitLab's checkout_sha is the commit checked out (null when the branch
    # was deleted); after is the same otherwise.
    after = payload.get("after")
    if not isinstance(after, str) or not (FULL_SHA.match(after) or ZERO_SHA.match(after)):
        raise BadPayload(f"after must be a full commit SHA (40 hex digits); got {_shown(after)}")
    before = payload.get("before") if isinstance(payload.get("before"), str) else ""
    listed = payload.get("commits", [])
    if not isinstance(listed, list):
        raise BadPayload(f"commits must be a list; got {type(listed).__name__}")
    commits = []
    for commit in listed:
        if not isinstance(commit, dict) or not isinstance(commit.get("id"), str):
            raise BadPayload("each of commits must be an object with an id")
        message = commit.get("message") if isinstance(commit.get("message"), str) else ""
        commits.append({"sha": _clean(commit["id"])[:64], "subject": _clean(message.split("\n", 1)[0])[:200]})
    total = payload.get("total_commits_count")
    total = total if isinstance(total, int) and total >= len(commits) else len(commits)
    return PushEvent(ref=_clean(ref), after=after.lower(), before=_clean(before)[:64],
                     pusher=_clean(pusher_name(provider, payload)),
                     commits=commits[-max_commits:], commits_total=total)


def _clean(text):
    """PostgreSQL text cannot hold NUL; JSON strings can."""
    return text.replace("\x00", "")


def _shown(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
