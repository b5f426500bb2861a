"""One deployment's events from Norn's WebSocket stream (docs/live.md).

`LiveStream` yields them in `seq` order, exactly once, resuming from the last
`seq` after a dropped connection. Nothing here imports Django: the CLI's fast
path (deployments/remote.py) follows a deployment without starting Django,
and deployments/client.py adds the database fallback for the full commands.
"""

import json
import os
import time
from collections.abc import Callable, Iterator
from collections import namedtuple
from urllib.parse import urlsplit, urlunsplit

from deployments import wire

# The events after which a deployment has nothing more to say (the same
# transactions that make it terminal write them, as its last event).
TERMINAL_EVENTS = frozenset({"deploy.completed", "deploy.failed"})

# Close codes after which reconnecting cannot help (docs/live.md): what the
# server at {where} said, as the user is told it.
REFUSALS = {
    4400: "the Norn server at {where} did not understand this client (4400 bad request)",
    4401: "the Norn server at {where} refused NORN_API_TOKEN: no such token, or it was revoked "
          "(4401 not authenticated)",
    4403: "the Norn server at {where} refused NORN_API_TOKEN: its user may not view deployments (4403 forbidden)",
    4404: "the Norn server at {where} does not know this deployment (4404)",
}

OPEN_TIMEOUT = 5.0
# How often the idle callback runs while nothing arrives.
IDLE_TICK = 1.0
# Publishing is best-effort (deployments/events.py): a live event lost on
# the way (Redis restarted) would leave us waiting for ever, so after this
# much silence we ask the server to replay from the database what we missed.
RESYNC_AFTER = 30.0
# A dropped connection is retried this many times in a row without getting
# anything new; the waits double from 0.25 s up to 5 s (about 23 s in all).
RECONNECTS = 8
MAX_BACKOFF = 5.0
DEFAULT_URL = "http://127.0.0.1:8000"


# One event as the stream sends it (seq: int, kind: str, payload: dict);
# reads like a deployments.models.Event. Not typing.NamedTuple: the CLI's
# start would import typing for it (~4 ms).
StreamedEvent = namedtuple("StreamedEvent", "seq kind payload")


class Unavailable(Exception):
    """No Norn server can serve this stream; the message says what is wrong
    (no token, a refused token, no server there) and is safe to print."""


def _unreachable(where: str, reason: str) -> Unavailable:
    return Unavailable(f"Norn server not reachable at {where} ({reason})")


class _Reconnect(Exception):
    """This connection is no use any more; a new one resumes from `last`."""


