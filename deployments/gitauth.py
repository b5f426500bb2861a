"""Git's environment for one repository URL: which credential may go with it.

A token is bound to a host (settings.NORN_GIT_CREDENTIALS) and handed to git,
through GIT_ASKPASS and never argv, only for an https:// URL of exactly that
host[:port]. http://, ssh, git://, file:// and unknown hosts get no token.
"""

import shlex
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.conf import settings

from deployments.runner import host_env

# Transports git may use for Norn's clones: no ext::, fd:: or other helpers
# that run commands, even if a bad URL got this far.
ALLOWED_PROTOCOLS = "https:http:ssh:git:file"
DEFAULT_USERNAME = "x-access-token"

# git asks "Username for 'https://HOST': " and "Password for
# 'https://USER@HOST': ". Answering only for the token's own host means a URL
# rewritten by a user's git config (url.*.insteadOf) or redirected elsewhere
# gets no answer, even if git asks.
ASKPASS_SCRIPT = """#!/bin/sh
# Answers git's credential prompts from the environment; holds no secret.
case "$1" in
  "Username for 'https://$NORN_GIT_HOST': ") printf '%s\\n' "$NORN_GIT_USERNAME" ;;
  "Password for 'https://$NORN_GIT_USERNAME@$NORN_GIT_HOST': ") printf '%s\\n' "$NORN_GIT_PASSWORD" ;;
  *) exit 1 ;;
esac
"""


def host_key(url: str) -> str | None:
    """`host` or `host:port` (443 dropped) of an https:// URL; None for any other."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() != "https" or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6, as NORN_GIT_CREDENTIALS writes it
    return host if port in (None, 443) else f"{host}:{port}"


def token_for(url: str) -> str | None:
    """The token that may go with `url`, or None."""
    key = host_key(url)
    return settings.NORN_GIT_CREDENTIALS.get(key) if key else None


def secrets() -> list[str]:
    """Every git token Norn holds, for redactors."""
    return list(settings.NORN_GIT_CREDENTIALS.values())


def git_config(**entries: str) -> dict[str, str]:
    """git configuration through GIT_CONFIG_* variables: never argv, and read
    after every config file, so it overrides them."""
    env = {"GIT_CONFIG_COUNT": str(len(entries))}
    for n, (key, value) in enumerate(entries.items()):
        env[f"GIT_CONFIG_KEY_{n}"] = key
        env[f"GIT_CONFIG_VALUE_{n}"] = value
    return env


def git_env(workdir: Path, url: str) -> dict[str, str]:
    """git's environment for `url`, with the credentials it may have; helper
    files go in `workdir`."""
    env = host_env(
        GIT_TERMINAL_PROMPT="0",
        GIT_ALLOW_PROTOCOL=ALLOWED_PROTOCOLS,
        GIT_CONFIG_NOSYSTEM="1",
    )
    config = {
        # An empty value clears the helpers of the user's git config, so no
        # stored password answers for a host Norn holds no token for.
        "credential.helper": "",
        "credential.useHttpPath": "false",
    }
    if settings.NORN_GIT_CA_FILE:
        env["GIT_SSL_CAINFO"] = str(settings.NORN_GIT_CA_FILE)
    token = token_for(url)
    if token:
        parts = urlsplit(url)
        askpass = workdir / "askpass.sh"
        askpass.write_text(ASKPASS_SCRIPT)
        askpass.chmod(stat.S_IRWXU)
        env.update(
            GIT_ASKPASS=str(askpass),
            NORN_GIT_HOST=parts.netloc.rpartition("@")[2],  # as git writes it in its prompt
            NORN_GIT_USERNAME=unquote(parts.username) if parts.username else DEFAULT_USERNAME,
            NORN_GIT_PASSWORD=token,
        )
        # A redirect, even to the same host's other path, is not followed
        # with a token in hand: it could lead the credential elsewhere.
        config["http.followRedirects"] = "false"
    env.update(git_config(**config))
    if settings.NORN_GIT_SSH_KEY:
        known_hosts = Path(settings.NORN_GIT_KNOWN_HOSTS)
        known_hosts.parent.mkdir(parents=True, exist_ok=True)
        # GIT_SSH_COMMAND is read by a shell: quote the (operator-set) paths.
        env["GIT_SSH_COMMAND"] = " ".join(
            [
                "ssh",
                "-i", shlex.quote(str(settings.NORN_GIT_SSH_KEY)),
                "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=accept-new",
                "-o", "UserKnownHostsFile=" + shlex.quote(str(known_hosts)),
            ]
        )
    return env
