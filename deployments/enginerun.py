"""A throwaway container run through the Docker engine's API: what
`docker run --rm --init ...` does (containers.run), without the docker
client's process.

A step's test or migration container costs the docker client's start and
its own work on top of the container's (~50 ms on this kind of machine,
taken from the same two cores the container starts on), twice per deploy
(issue 13). Here the worker asks the engine itself, on its unix socket:
create (AutoRemove, so the engine removes it once it exits, even if this
worker is gone by then), attach to its output, wait for its next exit
(registered before it starts), start, read the output, read the exit code.

The environment travels in the request body over the socket, as the env
file kept it out of the client's arguments. Where the engine is not on a
unix socket (a context, TLS, ssh), or the image is not there to create
from (the client would pull it), `run` returns None and the caller runs
the docker client instead.
"""

import queue
import re
import socket
import struct
import threading
import time

from deployments import dockerapi, runner

# What the docker client exits with when the container could not run (its
# `docker run` exit codes): the command was not found, could not be
# executed, or the engine refused.
NOT_FOUND, NOT_EXECUTABLE, REFUSED = 127, 126, 125
MAX_HEAD = 64 * 1024


def run(*, name: str, body: dict, timeout: float | None, on_output, should_cancel,
        redact: runner.Redactor) -> runner.Result | None:
    """Create container `name` from `body` (the API's create request), run
    it to its end and return its exit code and output's tail, as the docker
    client would; None when the docker client should do it instead.

    on_output(text) gets the output (redacted) as it comes, in batches;
    should_cancel() is polled for a reason to stop. A cancel or the timeout
    kills and removes the container, then raises runner.Cancelled or
    runner.TimedOut.
    """
    sock = dockerapi.socket_path()
    if sock is None:
        return None
    status, answer = _call("POST", f"/containers/create?name={dockerapi.name(name)}", body)
    if status == 404 and "no such image" in answer.get("message", "").lower():
        return None  # the docker client pulls it
    if status != 201:
        return _refused(answer, on_output, redact, starting=False)
    container = answer["Id"]
    attached = waiting = None
    try:
        attached = _open(sock, "POST", f"/containers/{container}/attach?stream=1&stdout=1&stderr=1",
                         upgrade=True)
        waiting = _open(sock, "POST", f"/containers/{container}/wait?condition=next-exit")
        status, answer = _call("POST", f"/containers/{container}/start")
        if status not in (204, 304):
            _remove(container)  # created, never started: auto-remove does not apply
            return _refused(answer, on_output, redact, starting=True)
        return _follow(attached, waiting, container, timeout, on_output, should_cancel, redact)
    except BaseException:
        _remove(container)
        raise
    finally:
        for connection in (attached, waiting):
            if connection is not None:
                connection[0].close()


def _follow(attached, waiting, container, timeout, on_output, should_cancel, redact) -> runner.Result:
    """Stream the output until it ends, then read the exit code."""
    chunks: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_read_frames, args=(attached, chunks), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout if timeout else None
    output = runner.Batches(on_output, redact)
    flush = output.flush

    def stop():
        reason = should_cancel() if should_cancel else None
        if reason or (deadline and time.monotonic() > deadline):
            flush()
            _remove(container)
            raise runner.Cancelled(reason) if reason else runner.TimedOut(f"timed out after {timeout:g} s")

    while True:
        try:
            data = chunks.get(timeout=0.1)
        except queue.Empty:
            data = b""
        if data is None:
            break
        if data:
            output.add(data)
        if output.due():
            flush()
        stop()
    flush()
    # Output ends when the container exits, or earlier if it closed its
    # output and goes on: the exit code comes when it ends, and a cancel or
    # the timeout still stops it meanwhile.
    code = _exit_code(waiting, stop)
    return runner.Result(code, output.tail_text())


def _read_frames(attached, chunks: queue.Queue) -> None:
    """The attach stream's frames (8-byte header: stream, 3 zero bytes, the
    payload's size), their payloads in order; None at its end."""
    connection, buffered = attached
    buffer = bytearray(buffered)
    try:
        while True:
            while len(buffer) >= 8:
                size = struct.unpack(">I", buffer[4:8])[0]
                if len(buffer) < 8 + size:
                    break
                chunks.put(bytes(buffer[8:8 + size]))
                del buffer[:8 + size]
            data = connection.recv(65536)
            if not data:
                break
            buffer += data
    except OSError:
        pass
    finally:
        chunks.put(None)


def _exit_code(waiting, stop) -> int:
    """The wait request's answer, {"StatusCode": n, ...} (chunked), calling
    stop() (which raises to stop it) every 0.1 s until it comes."""
    connection, text = waiting
    connection.settimeout(0.1)
    while not re.search(rb'"StatusCode":\s*-?\d+', text):
        try:
            data = connection.recv(4096)
        except TimeoutError:
            stop()
            continue
        except OSError as exc:
            raise runner.CommandError(f"lost the Docker engine's answer: {exc}") from None
        if not data:
            raise runner.CommandError("the Docker engine did not say how the container exited")
        text += data
    return int(re.search(rb'"StatusCode":\s*(-?\d+)', text)[1])


def _refused(answer: dict, on_output, redact, *, starting: bool) -> runner.Result:
    """The engine's refusal as the docker client reports it: its message in
    the output and the client's exit code for it (when the container could
    not start, 127 for a command that is not there, 126 for one that cannot
    be executed)."""
    message = answer.get("message", "") or "no reason given"
    lowered = message.lower()
    code = REFUSED
    if starting and ("no such file" in lowered or "executable file not found" in lowered):
        code = NOT_FOUND
    elif starting and "permission denied" in lowered:
        code = NOT_EXECUTABLE
    text = redact(f"docker: Error response from daemon: {message}\n")
    if on_output:
        on_output(text)
    return runner.Result(code, text)


def _remove(container: str) -> None:
    """Kill and remove it (AutoRemove covers a container that exited)."""
    try:
        _call("DELETE", f"/containers/{container}?force=1")
    except runner.CommandError:
        pass


def _open(sock: str, method: str, path: str, upgrade: bool = False):
    """Send a request and read its status line and headers: (connection, the
    bytes read past them). The attach (upgraded) and wait answers go on."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.settimeout(dockerapi.TIMEOUT)
        connection.connect(sock)
        connection.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n".encode()
            + (b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n" if upgrade else b"Connection: close\r\n\r\n")
        )
        received = b""
        while b"\r\n\r\n" not in received:
            data = connection.recv(4096)
            if not data or len(received) > MAX_HEAD:
                raise OSError("the answer ended before its headers")
            received += data
    except OSError as exc:
        connection.close()
        raise runner.CommandError(f"cannot reach the Docker engine at unix://{sock}: {exc}") from None
    head, rest = received.split(b"\r\n\r\n", 1)
    status = head.split(b" ", 2)[1:2]
    if not status or status[0] not in (b"101", b"200"):
        connection.close()
        raise runner.CommandError(f"the Docker engine refused {path.split('?')[0]}: {head[:200]!r}")
    connection.settimeout(None)
    return connection, rest  # the wait's answer is chunked: _exit_code finds its JSON by pattern


def _call(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """One request and its whole answer: (status, JSON object or {})."""
    try:
        answer = dockerapi.request(method, path, body)
    except dockerapi.Unreachable as exc:
        raise runner.CommandError(str(exc)) from None
    if answer is None:
        raise runner.CommandError("the Docker engine is no longer on a unix socket")
    status, data = answer
    return status, data if isinstance(data, dict) else {}
