#!/usr/bin/env python
"""Benchmark: how long a committed event takes to reach a WebSocket client.

Starts a real daphne on a free loopback port against a fresh database, opens
one client on each socket kind (API token): /ws/deployments/<uuid>/,
/ws/apps/<app>/ and /ws/deployments/ (these two send a `resume` of the
deployment, so that their `caught_up` proves the subscription), waits for
every `caught_up`, then acts as the worker: writes log events with deployments.events.record,
one transaction each, in two phases of N events: paced at --rate events/s,
then back to back (the worker's maximum: throughput, and latency when the
publisher falls behind).

What is measured: each event's commit is stamped (time.time()) by an
on_commit callback registered before record()'s own, so it runs right after
COMMIT returned and just before the event is queued for the publisher
thread. The client, a separate process, stamps each frame as its recv()
returns, before parsing it. Latency = receive stamp - commit stamp (one host,
one clock), printed as p50/p90/p99/max per socket kind. Target (issue 13):
p99 under 20 ms on every socket kind.

    .venv/bin/python bench/event_latency.py [--events 1000] [--rate 200] [--sockets deployment,app,all]

Needs PostgreSQL and Redis (scripts/services); uses its own database
norn_bench_events and channel prefix norn-bench-<pid>, and removes both,
daphne and the client when it ends (also on Ctrl-C). bench/fanout.py reuses
the helpers here.
"""

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB = "norn_bench_events"
# The payload of a log event (transitions.append_output) with a line of typical length.
# The socket kinds (docs/live.md) and their paths.
SOCKETS = {
    "deployment": "/ws/deployments/{deployment}/",
    "app": "/ws/apps/{app}/",
    "all": "/ws/deployments/",
}
TARGET_MS = 20
LINE = "Step 7/12 : RUN pip install --no-cache-dir -r requirements.txt  ---> Running in 3f2a9c1e\n"


# --- setup and cleanup, shared with bench/fanout.py --------------------------


def sh(*argv, **kwargs):
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True, **kwargs)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_env(db, tmp):
    """Environment for this process and daphne: own database, own channel prefix.

    DEBUG is off, as in production (with it on Django also keeps every query).
    """
    env = {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}",
        "NORN_CHANNEL_PREFIX": f"norn-bench-{os.getpid()}",
        "NORN_APPS_DIR": str(tmp / "apps"),
        "NORN_WORK_DIR": str(tmp / "work"),
        "NORN_SNAPSHOT_DIR": str(tmp / "snapshots"),
        "NORN_LOG_LEVEL": "WARNING",
        "DEBUG": "0",
        "SECRET_KEY": "norn-bench-" + os.urandom(16).hex(),
        "DJANGO_SETTINGS_MODULE": "norn_project.settings",
        "PYTHONUNBUFFERED": "1",
    }
    (tmp / "apps").mkdir(exist_ok=True)
    os.environ.update(env)
    return {**os.environ, **env}


def create_database(db, env):
    drop_database(db)
    sh("createdb", "-h", "127.0.0.1", "-U", "postgres", db)
    sh(sys.executable, "manage.py", "migrate", "--no-input", cwd=ROOT, env=env)