def display_url(base_url: str) -> str:
    """The server as the user named it, without any credentials in it."""
    parts = urlsplit(base_url)
    if not parts.hostname:
        return base_url  # not a URL at all; stream_url says so
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def stream_url(base_url: str, public_id: object, after: int) -> str:
    """NORN_URL's http(s) becomes ws(s); a path prefix (a proxy) is kept."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise ValueError(f"NORN_URL={display_url(base_url)!r} is not an http:// or https:// URL")
    path = f"{parts.path.rstrip('/')}/ws/deployments/{public_id}/"
    return urlunsplit((scheme, parts.netloc, path, f"after={after}", ""))


class LiveStream:
    """Iterates over one deployment's events from its WebSocket stream.

    Raises Unavailable when there is no usable server: at once if the first
    connection fails or the server refuses us, after RECONNECTS failed
    attempts if a working connection drops. Events arrive in order without
    duplicates by contract; we still check `seq`, because reconnects and
    resumes replay what we may already have.
    """

    def __init__(
        self,
        public_id: object,
        *,
        base_url: str,
        token: str,
        after: int = 0,
        idle_callback: Callable[[float], None] | None = None,
        info: Callable[[str], None] | None = None,
        resync_after: float = RESYNC_AFTER,
        reconnects: int = RECONNECTS,
    ) -> None:
        self.public_id = str(public_id)
        self.base_url = base_url
        self.where = display_url(base_url)
        self.token = token
        self.last = after
        self.idle_callback = idle_callback
        self.info = info or (lambda text: None)
        self.resync_after = resync_after
        self.reconnects = reconnects

    def __iter__(self) -> Iterator[StreamedEvent]:
        if not self.token:
            raise Unavailable(
                f"NORN_API_TOKEN is not set, so the Norn server at {self.where} was not asked "
                "(manage.py tokens create --user <you> --name cli makes one)"
            )
        try:
            stream_url(self.base_url, self.public_id, 0)
        except ValueError as exc:
            raise Unavailable(str(exc)) from None
        failures = 0
        ever_connected = False
        while True:
            url = stream_url(self.base_url, self.public_id, self.last)
            try:
                websocket = wire.connect(url, {"Authorization": f"Token {self.token}"}, OPEN_TIMEOUT)
            except wire.InvalidStatus as exc:
                # The server answered but would not upgrade (a server without
                # the WebSocket routes, or a proxy in front): at first contact
                # that is no Norn stream; later, a restarting server's proxy.
                reason = f"it refused the WebSocket: HTTP {exc.status}"
                if not ever_connected:
                    raise Unavailable(
                        f"the server at {self.where} has no Norn live stream ({reason}): is NORN_URL Norn's?"
                    ) from None
                failures += 1
                self._wait_before_retry(failures, reason)
                continue
            except (OSError, wire.WebSocketError) as exc:
                if not ever_connected:
                    raise _unreachable(self.where, _describe(exc)) from None
                failures += 1
                self._wait_before_retry(failures, _describe(exc))
                continue
            if not ever_connected:
                shown = stream_url(self.where, self.public_id, self.last).split("?")[0]
                self.info(f"Following over WebSocket: {shown}")
            elif failures:
                self.info(f"Reconnected; resuming after event #{self.last}")
            ever_connected = True
            before = self.last
            try:
                with websocket:
                    yield from self._read(websocket)
                return
            except wire.ConnectionClosed as exc:
                code = exc.code
                if code in REFUSALS:
                    raise Unavailable(REFUSALS[code].format(where=self.where)) from None
                reason = f"connection closed ({code})" if code else "connection lost"
            except _Reconnect as exc:
                reason = str(exc)
            # Retries are bounded per stretch without progress: a connection
            # that brought new events resets the count, one that didn't adds to it.
            failures = 1 if self.last > before else failures + 1
            self._wait_before_retry(failures, reason)

    def _wait_before_retry(self, failures, reason):
        if failures > self.reconnects:
            raise _unreachable(self.where, f"{reason}; {self.reconnects} reconnects failed")
        delay = min(0.25 * 2 ** (failures - 1), MAX_BACKOFF)
        self.info(f"{reason[:1].upper()}{reason[1:]}; reconnecting in {delay:.2g}s after event #{self.last} "
                  f"(attempt {failures} of {self.reconnects})")
        time.sleep(delay)

    def _read(self, websocket):
        """Yield this connection's events in order until the terminal one.

        The server replays what it missed live before sending anything newer
        (docs/live.md), so a gap should not happen; if one does, a fresh
        connection replays from `self.last` rather than print out of order.
        """
        caught_up = False
        last_event_at = last_resync_at = time.monotonic()
        while True:
            try:
                raw = websocket.recv(timeout=IDLE_TICK)
            except TimeoutError:
                now = time.monotonic()
                if self.idle_callback:
                    self.idle_callback(now - last_event_at)
                if caught_up and now - max(last_event_at, last_resync_at) >= self.resync_after:
                    websocket.send(json.dumps({"type": "resume", "deployment": self.public_id, "after": self.last}))
                    last_resync_at = now
                continue
            try:
                message = json.loads(raw)
                kind = message["type"]
                if kind == "event" and message.get("deployment") == self.public_id:
                    event = StreamedEvent(int(message["seq"]), str(message["event"]), message["payload"])
                else:
                    event = None
            except (ValueError, TypeError, KeyError):
                raise _Reconnect("the server sent something that is not a stream message") from None
            if event is not None:
                if event.seq <= self.last:
                    continue  # replayed after a resume or reconnect: already shown
                if event.seq > self.last + 1:
                    raise _Reconnect(f"event #{self.last + 1} is missing from the stream")
                self.last = event.seq
                last_event_at = time.monotonic()
                yield event
                if event.kind in TERMINAL_EVENTS:
                    return
            elif kind == "caught_up":
                caught_up = True
            # "ping" keeps proxies from closing an idle connection; it needs
            # no answer. Anything else is from a newer protocol: ignored.


def _describe(exc):
    """A short, secret-free reason for a failed connection."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


# How a follower prints the events: the full commands (deployments/cli.py)
# and the fast path (deployments/remote.py) alike.
SYMBOLS = {"running": "…", "succeeded": "✓", "failed": "✗", "skipped": "–"}
SUCCESS, WARNING, ERROR = "SUCCESS", "WARNING", "ERROR"  # Django's style names


