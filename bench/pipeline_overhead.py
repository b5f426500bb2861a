#!/usr/bin/env python
"""Benchmark: what Norn adds over a plain shell script running the same deploy.

Two apps, each deployed N times through Norn and N times by a shell script
doing the same work, interleaved (Norn, script, script, Norn, ...):

- webserver: git clone, docker build, a test container, pg_dump of the app's
  database, a migration container, then the switch: the new container on a
  port of its own, its health check polled until it passes 3 times in a row,
  the ingress (a Caddy of each side's own) switched to it through its admin
  API, the old container renamed out of the way and the new one given its
  name; cleanup; the old one is stopped and removed after the end (Norn's
  worker drains it first, then does the same).
- cron: the same up to the migration, then registering the image.

Norn's side is what a user runs: `manage.py deploy <app>` (the CLI: it
queues the deployment and follows it over the WebSocket of a running daphne
to the end; a qcluster worker runs the steps), timed from the command's
start to its exit. The test and migration containers run with the same
docker flags on both sides (deployments/containers.py): the app's network,
the limits, an env file. The migration does not touch the database (the
image has no psql); pg_dump does, on the host, as Norn does.

Prints per app the medians, Norn over the script (target: <= 1.10x, aim
1.05x), where Norn's time went (per step, from its own records), and the
peak resident memory of the worker and of daphne (target: < 150 MB each).

    .venv/bin/python bench/pipeline_overhead.py [--runs 5] [--apps webserver,cron] [--each]

Needs the services from scripts/services (PostgreSQL, Redis, Docker, the
apps' PostgreSQL, caddy); uses its own databases norn_bench, norn_bench_app
and norn_bench_web, channel prefix norn-bench-<pid> and Caddy instances of its
own, and removes them (and its containers and networks) at the end.
"""

import argparse
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB = "norn_bench"
APP_DBS = {"bench": "norn_bench_app", "benchweb": "norn_bench_web"}  # one per app, as Norn requires
APPS = ("webserver", "cron")
NAMES = {"webserver": "benchweb", "cron": "bench"}

SERVE = 'CMD trap "exit 0" TERM; httpd -f -p "$PORT" -h /www & wait\n'


def sh(*argv, **kwargs):
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True, **kwargs)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git_repo(tmp, name, files):
    src = tmp / f"src-{name}"
    src.mkdir()
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"}
    sh("git", "init", "-q", "--initial-branch=main", src)
    sh("git", "-C", src, "add", "-A")
    sh("git", "-C", src, "commit", "-q", "-m", "bench", env=env)
    sh("git", "clone", "-q", "--bare", src, tmp / f"{name}.git")