def drop_database(db):
    sh("psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def raise_open_files(needed):
    """Each WebSocket is a file descriptor, in daphne and in the client process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"needs {needed} open files, the hard limit is {hard}: raise it (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


class Daphne:
    """`python -m daphne -b 127.0.0.1 -p PORT norn_project.asgi:application`."""

    def __init__(self, env, log_path):
        self.port = free_port()
        self.env = env
        self.log_path = log_path
        self.proc = None

    def start(self, timeout=30):
        with open(self.log_path, "ab") as log:
            # Its own session, so a Ctrl-C reaches only us: we stop it in order.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                 "--access-log", str(self.log_path.with_name("access.log")), "norn_project.asgi:application"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"daphne exited:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"daphne not listening on {self.port} after {timeout} s:\n{self.output()}")
            time.sleep(0.1)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def status(self):
        """VmRSS and VmHWM (peak) in MB, and CPU seconds used so far."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        fields["cpu"] = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        return fields

    def output(self, tail=3000):
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


def forget_channel_keys(prefix):
    """Delete what channels-redis left under our prefix (groups live a day).

    Its keys are "<prefix>:group:…" and "<prefix>specific.…"; the pattern
    does not match another run's prefix that merely starts with ours.
    """
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}[:s]*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def make_deployment(app_name):
    """A queued deployment (its event #1 is stored) and a token of a user who may view it."""
    from django.contrib.auth.models import Permission, User

    from apps_registry.models import App
    from deployments import transitions
    from deployments.models import ApiToken

    app = App.objects.create(name=app_name, directory=f"/nonexistent/{app_name}", status=App.Status.VALID,
                             role="worker")
    user = User.objects.create_user("bench-viewer")
    user.user_permissions.add(Permission.objects.get(codename="view_deployment"))
    token = ApiToken.issue(user, "bench")[1]
    return transitions.create(app, "HEAD"), token


def write_events(deployment_id, count, rate):
    """Commit `count` log events, one transaction each, as the worker does.

    Returns {seq: commit stamp} and the seconds the writing took. The stamp's
    on_commit callback is registered before record()'s, so it runs first:
    right after COMMIT returned, before the event is queued for publishing.
    `rate` events/s paces the writes; 0 writes them back to back.
    """
    from django.db import transaction

    from deployments import events

    committed = {}
    started = time.monotonic()
    for i in range(count):
        if rate:
            pause = started + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        stamp = []
        with transaction.atomic():
            transaction.on_commit(lambda: stamp.append(time.time()))
            seq = events.record(deployment_id, events.LOG, {"step": "build", "text": LINE})
        committed[seq] = stamp[0]
    return committed, time.monotonic() - started


class LayerTrouble(logging.Handler):
    """Counts what the publisher could not deliver: channels-redis reports a
    full channel at INFO ("… over capacity …"), events.py a failed send at WARNING."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.over_capacity = []
        self.failed = []

    def emit(self, record):
        text = record.getMessage()
        if "over capacity" in text:
            self.over_capacity.append(text)
        elif record.name == "deployments.events":
            self.failed.append(text)

    def install(self):
        for name, level in (("channels_redis.core", logging.INFO), ("deployments.events", logging.WARNING)):
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.addHandler(self)
            logger.propagate = False  # counted and summarized, not printed one by one
        return self

    def report(self):
        lines = [f"channel full (channels-redis 'over capacity'): {len(self.over_capacity)} group sends"]
        lines += [f"  {text}" for text in self.over_capacity[:5]]
        lines.append(f"publish failures (events.py warnings): {len(self.failed)}")
        lines += [f"  {text}" for text in self.failed[:5]]
        return lines


def memory(status):
    return f"VmRSS {status['VmRSS']:6.1f} MB (peak so far {status['VmHWM']:6.1f} MB)"


def percentiles(values, points=(50, 90, 99)):
    """Percentiles (inclusive method) and the maximum, in milliseconds."""
    if not values:
        return {**{f"p{p}": float("nan") for p in points}, "max": float("nan")}
    cuts = statistics.quantiles(list(values) * 2 if len(values) == 1 else values, n=100, method="inclusive")
    figures = {f"p{p}": cuts[p - 1] * 1000 for p in points}
    figures["max"] = max(values) * 1000
    return figures


def format_ms(figures):
    return "  ".join(f"{name} {value:7.2f}" for name, value in figures.items()) + "  (ms)"


def sequence_check(seqs, expected):
    """Counts of what a viewer got wrong: missing, duplicated, out of order."""
    return {
        "missing": len(expected - set(seqs)),
        "duplicates": len(seqs) - len(set(seqs)),
        "out_of_order": sum(1 for a, b in zip(seqs, seqs[1:]) if b < a),
        "unexpected": len(set(seqs) - expected),
    }


def machine():
    """The context the figures were taken in: other load skews them."""
    return (f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (1 min) before the run, "
            "including other processes")


def ranges(numbers):
    """'3-5, 9' for {3, 4, 5, 9}."""
    spans = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans)


def stop_process(process):
    """Ends a multiprocessing child we started (terminate, then kill)."""
    if process is None or not process.is_alive():
        return
    process.terminate()
    process.join(5)
    if process.is_alive():
        process.kill()
        process.join(5)


def clean_up(db, tmp, prefix, clients, daphne, django_ready):
    """Remove what a run made: each part, even when removing another failed.

    `clients`: a client process, or a list of them."""

    def attempt(what, action, *args):
        try:
            action(*args)
        except Exception as exc:
            print(f"cleanup: could not {what}: {exc}", file=sys.stderr)

    for client in clients if isinstance(clients, list) else [clients]:
        attempt("stop a client process", stop_process, client)
    if daphne:
        attempt("stop daphne", daphne.stop)
    if django_ready:
        from django.db import connections

        from deployments import events

        attempt("flush the publisher", events.publisher.flush, 5)
        attempt("delete the channel layer's Redis keys", forget_channel_keys, prefix)
        attempt("close the database connections", connections.close_all)
    attempt(f"drop the database {db}", drop_database, db)
    shutil.rmtree(tmp, ignore_errors=True)


def on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the cleanup in main()


# --- the client process -------------------------------------------------------


def listen(url, token, count, idle_timeout, conn, resume=None):
    """Runs in its own process: one client; sends its receive stamps to `conn`.

    `resume`: the deployment's id, which app and all sockets ask for (from
    seq 0), so that their `caught_up` comes after the subscription.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us in order
    try:
        conn.send(("result", asyncio.run(_listen(url, token, count, idle_timeout, conn, resume))))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


