"""The command line's fast path: `manage.py deploy` and `follow` without Django.

Starting Django costs a `manage.py` command ~0.5 s before it does anything,
and a deploy waits for it (issue 13). When a Norn server is there to ask
(NORN_URL, with NORN_API_TOKEN), these two commands need nothing of Django:
the server queues the deployment (deployments/api.py) and streams its events
(docs/live.md). manage.py hands them here first; everything else, and any
case this path does not cover, goes to the full command, which gives the
same output and exit codes (docs/cli.md):

- no NORN_API_TOKEN, or DJANGO_SETTINGS_MODULE / DJANGO_COLORS set;
- `--db`, Django's own options (`--settings`, `--traceback`, ...) or a
  usage error (the full command's parser says what is wrong);
- a server that cannot be reached, refuses the token, or does not know
  the API (an older Norn) before anything was queued.

A server that goes away while a deployment is followed is followed on from
the database, as the full command does. Nothing here imports Django until
then.
"""

import argparse
import getpass
import json
import os
import sys
from urllib.parse import quote, urlsplit, urlunsplit

from deployments import cliargs, stream, wire
from norn_project.exitcodes import BAD_REQUEST, BROKEN_PIPE, FAILED, INTERRUPTED, OK, UNAVAILABLE

COMMANDS = ("deploy", "follow")
# Queueing checks the ref against the repository (up to a minute: requests.py).
REQUEST_TIMEOUT = 90.0
# After this long with nothing but "queued", the follower asks why (as the
# full command does).
IDLE_WARNING = 5.0
ANSI = {stream.SUCCESS: "\x1b[32;1m", stream.WARNING: "\x1b[33;1m", stream.ERROR: "\x1b[31;1m"}