def prepare(tmp, web_port):
    """Both apps with their own git repositories, and fresh databases."""
    git_repo(tmp, "bench", {
        "Dockerfile": "FROM norn-busybox:1\nCOPY report.sh /report.sh\nCMD [\"sh\", \"/report.sh\"]\n",
        "report.sh": "echo report\n",
    })
    git_repo(tmp, "benchweb", {
        "Dockerfile": f"FROM norn-busybox:1\nCOPY www/ /www/\n{SERVE}",
        "www/index.html": "bench\n", "www/healthz": "ok\n",
    })
    common = """\
        build:
          test: "true"
        services:
          postgres:
            database: {database}
        migrations:
          command: echo migrated
    """
    specs = {
        "bench": f"""\
            app: bench
            role: cron
            repo:
              url: file://{tmp / 'bench.git'}
            schedule: "0 3 * * *"
            command: ["sh", "/report.sh"]
        """,
        "benchweb": f"""\
            app: benchweb
            role: webserver
            repo:
              url: file://{tmp / 'benchweb.git'}
            port: {web_port}
            healthcheck: /healthz
        """,
    }
    for name, text in specs.items():
        directory = tmp / "apps" / name
        directory.mkdir(parents=True)
        (directory / "infraspec.yaml").write_text(
            textwrap.dedent(text) + textwrap.dedent(common).format(database=APP_DBS[name])
        )
    sh("psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    sh("createdb", "-h", "127.0.0.1", "-U", "postgres", DB)
    # The app's database lives on the apps' server, as Norn's snapshot step
    # needs it; Norn creates it (and its role) at the first deploy.
    for database in APP_DBS.values():
        sh("psql", "-c", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)", env={**os.environ, **apps_server_env()})


def apps_server_env():
    """libpq's variables for the apps' PostgreSQL server (NORN_APP_DATABASES_URL)."""
    from urllib.parse import unquote, urlsplit

    url = urlsplit(os.environ["NORN_APP_DATABASES_URL"])
    return {"PGHOST": url.hostname, "PGPORT": str(url.port or 5432), "PGUSER": unquote(url.username or ""),
            "PGPASSWORD": unquote(url.password or ""), "PGDATABASE": "postgres"}


PREAMBLE = """\
set -e
mark() {{ echo "$1 $EPOCHREALTIME" >> "$MARKS"; }}
mark clone
work=$(mktemp -d "$TMP/script-XXXX")
git clone -q --depth 1 --branch main -- "file://$TMP/$APP.git" "$work/src"
sha=$(git -C "$work/src" rev-parse HEAD)
mark build
DOCKER_BUILDKIT=0 docker build -q --force-rm -f "$work/src/Dockerfile" -t "$APP-script:$sha" "$work/src" >/dev/null 2>&1
docker network inspect --format '{{{{.Name}}}}' "script-$APP" >/dev/null 2>&1 || docker network create --label norn.app=script-$APP "script-$APP" >/dev/null
mark test
umask 077
printf 'NORN_APP=%s\\nNORN_COMMIT=%s\\n' "$APP" "$sha" > "$work/test.env"
docker run --rm --init --name "script-test-$$" --label norn.app=script-$APP --label norn.purpose=test \\
  --network "script-$APP" {flags} \\
  --volume "$work/src:/workspace" --workdir /workspace --env-file "$work/test.env" \\
  --entrypoint /bin/sh "$APP-script:$sha" -c "true"
mark snapshot
pg_dump -Fc -d {app_db} -f "$work/snapshot.dump"
mark migrate
printf 'NORN_APP=%s\\nNORN_COMMIT=%s\\nPGHOST=host.docker.internal\\nPGDATABASE={app_db}\\n' "$APP" "$sha" > "$work/migrate.env"
docker run --rm --init --name "script-migrate-$$" --label norn.app=script-$APP --label norn.purpose=migrate \\
  --network "script-$APP" {flags} \\
  --env-file "$work/migrate.env" --entrypoint /bin/sh "$APP-script:$sha" -c "echo migrated" >/dev/null
"""

CRON = """\
mark deploy
docker image inspect --format '{{{{.Id}}}}' "$APP-script:$sha" >/dev/null
mark cleanup
rm -rf "$work"
mark end
"""

# The switch, as a careful script would do it: the new container beside the
# old one, 3 health checks in a row, the ingress's route, then the old one goes.
WEBSERVER = """\
mark deploy
name="script-$APP"
printf 'PORT=%s\\n' "$BACKEND" > "$work/app.env"
docker create --name "$name-next" --network "script-$APP" {flags} --init --restart unless-stopped \\
  --label norn.app=script-$APP --publish "127.0.0.1:$BACKEND:$BACKEND" --env-file "$work/app.env" \\
  "$APP-script:$sha" >/dev/null
docker start "$name-next" >/dev/null
passes=0
until [ "$passes" -ge 3 ]; do
  if curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:$BACKEND/healthz"; then passes=$((passes + 1)); else passes=0; fi
  [ "$passes" -ge 3 ] || sleep 0.1
done
curl -fsS --unix-socket "$CADDY_SOCKET" -H 'Host;' -H 'Content-Type: application/json' \\
  --data "$CADDY_CONFIG" http://ingress/load
# As Norn does: the old one is renamed out of the way at once and retired
# after the end (here without a drain), the new one takes its name.
if docker inspect --type container "$name" >/dev/null 2>&1; then
  docker rm --force "$name.retiring" >/dev/null 2>&1 || true  # the last run's, if still there
  docker rename "$name" "$name.retiring"
  docker rename "$name-next" "$name"
  (docker stop --timeout 10 "$name.retiring"; docker rm --force "$name.retiring") >/dev/null 2>&1 &
else
  docker rename "$name-next" "$name"
fi
mark cleanup
rm -rf "$work"
mark end
"""


def script_config(admin, port, backend):
    """The script's Caddy config: its app's port to the new backend."""
    return json.dumps({"admin": {"listen": admin}, "apps": {"http": {"servers": {"app": {
        "listen": [f"127.0.0.1:{port}"], "automatic_https": {"disable": True},
        "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": f"127.0.0.1:{backend}"}]}]}],
    }}}}})


