"""Run one pipeline command: argv list, incremental output, timeout, cancel.

Each command gets its own session (process group), so a timeout, a cancel or
crash recovery can kill the whole tree it started (docker build's children,
a test suite's servers), not just the direct child.
"""

import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

# Variables passed through to every command; nothing else of Norn's own
# environment (which holds NORN_GIT_TOKEN and the like) reaches a command.
PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "DOCKER_HOST", "DOCKER_CONFIG", "KUBECONFIG", "MINIKUBE_HOME")

# How often output is flushed to the database while a command runs.
FLUSH_INTERVAL = 0.25
KILL_GRACE = 3.0

# Set in a worker process that was told to stop (deployments/workerstop.py):
# the monotonic time after which what a cancel would stop is stopped, and why.
_stop_deadline: float | None = None
_stop_reason = ""


class CommandError(Exception):
    """A command could not run to success; `message` is for the step's error."""


class Cancelled(CommandError):
    pass


class TimedOut(CommandError):
    pass


@dataclass
class Result:
    returncode: int
    tail: str  # the last lines of output, for error messages
    text: str = ""  # all of it, when run(capture=True)


class Redactor:
    """Replaces secret values in text before it is stored or shown."""

    def __init__(self, secrets=()):
        # Longest first, so a secret containing another is fully masked.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text):
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def host_env(**extra):
    """The environment every command starts from: PASSTHROUGH_ENV plus `extra`."""
    env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def pid_alive(pid):
    """Is process `pid` (on this host) running? A zombie is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stop_after(seconds: float, reason: str) -> None:
    """From `seconds` from now on, stop_reason() returns `reason`: this
    process is stopping, and what is still running must not outlive it."""
    global _stop_deadline, _stop_reason
    if _stop_deadline is None:
        _stop_deadline = time.monotonic() + seconds
        _stop_reason = reason


def stop_requested() -> bool:
    """Has this process been told to stop (its grace period may still run)?"""
    return _stop_deadline is not None


def stop_reason() -> str | None:
    """Why this process stops what it runs, once its grace period is over; else None."""
    if _stop_deadline is not None and time.monotonic() >= _stop_deadline:
        return _stop_reason
    return None


def kill_tree(pgid, sig=signal.SIGKILL):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run(argv, *, cwd=None, env=None, timeout=None, on_output=None, should_cancel=None,
        on_start=None, redact=None, stdin_data=None, capture=False):
    """Run `argv` (a list, never a shell string) and return a Result.

    on_output(text) receives redacted output in batches while it runs;
    should_cancel() is polled and returns a reason to stop, or None;
    on_start(pgid) learns the process group to kill if this worker dies;
    capture=True keeps all of the output in Result.text.
    Raises TimedOut or Cancelled after killing the process group.
    """
    assert isinstance(argv, (list, tuple)), "commands are argv lists"
    redact = redact or Redactor()
    proc = subprocess.Popen(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    if on_start:
        on_start(proc.pid)
    if stdin_data is not None:
        proc.stdin.write(stdin_data)
        proc.stdin.close()

    chunks = queue.Queue()

    def reader():
        # read1 returns what is there (up to 64 KiB) without waiting for more.
        while True:
            data = proc.stdout.read1(65536)
            if not data:
                break
            chunks.put(data)
        chunks.put(None)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()

    deadline = time.monotonic() + timeout if timeout else None
    output = Batches(on_output, redact, capture)
    flush = output.flush
    eof = False
    stop_error = None

    exited_at = None
    while True:
        if eof:
            # Output is closed; the process is exiting. Wait for it rather
            # than for output that will not come (a deploy runs dozens of
            # short commands: 0.1 s each here would add up).
            try:
                proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
        else:
            try:
                data = chunks.get(timeout=0.1)
                if data is None:
                    eof = True
                else:
                    output.add(data)
            except queue.Empty:
                pass
        if output.due():
            flush()
        if proc.poll() is None and stop_error is None:
            reason = should_cancel() if should_cancel else None
            if reason:
                stop_error = Cancelled(reason)
            elif deadline and time.monotonic() > deadline:
                stop_error = TimedOut(f"timed out after {timeout:g} s")
            if stop_error:
                _terminate(proc)
        if proc.poll() is not None:
            if eof:
                break
            # A grandchild may hold the pipe open after the command exited;
            # give it a moment to finish writing, then stop reading.
            exited_at = exited_at or time.monotonic()
            if time.monotonic() - exited_at > 2:
                break
    flush()
    # Children that outlived the leader (daemonized helpers) go too.
    kill_tree(proc.pid)
    thread.join(timeout=1)
    if stop_error:
        raise stop_error
    return Result(proc.returncode, output.tail_text(), "".join(output.captured))


class Batches:
    """A command's output as it comes: gathered, then every FLUSH_INTERVAL
    redacted and handed to `on_output`; the last pieces are kept for error
    messages (and all of it with `capture`)."""

    def __init__(self, on_output=None, redact=None, capture=False):
        self.on_output = on_output
        self.redact = redact or Redactor()
        self.capture = capture
        self.pending: list[bytes] = []
        self.tail: list[str] = []
        self.captured: list[str] = []
        self.last_flush = time.monotonic()

    def add(self, data: bytes) -> None:
        self.pending.append(data)

    def due(self) -> bool:
        return time.monotonic() - self.last_flush >= FLUSH_INTERVAL

    def flush(self) -> None:
        if self.pending:
            text = self.redact(b"".join(self.pending).decode("utf-8", "replace"))
            self.pending = []
            self.tail.append(text)
            del self.tail[:-20]
            if self.capture:
                self.captured.append(text)
            if self.on_output:
                self.on_output(text)
        self.last_flush = time.monotonic()

    def tail_text(self) -> str:
        return "".join(self.tail)


def _terminate(proc):
    kill_tree(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        pass
    kill_tree(proc.pid, signal.SIGKILL)


def tail_lines(text, count=20):
    lines = text.rstrip("\n").splitlines()
    return "\n".join(lines[-count:])
