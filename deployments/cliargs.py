"""The arguments of the commands that follow a deployment, defined once for
the full commands (deployments/management/commands/) and the fast path
(deployments/remote.py), which parses them without Django.
"""

import argparse

HELP = {
    "deploy": (
        "Deploy an app at a commit SHA, a branch or HEAD (the default), and follow its steps "
        "live from the Norn server at NORN_URL (with NORN_API_TOKEN), else from the database. "
        "Exits 0 when deployed, 1 when not, 2 for a bad request."
    ),
    "follow": (
        "Print a deployment's steps from the start and follow it until it ends, live from the "
        "Norn server at NORN_URL (with NORN_API_TOKEN), else from the database. "
        "Exits 0 when it deployed, 1 when it did not, 2 for an unknown id."
    ),
}


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """The command's own arguments; the full command's parser gets the same."""
    if command == "deploy":
        parser.add_argument("app")
        parser.add_argument("ref", nargs="?", default="HEAD", help="Commit SHA (full or abbreviated), branch, or HEAD.")
        parser.add_argument("--no-wait", action="store_true", help="Queue it, print its id and return.")
    else:
        parser.add_argument("deployment", help="Deployment id (the UUID, or its first 8+ characters).")
    add_follow_arguments(parser)


def add_follow_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every command that follows a deployment."""
    parser.add_argument("--json", action="store_true", help="Print one JSON event per line.")
    parser.add_argument(
        "--db", action="store_true",
        help="Follow by reading the database instead of the Norn server's live stream.",
    )