def run_script(tmp, which, script_ingress, script_port):
    from deployments import containers

    flags = " ".join(shlex.quote(a) for a in [*containers.ADD_HOST, *containers.limits()])
    text = PREAMBLE + (WEBSERVER if which == "webserver" else CRON)
    backend = free_port()
    env = {**os.environ, **apps_server_env(), "TMP": str(tmp), "APP": NAMES[which], "BACKEND": str(backend),
           "CADDY_SOCKET": str(script_ingress.socket),
           "CADDY_CONFIG": script_config(script_ingress.admin, script_port, backend)}
    if os.environ.get("BENCH_TRACE"):
        text = "PS4='+ $EPOCHREALTIME '; set -x\n" + text
    marks = tmp / "script-marks"
    marks.unlink(missing_ok=True)
    env["MARKS"] = str(marks)
    started = time.monotonic()
    subprocess.run(["bash", "-c", text.format(app_db=APP_DBS[NAMES[which]], flags=flags)], check=True, env=env)
    elapsed = time.monotonic() - started
    points = [line.split() for line in marks.read_text().splitlines()]
    steps = ", ".join(f"{name} {float(end) - float(start):.2f}" for (name, start), (_, end) in zip(points, points[1:]))
    return elapsed, steps


def rss_mb(pids):
    peak = 0.0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
    return peak


