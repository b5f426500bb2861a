#!/usr/bin/env python
"""Benchmark: many WebSocket viewers of one deployment on one or more daphne processes.

Starts one daphne (or --daphnes N, sharing one listening socket: each
adopts it with `daphne --fd`, and the kernel hands each new connection to
one of them) on a free loopback port against a fresh database, connects
V viewers (default 500) to /ws/deployments/<uuid>/ from one asyncio process
(or --clients N, the viewers spread over them; the websockets library, API
token), waits until every viewer had its
`caught_up`, then acts as the worker: commits N log events (default 200) with
deployments.events.record, one transaction each, at --rate events/s.

Prints whether every viewer got every event in order, without gaps or
duplicates (counts), the latency from each event's commit (an on_commit
stamp, right after COMMIT) to each viewer's recv() returning (p50/p99/max
over all viewer x event pairs, and until the last viewer had it), and
daphne's resident memory (VmRSS) before connecting, with the viewers
connected, after the events and after they disconnected. The client
processes' CPU time is printed too: they share the machine with daphne, and
a busy client adds to the latency it measures.

    .venv/bin/python bench/fanout.py [--viewers 500] [--events 200] [--rate 4] [--daphnes 1] [--clients 1]

Needs PostgreSQL and Redis (scripts/services); uses its own database
norn_bench_fanout and channel prefix norn-bench-<pid>, and removes both,
daphne and the clients when it ends (also on Ctrl-C). The setup helpers are
bench/event_latency.py's.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from event_latency import (
    Daphne,
    LayerTrouble,
    bench_env,
    clean_up,
    create_database,
    format_ms,
    machine,
    make_deployment,
    on_sigterm,
    percentiles,
    raise_open_files,
    ranges,
    sequence_check,
    write_events,
)

DB = "norn_bench_fanout"
# How an event's frame starts (consumers._frame, json.dumps' separators).
EVENT_FRAME = '{"type": "event"'
ROOT = Path(__file__).resolve().parent.parent


class SharedDaphne(Daphne):
    """One of several daphnes serving one listening socket (`daphne --fd`)."""

    def __init__(self, env, log_path, listener):
        # INFO: daphne's "Configuring endpoint" line says it adopted the socket.
        super().__init__({**env, "NORN_LOG_LEVEL": "INFO"}, log_path)
        self.listener = listener
        self.port = listener.getsockname()[1]

    def start(self, timeout=30):
        fd = self.listener.fileno()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daphne", "--fd", str(fd),
                 "--access-log", str(self.log_path.with_suffix(".access")), "norn_project.asgi:application"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                pass_fds=[fd],
            )
        deadline = time.monotonic() + timeout
        # Listening from the start (the socket is ours); ready once it logged its start.
        while "Configuring endpoint" not in self.output() and "Listening" not in self.output():
            if self.proc.poll() is not None:
                raise SystemExit(f"daphne exited:\n{self.output()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"daphne did not start within {timeout} s:\n{self.output()}")
            time.sleep(0.1)


class Daphnes:
    """N daphne processes behind one port; status() sums them."""

    def __init__(self, env, tmp, count):
        if count == 1:
            self.members = [Daphne(env, tmp / "daphne.log")]
        else:
            self.listener = socket.socket()
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(("127.0.0.1", 0))
            self.listener.listen(1024)
            os.set_inheritable(self.listener.fileno(), True)
            self.members = [SharedDaphne(env, tmp / f"daphne-{i}.log", self.listener) for i in range(count)]
        self.port = self.members[0].port

    def start(self, timeout):
        for member in self.members:
            member.start(timeout=timeout)

    def stop(self):
        for member in self.members:
            member.stop()

    def status(self):
        states = [member.status() for member in self.members]
        return {key: sum(state[key] for state in states) for key in states[0]} | {"each": states}

    def output(self):
        return "\n".join(member.output() for member in self.members)


# --- the client process -------------------------------------------------------


def watch(url, token, viewers, count, concurrency, timeout, conn):
    """Runs in its own process: all viewers, on one event loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us in order
    try:
        asyncio.run(_watch(url, token, viewers, count, concurrency, timeout, conn))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


