"""Clean stops for `manage.py qcluster`: SIGTERM to the cluster's parent or to its
whole process group (what `systemctl stop` and `docker stop` send) stops every
process within NORN_STOP_GRACE plus a few seconds, and leaves nothing running.

Why django-q2 1.11 alone hangs: its sentinel takes SIGTERM's default action and
dies on a group signal, often while counted as a sleeper on the stop event's
condition; the parent's handler then waits in `Event.set()` (notify_all) for
that dead sleeper to wake, for ever. Workers die the same way, an idle one
while holding the task queue's read lock, so a busy one can never read its
poison pill afterwards, and a deployment in flight is killed mid-step with
its step's processes and containers still running (they are in sessions of
their own).

Here instead:
- the sentinel, pusher and monitor take SIGTERM as "stop": the sentinel runs
  django-q2's own orderly stop (pusher first, then one poison pill per
  worker, then the monitor) and forwards SIGTERM to its workers, so a parent
  signalled alone (`kill <pid>`, `docker stop`) stops them too;
- an idle worker exits at once (unwinding releases the queue's lock);
- a busy worker lets its task go on for NORN_STOP_GRACE seconds; after that
  runner.stop_reason() makes the step stop as a cancel would (its process
  group killed, its throwaway container removed) and the deployment fails
  with that reason; then the worker takes its poison pill and exits. It never
  starts another task once told to stop.
"""

import logging
import os
import signal

from django.conf import settings
from django_q import cluster as q_cluster

from deployments import runner

log = logging.getLogger(__name__)

# After the grace period, how long a task may take to wind down (fail its
# deployment, remove containers) before the worker's own task timeout fires.
WIND_DOWN = 10

# How long the sentinel waits for its monitor to save the last results once
# the workers are gone (django-q2 waits up to the task timeout, an hour).
MONITOR_WAIT = 10


class _StopFlag:
    """The sentinel's view of its stop event: set by the cluster's parent
    (a multiprocessing Event) or by a SIGTERM the sentinel got itself.

    The handler only sets a Python attribute: calling Event.set() from a
    handler that interrupted the same process's Event.wait() would deadlock
    in notify_all, waiting for itself to wake.
    """

    def __init__(self, event):
        self.event = event
        self.signalled = False

    def is_set(self):
        return self.signalled or self.event.is_set()

    def wait(self, timeout=None):
        # The sentinel waits GUARD_CYCLE (0.5 s) at a time: a signal sets
        # the flag during the wait and the next cycle sees it.
        return self.signalled or self.event.wait(timeout) or self.signalled

    def set(self):
        self.event.set()


class Sentinel(q_cluster.Sentinel):
    """django-q2's sentinel, made to stop in order on SIGTERM (module docstring)."""

    def __init__(self, stop_event, start_event, cluster_id, broker=None, timeout=None, start=True):
        super().__init__(stop_event, start_event, cluster_id, broker, timeout, start=False)
        self.stop_event = _StopFlag(stop_event)
        # Inherited by the pusher, the monitor and the workers it forks; a
        # worker replaces it with its own at post_spawn (on_worker_spawn).
        signal.signal(signal.SIGTERM, self._on_sigterm)
        if start:
            self.start()

    def _on_sigterm(self, signum, frame):
        if os.getpid() == self.pid:
            self.stop_event.signalled = True
        # The pusher and the monitor ignore it: the sentinel stops them in
        # order, so neither dies holding a queue's lock.

    def stop(self):
        for process in list(self.pool):
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.timeout = min(self.timeout or MONITOR_WAIT, MONITOR_WAIT)
        super().stop()


def use_in_this_process():
    """Make django-q2's Cluster start Norn's Sentinel (manage.py qcluster).

    Cluster.start() creates the sentinel by its module-level name and has no
    hook for another class; this process runs only the cluster.
    """
    q_cluster.Sentinel = Sentinel


# --- in each worker ----------------------------------------------------------------

_busy = False


def on_worker_spawn():
    """post_spawn, in a new worker process: take SIGTERM the Norn way."""
    signal.signal(signal.SIGTERM, _worker_sigterm)


def _worker_sigterm(signum, frame):
    if not _busy:
        # Idle: most likely blocked reading the task queue; SystemExit
        # unwinds that read and releases the queue's lock for the others.
        raise SystemExit(0)
    grace = settings.NORN_STOP_GRACE
    if runner.stop_requested():
        return
    log.warning("stopping: the task in progress gets %s s (NORN_STOP_GRACE) to finish", grace)
    # A task that does not watch runner.stop_reason() (any but a pipeline
    # step) is ended by django-q2's own task timeout (SIGALRM raises in the
    # task, and the worker exits after it), brought forward to just after
    # the grace period unless it would fire sooner anyway.
    deadline = grace + WIND_DOWN
    remaining = signal.alarm(deadline)
    if 0 < remaining < deadline:
        signal.alarm(remaining)
    runner.stop_after(
        grace,
        f"Norn's worker was stopped (SIGTERM) and this did not finish within NORN_STOP_GRACE ({grace} s); "
        "its processes and containers were stopped",
    )


def before_task(**kwargs):
    """pre_execute: a worker told to stop starts nothing new.

    The task stays unacknowledged in the broker; a deployment it was for
    stays queued and is dispatched again by the next worker
    (tasks.recover_and_dispatch).
    """
    global _busy
    if runner.stop_requested():
        raise SystemExit(0)
    _busy = True


def after_task(**kwargs):
    """post_execute_in_worker: back to idle."""
    global _busy
    _busy = False