def describe(event: StreamedEvent) -> list[tuple[str, str | None]]:
    """The lines a follower prints for `event`, each with its style (or None)."""
    payload = event.payload
    if event.kind == "deploy.step":
        status = payload["status"]
        line = f"  {payload['step']:<9} {SYMBOLS.get(status, ' ')} {status}"
        if "duration" in payload:
            line += f" in {payload['duration']:.1f}s"
        if payload.get("reason"):
            line += f": {payload['reason']}"
        lines = [(line, {"failed": ERROR, "succeeded": SUCCESS}.get(status))]
        if status == "failed" and payload.get("error"):
            lines += [(f"            {text}", None) for text in payload["error"].splitlines()]
        return lines
    if event.kind == "deploy.completed":
        kind = payload.get("kind", "deploy")
        if kind == "restore":
            text = f"Restored {payload['app']}'s database from snapshot {payload['snapshot']}"
        elif kind == "rollback":
            text = f"Rolled back {payload['app']} to {payload['image']}"
        else:
            text = f"Deployed {payload['app']} {payload['commit_sha'][:12]} as {payload['image']}"
        return [(text, SUCCESS)]
    if event.kind == "deploy.failed" and payload.get("status") == "cancelled":
        # Ended on request: "cancelled by alice", and a cancelled rollout's note.
        return [(f"Deployment {payload['id']} cancelled: {payload['error']}", WARNING)]
    if event.kind == "deploy.failed":
        return [(f"Deployment {payload['id']} failed: {payload['error']}", ERROR)]
    if event.kind == "deploy.cancelled":
        return [(f"Cancel requested by {payload['by']}", WARNING)]
    if event.kind == "deploy.retargeted":
        # A newer push joined this deploy while it waited (docs/autodeploy.md).
        return [(f"A newer push: deploying {payload.get('ref', '?')[:12]} instead of "
                 f"{payload.get('previous_ref', '?')[:12]}", WARNING)]
    return []


# Cursor up one line, then erase that line: what replaces a step's
# "running" line with its outcome on a terminal.
REDRAW = "\x1b[1A\x1b[2K"


def redraws(stream: object) -> bool:
    """Whether a follower writing to `stream` updates steps in place: on a
    terminal that understands ANSI (not TERM=dumb); plain lines otherwise."""
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class Progress:
    """The lines a follower writes, as (prefix, text, style).

    Plain lines (a pipe, a file, --json's readers) are describe()'s, byte
    for byte. In place (a terminal), a step's outcome replaces its "running"
    line, prefix REDRAW, when that line is still the last one written: one
    line per step. The follower calls `moved()` when it writes anything else
    (a warning, a note on stderr), after which the outcome goes on a line of
    its own.
    """

    def __init__(self, in_place: bool) -> None:
        self.in_place = in_place
        self.running = None  # the step whose "running" line is the last one written

    def render(self, event: StreamedEvent) -> list[tuple[str, str, str | None]]:
        lines = describe(event)
        if not lines:
            return []
        step = event.payload.get("step") if event.kind == "deploy.step" else None
        prefix = REDRAW if self.in_place and step is not None and step == self.running else ""
        status = event.payload.get("status") if step is not None else None
        self.running = step if self.in_place and status == "running" else None
        return [(prefix if n == 0 else "", text, style) for n, (text, style) in enumerate(lines)]

    def moved(self) -> None:
        self.running = None


def commit_line(sha: str | None, subject: str, author: str) -> str | None:
    """The line under a follower's header naming the commit being deployed:
    "Commit 1a2b3c4d5e6f: Fix the login (Ada Lovelace)"; None until the
    clone step has read its subject. The full command and the fast path
    print the same."""
    if not sha or not subject:
        return None
    return f"Commit {sha[:12]}: {subject}" + (f" ({author})" if author else "")


def still_queued(ahead: int) -> str:
    """What a follower says when a deployment waits in the queue for long."""
    reason = f"{ahead} earlier deployment(s) of this app first" if ahead else "a worker: is manage.py qcluster running?"
    return f"Still queued, waiting for {reason}"


def as_json_line(event: StreamedEvent) -> str:
    """An event as `--json` prints it: one JSON object per line."""
    return json.dumps({"seq": event.seq, "event": event.kind, "payload": event.payload})