async def _watch(url, token, viewers, count, concurrency, timeout, conn):
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    # Handshakes in flight at once: each costs daphne a few queries (token,
    # deployment, replay), and a storm of 500 would only test the backlog.
    handshakes = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()

    async def open_viewer():
        async with handshakes:
            # proxy=None: never route through an HTTP(S)_PROXY from the environment.
            ws = await connect(url, additional_headers={"Authorization": f"Token {token}"}, proxy=None,
                               ping_interval=None, open_timeout=timeout)
            try:
                deadline = loop.time() + timeout
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), deadline - loop.time()))
                    if message["type"] == "caught_up":
                        return ws, message["seq"]
            except BaseException:
                await ws.close()
                raise

    async def read(ws):
        """(seq, receive stamp) of every event, until all arrived or none for `timeout` s.

        Frames are parsed after the last one: the client shares the CPUs with
        daphne, and its own per-frame work (a wait_for task, a JSON parse)
        would add to the latency it measures.
        """
        frames, events, closed = [], 0, None
        try:
            async with asyncio.timeout(timeout) as idle:
                while events < count:
                    raw = await ws.recv()
                    frames.append((raw, time.time()))
                    # The server's pings (every 20 s) neither count nor
                    # extend the wait: a viewer ends `timeout` s after its
                    # last event.
                    if raw.startswith(EVENT_FRAME):
                        events += 1
                        idle.reschedule(loop.time() + timeout)
        except TimeoutError:
            pass
        except ConnectionClosed as exc:
            closed = f"closed by the server: {exc}"
        received = []
        for raw, at in frames:
            message = json.loads(raw)
            if message["type"] == "event":
                received.append((message["seq"], at))
        return received, closed

    started = time.monotonic()
    opened = await asyncio.gather(*(open_viewer() for _ in range(viewers)), return_exceptions=True)
    sockets = [o for o in opened if not isinstance(o, BaseException)]
    errors = [f"{type(o).__name__}: {o}" for o in opened if isinstance(o, BaseException)]
    conn.send(("ready", {"connected": len(sockets), "errors": errors, "seconds": time.monotonic() - started}))

    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    results = await asyncio.gather(*(read(ws) for ws, _ in sockets))
    after = resource.getrusage(resource.RUSAGE_SELF)
    conn.send(("received", {
        "viewers": [received for received, _ in results],
        "closed": [closed for _, closed in results if closed],
        "seconds": time.monotonic() - started,
        "cpu": after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime,
    }))

    # Stay connected until the parent measured daphne with everyone on (bounded).
    await loop.run_in_executor(None, conn.poll, timeout * 4)
    started = time.monotonic()
    await asyncio.gather(*(ws.close() for ws, _ in sockets), return_exceptions=True)
    conn.send(("closed", {"seconds": time.monotonic() - started}))