async def _listen(url, token, count, idle_timeout, conn, resume):
    from websockets.asyncio.client import connect

    # proxy=None: never route through an HTTP(S)_PROXY from the environment.
    async with connect(url, additional_headers={"Authorization": f"Token {token}"}, proxy=None,
                       ping_interval=None, open_timeout=idle_timeout) as ws:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + idle_timeout
        if resume:
            await ws.send(json.dumps({"type": "resume", "deployment": resume, "after": 0}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), deadline - loop.time()))
            if message["type"] == "caught_up":
                break
        caught_up = message["seq"]
        conn.send(("ready", caught_up))
        received = []  # (seq, receive stamp), in arrival order
        pending = set(range(caught_up + 1, caught_up + count + 1))
        deadline = loop.time() + idle_timeout
        while pending:
            try:
                raw = await asyncio.wait_for(ws.recv(), deadline - loop.time())
            except TimeoutError:
                break  # no event for idle_timeout s: the rest is reported missing
            at = time.time()
            message = json.loads(raw)
            if message["type"] == "event":
                # Only events extend the wait: the server's pings come every
                # 20 s and would otherwise keep a client waiting for ever.
                deadline = loop.time() + idle_timeout
                received.append((message["seq"], at))
                pending.discard(message["seq"])
        return received


