"""The steps' deferred work (Context.defer): what a step leaves for after its
deployment's final status is recorded, such as the Docker runtime's
retirement of the previous container.

The pipeline hands it here once the deployment ended (however it ended);
it runs in a thread of the worker, which takes its next task meanwhile. The
thread is not a daemon, so the worker process, told to stop or recycled,
finishes it before it exits (multiprocessing joins such threads). The next
deploy of the same app finishes what it finds unfinished.
"""

import logging
import threading
import time

from django.db import DatabaseError, connection

from deployments import events, transitions

log = logging.getLogger(__name__)

# The threads running deferred work in this process.
_threads: list[threading.Thread] = []
_lock = threading.Lock()


def start(deployment_id: int, work: list, redact) -> None:
    """Run `work` ((step, callable) pairs, in order) in a thread of its own."""
    if not work:
        return
    thread = threading.Thread(target=_run, args=(deployment_id, list(work), redact), name=f"deferred-{deployment_id}")
    with _lock:
        _threads[:] = [t for t in _threads if t.is_alive()]
        _threads.append(thread)
    thread.start()


def wait(timeout: float | None = None) -> bool:
    """Wait for this process's deferred work to end; False if some still runs after `timeout`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with _lock:
        threads = list(_threads)
    for thread in threads:
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in threads)


def _run(deployment_id, work, redact):
    """The work, in order: what it logs goes to its step's output."""
    try:
        # Live listeners learn the end before this work starts.
        events.publisher.flush()
        for step, job in work:
            def record(text, step=step):
                text = redact(text if text.endswith("\n") else text + "\n")
                try:
                    transitions.append_output(deployment_id, step, text)
                except DatabaseError:
                    connection.close()  # reopened by the next write
                    log.warning("deployment %s, %s step: %s", deployment_id, step, text.rstrip("\n"))
            try:
                job(record)
            except Exception as exc:
                log.exception("deferred work of the %s step of deployment %s failed", step, deployment_id)
                record(f"{exc.__class__.__name__}: {exc}")
        events.publisher.flush()
    finally:
        connection.close()  # this thread's own