def shares(viewers, clients):
    """`viewers` spread over `clients` processes as evenly as can be."""
    return [viewers // clients + (1 if i < viewers % clients else 0) for i in range(clients)]


def merge(reports):
    """One report of all client processes: lists joined, CPU seconds and
    connections summed, other figures (seconds: they ran at once) the largest."""
    merged = {}
    for report in reports:
        for key, value in report.items():
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            elif key in ("cpu", "connected"):
                merged[key] = merged.get(key, 0) + value
            else:
                merged[key] = max(merged.get(key, 0), value)
    return merged


def expect(here, kind, timeout, daphne):
    """The client's next message, which must be `kind`, within `timeout` seconds."""
    if not here.poll(timeout):
        raise SystemExit(f"the client sent no {kind!r} within {timeout:.0f} s\n{daphne.output()}")
    got, value = here.recv()
    if got != kind:
        raise SystemExit(f"the client failed ({got}): {value}\n{daphne.output()}")
    return value


def memory(status):
    text = f"VmRSS {status['VmRSS']:6.1f} MB (peak so far {status['VmHWM']:6.1f} MB)"
    if len(status.get("each", [])) > 1:
        text += " in all; each " + ", ".join(f"{state['VmRSS']:.1f}" for state in status["each"])
    return text


# --- main ---------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=500, help="WebSocket clients (default 500)")
    parser.add_argument("--events", type=int, default=200, help="events to write (default 200)")
    parser.add_argument("--rate", type=float, default=4,
                        help="events/s the worker writes (default 4: one command's output, flushed every "
                        "0.25 s by deployments/runner.py); 0 writes them back to back")
    parser.add_argument("--handshakes", type=int, default=50,
                        help="viewer handshakes in flight at once while connecting (default 50)")
    parser.add_argument("--timeout", type=float, default=15,
                        help="seconds to wait for a start-up step, or a viewer for its next event (default 15)")
    parser.add_argument("--daphnes", type=int, default=1,
                        help="daphne processes behind the one port (default 1)")
    parser.add_argument("--clients", type=int, default=1,
                        help="client processes the viewers are spread over (default 1)")
    args = parser.parse_args()
    if args.daphnes < 1:
        parser.error("--daphnes must be at least 1")
    if not 1 <= args.clients <= args.viewers:
        parser.error("--clients must be at least 1 and at most --viewers")
    signal.signal(signal.SIGTERM, on_sigterm)
    # One descriptor per WebSocket in daphne and in the client (both inherit this).
    raise_open_files(args.viewers + 1024)
    context = machine()
    tmp = Path(tempfile.mkdtemp(prefix="norn-bench-fanout-"))
    env = bench_env(DB, tmp)
    daphne = None
    clients = []
    django_ready = False
    try:
        create_database(DB, env)
        import django

        django.setup()
        django_ready = True
        import redis
        from django.conf import settings

        from deployments import events

        trouble = LayerTrouble().install()
        deployment, token = make_deployment("bench")
        daphne = Daphnes(env, tmp, args.daphnes)
        daphne.start(timeout=args.timeout)
        time.sleep(1)  # settle: daphne has imported everything it needs
        before = daphne.status()

        ctx = multiprocessing.get_context("spawn")
        url = f"ws://127.0.0.1:{daphne.port}/ws/deployments/{deployment.public_id}/"
        pipes = []
        for share in shares(args.viewers, args.clients):
            here, there = ctx.Pipe()
            clients.append(ctx.Process(target=watch, daemon=True, args=(
                url, token, share, args.events, max(1, args.handshakes // args.clients), args.timeout, there)))
            clients[-1].start()
            pipes.append(here)
        ready = merge([expect(here, "ready", args.timeout * 4, daphne) for here in pipes])
        time.sleep(1)
        connected = daphne.status()
        # The pub/sub layer's channel of the group every event goes to: one
        # subscriber per web process with viewers (deployments/livehub.py), not one per viewer.
        redis_client = redis.Redis.from_url(settings.REDIS_URL)
        [(_, subscribers)] = redis_client.pubsub_numsub(f"{env['NORN_CHANNEL_PREFIX']}__group__{events.GROUP}")
        redis_client.close()

        committed, writing = write_events(deployment.pk, args.events, args.rate)
        flushing = time.monotonic()
        events.publisher.flush(timeout=args.timeout)
        flushing = time.monotonic() - flushing
        # Bounded: each viewer gives up `timeout` s after its last event, and
        # a daphne slower than 200 frames/s is broken, not slow.
        received = merge([expect(here, "received", args.timeout * 2 + args.viewers * args.events / 200, daphne)
                          for here in pipes])
        loaded = daphne.status()
        for here in pipes:
            here.send("close")
        closed = merge([expect(here, "closed", args.timeout * 2, daphne) for here in pipes])
        time.sleep(1)
        after = daphne.status()

        expected = set(committed)
        checks = [sequence_check([seq for seq, _ in viewer], expected) for viewer in received["viewers"]]
        latencies, last_viewer = [], {}
        for viewer in received["viewers"]:
            for seq, at in viewer:
                if seq in committed:
                    latency = at - committed[seq]
                    latencies.append(latency)
                    last_viewer[seq] = max(last_viewer.get(seq, 0), latency)
        complete = sum(1 for check in checks if not any(check.values()))
        totals = {key: sum(check[key] for check in checks) for key in checks[0]} if checks else {}
        frames = sum(len(viewer) for viewer in received["viewers"])
        last_receive = max((at for viewer in received["viewers"] for _, at in viewer), default=float("nan"))
        delivering = last_receive - min(committed.values())
        pace = f"paced at {args.rate:g}/s" if args.rate else "written back to back"

        print(f"machine:          {context}")
        print(f"daphne:           {args.daphnes} process(es) on one port")
        print(f"viewers:          {ready['connected']} of {args.viewers} connected and caught up in "
              f"{ready['seconds']:.1f} s ({args.handshakes} handshakes at a time); "
              f"{subscribers} Redis subscriber(s) of the events' group (one per web process)")
        for error in ready["errors"][:5]:
            print(f"  connect failed: {error}")
        print(f"events:           {args.events} log events, one transaction each, {pace} "
              f"({args.events / writing:.0f}/s achieved); publisher queue drained {flushing * 1000:.0f} ms "
              "after the last commit")
        print(f"delivery:         {complete} of {len(checks)} viewers got every event in order; totals over "
              "all viewers: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
        missed = set()
        for viewer in received["viewers"]:
            missed |= expected - {seq for seq, _ in viewer}
        if missed:
            print(f"  missed by at least one viewer: seq {ranges(missed)}")
        for reason in received["closed"][:5]:
            print(f"  viewer {reason}")
        print("latency:          worker's on_commit (right after COMMIT) -> a viewer's recv() returned")
        print(f"  every viewer:   {format_ms(percentiles(latencies))}")
        print(f"  last viewer:    {format_ms(percentiles(list(last_viewer.values())))}  (per event, until all had it)")
        print(f"throughput:       {frames} frames in {delivering:.2f} s (first commit to last receive): "
              f"{frames / delivering:.0f} frames/s")
        print(f"cpu:              daphne {loaded['cpu'] - connected['cpu']:.1f} s, {args.clients} client "
              f"process(es) {received['cpu']:.1f} s, over the {received['seconds']:.1f} s the viewers read")
        print(f"daphne memory:    before connecting    {memory(before)}")
        print(f"                  {ready['connected']} connected        {memory(connected)}")
        print(f"                  after the events     {memory(loaded)}")
        print(f"                  all disconnected     {memory(after)}  (closing took {closed['seconds']:.1f} s)")
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