def family(pid):
    """pid and its descendants."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


class Memory:
    """Samples the peak RSS of the worker and daphne process trees while a command runs."""

    def __init__(self, worker, web):
        self.worker, self.web = worker, web
        self.peak = {"worker": 0.0, "web": 0.0}

    def run(self, argv, env):
        """Run `argv`; (exit code, output, seconds from start to exit)."""
        with tempfile.TemporaryFile("w+") as out:
            started = time.monotonic()
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
            # Sampled from a thread: the time is the command's own, not
            # rounded up to the next sample.
            done = threading.Event()
            sampler = threading.Thread(target=self._sample, args=(done,), daemon=True)
            sampler.start()
            code = proc.wait()
            elapsed = time.monotonic() - started
            done.set()
            sampler.join()
            out.seek(0)
            return code, out.read(), elapsed

    def _sample(self, done):
        # Seldom: the sampling itself takes CPU from the deploy it watches.
        while not done.wait(0.25):
            self.peak["worker"] = max(self.peak["worker"], rss_mb(family(self.worker.pid)))
            self.peak["web"] = max(self.peak["web"], rss_mb(family(self.web.pid)))


def step_times(app, cli):
    """Where the last deployment of `app` spent its time: the CLI before it
    was queued, per step and between them, the CLI after it ended."""
    from deployments.models import Deployment

    deployment = Deployment.objects.filter(app__name=app).order_by("-pk").first()
    steps = list(deployment.steps.order_by("position"))
    parts = [f"CLI start->queued {deployment.queued_at.timestamp() - cli[0]:.2f}",
             f"queued->start {(deployment.started_at - deployment.queued_at).total_seconds():.2f}"]
    previous_end = deployment.started_at
    for step in steps:
        if step.started_at and step.finished_at:
            gap = (step.started_at - previous_end).total_seconds()
            parts.append(f"{step.name} {(step.finished_at - step.started_at).total_seconds():.2f}"
                         + (f" (+{gap:.2f} before)" if gap >= 0.01 else ""))
            previous_end = step.finished_at
    parts.append(f"end {(deployment.finished_at - previous_end).total_seconds():.2f}")
    parts.append(f"finished->CLI exit {cli[1] - deployment.finished_at.timestamp():.2f}")
    return ", ".join(parts)


def start_services(tmp, env):
    """daphne, a qcluster worker and the two Caddy instances."""
    from tests.support.ingress import IngressService

    norn_ingress = IngressService(tmp / "ingress-norn").start()
    script_ingress = IngressService(tmp / "ingress-script").start()
    env.update(norn_ingress.environ)
    os.environ.update(norn_ingress.environ)
    port = free_port()
    log = open(tmp / "services.log", "ab")
    web = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                            "norn_project.asgi:application"], cwd=ROOT, env=env, stdout=log, stderr=log,
                           start_new_session=True)
    worker = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=log,
                              stderr=log, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or web.poll() is not None:
                raise SystemExit("daphne did not start: " + (tmp / "services.log").read_text()[-2000:])
            time.sleep(0.1)
    env["NORN_URL"] = f"http://127.0.0.1:{port}"
    return web, worker, norn_ingress, script_ingress


def stop(proc, sig=15):
    if proc and proc.poll() is None:
        os.kill(proc.pid, sig)  # the main process only: it stops its own children in order
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--apps", default=",".join(APPS), help="webserver,cron (the default) or one of them")
    parser.add_argument("--each", action="store_true", help="print where each run's time went, as it ends")
    args = parser.parse_args()
    which_apps = [a for a in args.apps.split(",") if a]
    if not which_apps or set(which_apps) - set(APPS):
        parser.error(f"--apps: use {', '.join(APPS)}")
    # The bytecode scripts/bootstrap and deploy/install.sh leave, for the
    # source as it is now: where PYTHONDONTWRITEBYTECODE is set, each command
    # would otherwise compile Norn's modules again, which no installed Norn does.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "manage.py", "norn_project", "deployments",
                    "apps_registry"], cwd=ROOT, check=True)
    tmp = Path(tempfile.mkdtemp(prefix="norn-bench-"))
    if not os.environ.get("NORN_APP_DATABASES_URL"):
        url_file = Path(os.environ.get("NORN_SERVICES_STATE_DIR", "/var/lib/norn-services")) / "apps-database-url"
        try:
            os.environ["NORN_APP_DATABASES_URL"] = url_file.read_text().strip()
        except OSError:
            raise SystemExit(f"NORN_APP_DATABASES_URL is not set and {url_file} is not readable: run scripts/services")
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB}",
        "NORN_APPS_DIR": str(tmp / "apps"),
        "NORN_WORK_DIR": str(tmp / "work"),
        "NORN_SNAPSHOT_DIR": str(tmp / "snapshots"),
        "NORN_RUNTIME": "docker",
        "NORN_WORKERS": "1",
        "NORN_LOG_LEVEL": "WARNING",
        "NORN_CHANNEL_PREFIX": f"norn-bench-{os.getpid()}",
        # DEBUG is off by default, so Norn needs a key (as the other benches give it).
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "norn-bench-" + os.urandom(16).hex(),
    }
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "norn_project.settings"
    web = worker = norn_ingress = script_ingress = None
    web_port, script_port = free_port(), free_port()
    try:
        from tests.support.docker_images import ensure_busybox_base_image

        ensure_busybox_base_image()  # the apps' FROM norn-busybox:1, made locally (no Docker Hub)
        prepare(tmp, web_port)
        sh(sys.executable, "manage.py", "migrate", "--no-input", cwd=ROOT, env=env)
        sh(sys.executable, "manage.py", "sync_apps", cwd=ROOT, env=env)
        web, worker, norn_ingress, script_ingress = start_services(tmp, env)
        import django

        django.setup()
        from django.contrib.auth import get_user_model

        from deployments.models import ApiToken, Deployment

        user = get_user_model().objects.create_superuser("bench", "bench@example.com", None)
        env["NORN_API_TOKEN"] = ApiToken.issue(user, "bench")[1]
        memory = Memory(worker, web)
        deploy = [sys.executable, "manage.py", "deploy"]

        last_cli = {}

        def norn(which):
            wall = time.time()
            code, output, elapsed = memory.run([*deploy, NAMES[which]], env)
            last_cli[which] = (wall, wall + elapsed)
            if code != 0:
                raise SystemExit(f"manage.py deploy {NAMES[which]} exited {code}:\n{output[-3000:]}")
            # The path users take: queued by the server's API (the CLI's fast
            # path sets the token's user; the full command queues without one)
            # and followed live, not from the database.
            latest = Deployment.objects.filter(app__name=NAMES[which]).order_by("-pk").first()
            if latest.requested_by_id is None or "from the database" in output:
                raise SystemExit(f"manage.py deploy {NAMES[which]} did not take the fast path:\n{output[-3000:]}")
            return elapsed

        results = {}
        for which in which_apps:
            # Warm the docker build cache and both sides' first deploys.
            norn(which)
            run_script(tmp, which, script_ingress, script_port)
            times = {"norn": [], "script": []}
            script_steps = ""
            for run in range(args.runs):
                order = ("norn", "script") if run % 2 == 0 else ("script", "norn")
                for side in order:
                    if side == "norn":
                        times["norn"].append(norn(which))
                        if args.each:
                            print("Norn  ", f"{times['norn'][-1]:.2f}", step_times(NAMES[which], last_cli[which]),
                                  flush=True)
                    else:
                        elapsed, script_steps = run_script(tmp, which, script_ingress, script_port)
                        times["script"].append(elapsed)
                        if args.each:
                            print("script", f"{elapsed:.2f}", script_steps, flush=True)
            results[which] = (times, step_times(NAMES[which], last_cli[which]), script_steps)

        print(f"runs per side:        {args.runs} (interleaved), load average {os.getloadavg()[0]:.2f}")
        for which, (times, steps, script_steps) in results.items():
            n, s = statistics.median(times["norn"]), statistics.median(times["script"])
            print(f"\n{which} ({NAMES[which]}):")
            print(f"  shell script median:  {s:.3f} s   {' '.join(f'{t:.2f}' for t in times['script'])}")
            print(f"  Norn median:          {n:.3f} s   {' '.join(f'{t:.2f}' for t in times['norn'])}"
                  "  (manage.py deploy: queue, follow to the end)")
            print(f"  Norn over script:     {n / s:.2f}x, +{n - s:.3f} s (target: <= 1.10x)")
            print(f"  last Norn deploy:     {steps}")
            print(f"  last script run:      {script_steps}")
        print(f"\nworker peak RSS:      {memory.peak['worker']:.1f} MB (target: < 150 MB)")
        print(f"web (daphne) peak RSS: {memory.peak['web']:.1f} MB (target: < 150 MB)")
    finally:
        stop(worker)
        stop(web)
        for ingress_service in (norn_ingress, script_ingress):
            if ingress_service:
                ingress_service.stop()
        for app in ("bench", "benchweb", "script-bench", "script-benchweb"):
            ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=norn.app={app}"],
                                 capture_output=True, text=True).stdout.split()
            if ids:
                subprocess.run(["docker", "rm", "--force", *ids], capture_output=True)
            subprocess.run(["docker", "network", "rm", f"norn-{app}", app], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
