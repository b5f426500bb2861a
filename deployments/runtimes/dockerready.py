"""When a new container counts as started, on the Docker runtime: no fixed wait.

A served app (it has a port or domains) is ready once its health check (or,
without one, any HTTP answer on `/`) has passed HEALTH_PASSES times in a row,
polled every HEALTH_INTERVAL on its own port, while the container has not
died once: `docker events` reports a death the moment it happens (DeathWatch),
so a crash right after the start is caught without sleeping on it, and a
restart by `--restart unless-stopped` cannot hide it. An app that serves
nothing (a worker) has nothing to probe: it must stay running WORKER_MIN_UP.
"""

import http.client
import subprocess
import threading
import time
import urllib.error
import urllib.request

from deployments import runner
from deployments.appenv import StepContext
from deployments.runner import host_env
from deployments.runtimes.dockerengine import BACKEND_HOST, DEFAULT_WAIT, PROBE_TIMEOUT, NotReady, container

HEALTH_INTERVAL = 0.1
HEALTH_PASSES = 3
INSPECT_EVERY = 10  # polls
WORKER_MIN_UP = 2.0


class DeathWatch:
    """`docker events` for one container's `die` events, read in a thread.

    Start it after `docker create`, before `docker start`; `died` is then set
    the instant the container's process ends, whatever Docker does next.
    close() stops it.
    """

    def __init__(self, name: str):
        self.name = name
        self.died = threading.Event()
        self.exit_code: str | None = None
        # --since now: a death before the subscription is in place is
        # replayed too, while an earlier container of the same name (already
        # removed when this one was created) is not.
        self._proc = subprocess.Popen(
            ["docker", "events", "--since", f"{time.time():.6f}",
             "--filter", f"container={name}", "--filter", "event=die",
             "--format", "{{index .Actor.Attributes \"exitCode\"}}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=host_env(), start_new_session=True, text=True,
        )
        self._thread = threading.Thread(target=self._read, name=f"deathwatch-{name}", daemon=True)
        self._thread.start()

    def _read(self):
        for line in self._proc.stdout:
            self.exit_code = line.strip() or None
            self.died.set()

    def close(self):
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _dead(ctx: StepContext, name: str, watch: DeathWatch | None) -> str | None:
    """Why the container is not (or no longer) up, from Docker; None if it is."""
    info = container(ctx, name)
    if info is None:
        return f"the new container {name} disappeared while starting"
    state = info["state"]
    died = watch is not None and watch.died.is_set()
    if died or info["restarts"] or state.get("Status") in ("exited", "dead", "restarting"):
        code = state.get("ExitCode") if not died or watch.exit_code is None else watch.exit_code
        detail = f" ({state['Error']})" if state.get("Error") else ""
        return f"the new container {name} exited with status {code}{detail}"
    return None


def wait_until_ready(ctx: StepContext, name: str, backend: int | None = None, watch: DeathWatch | None = None) -> None:
    """Return once the container is ready (see the module's docstring); raise
    NotReady when it dies, fails its check until the step's timeout, or is
    gone, and runner.Cancelled when the deployment is cancelled."""
    limit = ctx.timeout or DEFAULT_WAIT
    path = ctx.spec.healthcheck
    url = f"http://{BACKEND_HOST}:{backend}{path or '/'}" if backend else None
    if url:
        wanted = "2xx or 3xx" if path else "any HTTP response"
        ctx.log(f"Waiting up to {limit:g} s for GET {url} to answer {wanted} {HEALTH_PASSES} times in a row")
    else:
        ctx.log(f"Waiting up to {limit:g} s for {name} to stay running for {WORKER_MIN_UP:g} s")
    started = time.monotonic()
    deadline = started + limit
    passes = polls = 0
    answer = last_logged = None
    while True:
        polls += 1
        # Docker is asked every poll without a watch, else when it reports a
        # death, and once a second all the same.
        if watch is None or watch.died.is_set() or polls % INSPECT_EVERY == 0:
            why = _dead(ctx, name, watch)
            if why:
                raise NotReady(why)
        now = time.monotonic()
        if url is None:
            if now - started >= WORKER_MIN_UP:
                why = _dead(ctx, name, watch)
                if why:
                    raise NotReady(why)
                ctx.log(f"{name} has been running for {now - started:.1f} s")
                return
        else:
            healthy, answer = probe(url, strict=bool(path), timeout=max(0.5, min(PROBE_TIMEOUT, deadline - now)))
            answer = f"GET {url}: {answer}"
            if answer != last_logged:
                ctx.log(answer)
                last_logged = answer
            passes = passes + 1 if healthy else 0
            if passes >= HEALTH_PASSES:
                # A death between the passes shows here (the watch, and the restart count).
                why = _dead(ctx, name, watch)
                if why:
                    raise NotReady(why)
                ctx.log(f"{name} passed {HEALTH_PASSES} checks in a row, {time.monotonic() - started:.2f} s after the start")
                return
        if time.monotonic() >= deadline:
            if answer is not None and path:
                raise NotReady(f"the new container {name} did not pass its health check within {limit:g} s ({answer})")
            if answer is not None:
                raise NotReady(f"the new container {name} did not answer HTTP within {limit:g} s ({answer})")
            raise NotReady(f"the new container {name} was not running steadily within {limit:g} s")
        reason = ctx.cancel_reason() if ctx.cancel_reason else None
        if reason:
            raise runner.Cancelled(reason)
        if watch is not None:
            # Woken at once by a death.
            watch.died.wait(HEALTH_INTERVAL)
        else:
            time.sleep(HEALTH_INTERVAL)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect already shows the app is serving; following it could lead
    # away from 127.0.0.1.
    def redirect_request(self, *args, **kwargs):
        return None


# No proxies: the health check is for this host's own port.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)


def probe(url: str, strict: bool = True, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """GET `url` once; (passed, what it answered). strict: only 2xx and 3xx
    pass (a health check); otherwise any HTTP answer does (it serves)."""
    try:
        with _opener.open(url, timeout=timeout) as response:
            return True, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        exc.close()
        return (300 <= exc.code < 400) or not strict, f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return False, str(exc.reason)
    except (OSError, http.client.HTTPException) as exc:
        return False, str(exc) or exc.__class__.__name__
