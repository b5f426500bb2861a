"""Threads that stay in the worker process between deployments, with their
database connections.

A deployment's heartbeat and its output writer each need a thread with a
database connection of its own (Django's connections are per thread). A new
thread per deployment meant two new PostgreSQL sessions per deployment, each
a server process forked and its caches filled, and the output writer's first
write, in the clone step, waited for one (issue 13). A resident thread runs
one job at a time and keeps its connection as Django keeps the main thread's
between tasks: `close_if_unusable_or_obsolete` before each job, so
CONN_MAX_AGE and the health check apply as they do to the worker's own
connection; a job that hit a DatabaseError closes it itself.

    job = residents.run(target, name="heartbeat-42")
    job.join(timeout=5); job.is_alive()
"""

import logging
import os
import queue
import threading

from django.db import connection

log = logging.getLogger(__name__)

IDLE_NAME = "norn-resident"

_idle: list["_Resident"] = []  # waiting for a job, most recently used last
_lock = threading.Lock()


class Job:
    """One target run by a resident thread: joined like a thread."""

    def __init__(self, target) -> None:
        self.target = target
        self._done = threading.Event()

    def is_alive(self) -> bool:
        return not self._done.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the target returned; False on timeout."""
        return self._done.wait(timeout)


def run(target, name: str) -> Job:
    """Run `target()` in an idle resident thread (a new one when none is
    idle), under the thread name `name`; exceptions are logged."""
    job = Job(target)
    with _lock:
        resident = _idle.pop() if _idle else None
    if resident is None:
        resident = _Resident()
        resident.start()
    resident.give(job, name)
    return job


def disconnect(timeout: float = 5.0) -> None:
    """Close the database connections of the idle residents (a database is
    dropped only once no session uses it: the test suite's, at its end)."""
    with _lock:
        idle, _idle[:] = _idle[:], []
    jobs = []
    for resident in idle:
        jobs.append(Job(lambda: connection.close()))  # in that thread: its own connection
        resident.give(jobs[-1], IDLE_NAME)
    for job in jobs:
        job.join(timeout)


class _Resident(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name=IDLE_NAME, daemon=True)
        self._jobs = queue.SimpleQueue()

    def give(self, job: Job, name: str) -> None:
        self._jobs.put((job, name))

    def run(self) -> None:
        while True:
            job, name = self._jobs.get()
            self.name = name
            try:
                # What Django does at the start of a request: a connection
                # past CONN_MAX_AGE, or that failed, is closed (and opened
                # again on first use); a kept one is health-checked first.
                connection.close_if_unusable_or_obsolete()
                job.target()
            except Exception:
                log.exception("%s raised", name)
                connection.close()
            finally:
                self.name = IDLE_NAME
                with _lock:
                    _idle.append(self)
                job._done.set()


def _forget_in_child() -> None:
    # A forked process (django-q's workers are forked) has none of the
    # parent's threads: those objects would take jobs and never run them.
    global _lock
    _idle.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)