class _FullCommand(Exception):
    """This invocation is one for the full command (see the module's docstring)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _FullCommand(message)


def _parser(command: str) -> _Parser:
    parser = _Parser(
        prog=f"manage.py {command}", description=cliargs.HELP[command], add_help=True,
        epilog="Django's options (--settings, --pythonpath, --traceback, --skip-checks) "
               "are taken too, as by every manage.py command.",
    )
    cliargs.add_arguments(command, parser)
    parser.add_argument(
        "-v", "--verbosity", default=1, type=int, choices=[0, 1, 2, 3],
        help="Verbosity level; 0=minimal output, 1=normal output, 2=verbose output, 3=very verbose output",
    )
    parser.add_argument("--no-color", action="store_true", help="Don't colorize the command output.")
    parser.add_argument("--force-color", action="store_true", help="Force colorization of the command output.")
    return parser


def run(argv: list[str]) -> int | None:
    """Run `manage.py <argv[1:]>` here if this path can: its exit code, else None."""
    if len(argv) < 2 or argv[1] not in COMMANDS:
        return None
    env = os.environ
    if env.get("DJANGO_SETTINGS_MODULE", "norn_project.settings") != "norn_project.settings" or env.get("DJANGO_COLORS"):
        return None
    try:
        args = _parser(argv[1]).parse_args(argv[2:])
    except _FullCommand:
        return None
    token = env.get("NORN_API_TOKEN", "")
    base_url = env.get("NORN_URL") or stream.DEFAULT_URL
    if args.db or not token or urlsplit(base_url).scheme not in ("http", "https", "ws", "wss"):
        return None
    return _Session(args, base_url, token).run(argv[1])


class _Session:
    def __init__(self, args: argparse.Namespace, base_url: str, token: str) -> None:
        self.args = args
        self.base_url = base_url
        self.token = token
        self.where = stream.display_url(base_url)
        self.colour = not args.no_color and (args.force_color or sys.stdout.isatty())
        self.public_id = None
        self.last = 0
        self.last_kind = None
        self.warned_idle = False
        self.progress = stream.Progress(in_place=not args.json and stream.redraws(sys.stdout))

    def run(self, command: str) -> int | None:
        try:
            if command == "deploy":
                found = self._request("POST", "/api/deployments", {
                    "app": self.args.app, "ref": self.args.ref, "name": _login_name(),
                })
                if found is None:
                    return None
                self.public_id = found["id"]
                if self.args.no_wait:
                    self._out(found["id"])
                    return OK
                if not self.args.json:
                    self._out(f"Deploying {self.args.app} at {self.args.ref} (deployment {found['id']})")
            else:
                found = self._request("GET", "/api/deployments/" + quote(self.args.deployment.strip(), safe=""), query="events=1")
                if found is None:
                    return None
                self.public_id = found["id"]
                if not self.args.json:
                    self._out(f"Following {found['app']} at {found['ref']} (deployment {found['id']}, {found['status']})")
                    commit = stream.commit_line(found.get("commit_sha"), found.get("commit_subject", ""),
                                                found.get("commit_author", ""))
                    if commit:
                        self._out(commit)
                if "events" in found:
                    # Ended: its whole record came with the answer.
                    return self._print_ended(found["events"])
            return self._follow()
        except _Refused as exc:
            self._err(f"CommandError: {exc}", stream.ERROR)
            return exc.code
        except KeyboardInterrupt:
            if self.public_id:
                self._err(f"\nStopped following; the deployment goes on (cancel it with: manage.py cancel {self.public_id})")
            else:
                self._err("\ninterrupted")
            return INTERRUPTED
        except BrokenPipeError:
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except OSError:
                pass
            return BROKEN_PIPE

    def _request(self, method: str, path: str, body: dict | None = None, query: str = "") -> dict | None:
        """The API's answer; None when the full command should do it instead."""
        parts = urlsplit(self.base_url)
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        url = urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, query, ""))
        headers = {"Authorization": f"Token {self.token}", "Accept": "application/json"}
        data = b""
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        try:
            answer = wire.request(url, method, headers, data, REQUEST_TIMEOUT)
        except wire.NoAnswer as exc:
            if method == "POST":
                # It may have been queued: doing it again could deploy twice.
                raise _Refused(
                    UNAVAILABLE,
                    f"the Norn server at {self.where} gave no answer ({exc}); "
                    "the deployment may have been queued: see manage.py deployments",
                ) from None
            return None
        except OSError:
            return None  # not reachable, nothing sent: the full command does it itself
        try:
            content = json.loads(answer.body)
        except ValueError:
            content = None
        if not isinstance(content, dict):
            return None  # not Norn's API (an older server, a proxy's page)
        if answer.status in (200, 201) and "id" in content:
            return content
        if answer.status in (400, 404, 413) and "error" in content:
            raise _Refused(BAD_REQUEST, str(content["error"]))
        return None  # 401/403/5xx: the full command has its own way and says why

    def _follow(self) -> int:
        live = stream.LiveStream(
            self.public_id, base_url=self.base_url, token=self.token, idle_callback=self._idle,
            info=(lambda text: self._err(text)) if self.args.verbosity >= 2 else None,
        )
        try:
            for event in live:
                self.last, self.last_kind = event.seq, event.kind
                self._show(event)
        except stream.Unavailable as exc:
            self._err(f"{exc}: following from the database", stream.WARNING)
            return self._from_database()
        return OK if self.last_kind == "deploy.completed" else FAILED

    def _print_ended(self, events: list[dict]) -> int:
        for item in events:
            event = stream.StreamedEvent(item["seq"], item["event"], item["payload"])
            self.last, self.last_kind = event.seq, event.kind
            self._show(event)
        return OK if self.last_kind == "deploy.completed" else FAILED

    def _from_database(self) -> int:
        """Go on where the stream stopped, as the full command does."""
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "norn_project.settings")
        import django
        from django.core.exceptions import ImproperlyConfigured

        try:
            django.setup()
        except ImproperlyConfigured as exc:  # as manage.py says it
            self._err(f"Norn is misconfigured: {exc}")
            return BAD_REQUEST
        from deployments.cli import continue_from_database

        return continue_from_database(
            self.public_id, after=self.last, as_json=self.args.json, verbosity=self.args.verbosity,
            no_color=self.args.no_color, force_color=self.args.force_color,
        )

    def _idle(self, idle_for: float) -> None:
        waiting = self.last_kind in (None, "deploy.queued", "deploy.retargeted")  # nothing started yet
        if self.warned_idle or self.args.json or idle_for <= IDLE_WARNING or not waiting:
            return
        self.warned_idle = True
        try:
            found = self._request("GET", f"/api/deployments/{self.public_id}")
        except _Refused:
            found = None
        if found and found["status"] == "queued":
            self.progress.moved()
            self._out(stream.still_queued(found["ahead"]), stream.WARNING)

    def _show(self, event: stream.StreamedEvent) -> None:
        if self.args.json:
            self._out(stream.as_json_line(event))
            return
        for prefix, text, style in self.progress.render(event):
            self._out(text, style, prefix)

    def _out(self, text: str, style: str | None = None, prefix: str = "") -> None:
        if style and self.colour:
            text = f"{ANSI[style]}{text}\x1b[0m"
        sys.stdout.write(prefix + text + "\n")
        sys.stdout.flush()

    def _err(self, text: str, style: str | None = None) -> None:
        self.progress.moved()
        if style and self.colour:  # Django's styles, too, go by stdout
            text = f"{ANSI[style]}{text}\x1b[0m"
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


class _Refused(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return ""