# --- main ---------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000, help="events per phase (default 1000)")
    parser.add_argument("--rate", type=float, default=200,
                        help="events/s of the paced phase (default 200); 0 skips it, leaving only back to back")
    parser.add_argument("--timeout", type=float, default=15,
                        help="seconds to wait for a start-up step or for the next event (default 15)")
    parser.add_argument("--sockets", default="deployment,app,all",
                        help="socket kinds with one client each, comma-separated (default deployment,app,all)")
    args = parser.parse_args()
    kinds = [kind.strip() for kind in args.sockets.split(",") if kind.strip()]
    if not kinds or set(kinds) - set(SOCKETS):
        parser.error(f"--sockets takes some of {', '.join(SOCKETS)}")
    signal.signal(signal.SIGTERM, on_sigterm)
    phases = ([f"paced {args.rate:g}/s"] if args.rate else []) + ["back to back"]
    context = machine()
    tmp = Path(tempfile.mkdtemp(prefix="norn-bench-events-"))
    env = bench_env(DB, tmp)
    daphne = None
    clients = []
    django_ready = False
    try:
        create_database(DB, env)
        import django

        django.setup()
        django_ready = True
        from deployments import events

        trouble = LayerTrouble().install()
        deployment, token = make_deployment("bench")
        daphne = Daphne(env, tmp / "daphne.log")
        daphne.start(timeout=args.timeout)

        ctx = multiprocessing.get_context("spawn")
        total = args.events * len(phases)
        pipes = {}
        for kind in kinds:
            here, there = ctx.Pipe()
            path = SOCKETS[kind].format(deployment=deployment.public_id, app="bench")
            resume = None if kind == "deployment" else str(deployment.public_id)
            client = ctx.Process(target=listen, daemon=True,
                                 args=(f"ws://127.0.0.1:{daphne.port}{path}", token, total, args.timeout, there, resume))
            client.start()
            clients.append(client)
            pipes[kind] = here
        for kind, here in pipes.items():
            if not here.poll(args.timeout + 10):
                raise SystemExit(f"the {kind} client did not connect within {args.timeout} s:\n{daphne.output()}")
            got, value = here.recv()
            if got != "ready":
                raise SystemExit(f"the {kind} client failed: {value}\n{daphne.output()}")

        written = []
        for phase in phases:
            committed, writing = write_events(deployment.pk, args.events, args.rate if phase != "back to back" else 0)
            # What the publisher still had queued when the worker's last commit returned.
            flushing = time.monotonic()
            events.publisher.flush(timeout=args.timeout)
            written.append((phase, committed, writing, time.monotonic() - flushing))
            time.sleep(0.5)  # the phase's last events arrive before the next phase starts
        results = {}
        for kind, here in pipes.items():
            # Bounded: the client gives up idle_timeout after its last event.
            if not here.poll(args.timeout * 3):
                raise SystemExit(f"the {kind} client did not report back")
            got, received = here.recv()
            if got != "result":
                raise SystemExit(f"the {kind} client failed: {received}\n{daphne.output()}")
            results[kind] = received

        print(f"machine:    {context}")
        print(f"events:     {args.events} log events per phase, one transaction each; one client on each of: "
              + ", ".join(SOCKETS[kind] for kind in kinds))
        print("latency:    worker's on_commit (right after COMMIT, before the event is queued for the")
        print(f"            publisher thread) -> the client's recv() returned; target p99 < {TARGET_MS} ms")
        expected = set().union(*(committed for _, committed, _, _ in written))
        for phase, committed, writing, flushing in written:
            print(f"{phase}: worker {args.events / writing:.0f} commits/s; publisher queue drained "
                  f"{flushing * 1000:.0f} ms after the last commit")
            for kind, received in results.items():
                arrived = dict(received)
                latencies = [arrived[seq] - at for seq, at in committed.items() if seq in arrived]
                figures = percentiles(latencies)
                verdict = "met" if figures["p99"] < TARGET_MS else "MISSED"
                last = max((arrived[seq] for seq in committed if seq in arrived), default=float("nan"))
                print(f"  {kind + ':':11s} {format_ms(figures)}  p99 target {verdict}; "
                      f"{len(latencies) / (last - min(committed.values())):.0f} events/s delivered")
        for kind, received in results.items():
            check = sequence_check([seq for seq, _ in received], expected)
            print(f"received:   {kind}: {len(received)} of {len(expected)}; "
                  + ", ".join(f"{k} {v}" for k, v in check.items()))
            if check["missing"]:
                print(f"            missing seq {ranges(expected - {seq for seq, _ in received})}")
        print(f"daphne:     {memory(daphne.status())}")
        for line in trouble.report():
            print(line)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        clean_up(DB, tmp, env["NORN_CHANNEL_PREFIX"], clients, daphne, django_ready)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted (daphne, the client, the database and the Redis keys were removed)")
