"""Norn's command-line exit codes (docs/cli.md): one per situation, the same
in every command. Nothing here imports Django: the CLI's fast path
(deployments/remote.py) exits with them before Django starts.
"""

# The exit codes, the same for the same situation in every command (docs/cli.md).
OK = 0
# It ran and did not succeed: a deployment failed, was cancelled or rolled
# back; an infraspec is invalid; a confirmation was declined; the target's
# state does not allow it (cancel of a finished deployment, undeploy during a deploy).
FAILED = 1
# Refused before anything happened: a usage error, an unknown or malformed
# app, deployment or snapshot, a deploy/rollback/restore request Norn refuses.
BAD_REQUEST = 2
# A service it needs could not be reached: Norn's database, the Docker
# engine or the Kubernetes API.
UNAVAILABLE = 3
# Ctrl-C (SIGINT), as a shell reports a program it ended.
INTERRUPTED = 130
# Whoever read stdout stopped reading (`| head`), as a shell reports a
# program that SIGPIPE ended.
BROKEN_PIPE = 141
