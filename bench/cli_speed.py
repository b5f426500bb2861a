#!/usr/bin/env python
"""Benchmark: what the CLI costs around a deployment (issue 13, "CLI start-up").

Prints, as medians of interleaved runs:
- start-up: `manage.py deploy --help` and `manage.py check` against a bare
  `python -c pass` and `python -c "import django; django.setup()"` (the floor
  any manage.py command pays), with the ratios;
- a real `manage.py deploy bench main` of a small cron app (git clone, docker
  build, register) through a real daphne (NORN_URL and an API token: the
  fast path, deployments/remote.py, which queues through the server's API and
  follows the live stream) and a real qcluster worker: the CLI's own overhead, i.e. from the
  command's start to the deployment being queued (its queued_at) plus from the
  deployment's end (its finished_at) to the command's exit;
- `manage.py follow <id>` of a finished deployment.
Targets: deploy --help <= 0.4 s; overhead <= 0.3 s; follow of a finished
deployment <= 0.5 s; the end reaches the follower within 50 ms.

    .venv/bin/python bench/cli_speed.py [--starts 10] [--deploys 5] [--follows 10]

Needs the services from scripts/services (PostgreSQL, Redis, Docker); uses its
own database norn_bench_cli and channel prefix norn-bench-cli-<pid>, and stops
daphne and the worker and drops both when it ends (also on Ctrl-C).
"""

import argparse
import datetime
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import event_latency as common  # noqa: E402  (the setup and cleanup helpers)

DB = "norn_bench_cli"
PY = sys.executable


def make_app(tmp):
    """A cron app with its own git repository (branch main): a deploy clones,
    builds and registers an image, and `main` makes the CLI check the ref."""
    src = tmp / "src"
    src.mkdir()
    (src / "Dockerfile").write_text('FROM norn-busybox:1\nCOPY report.sh /report.sh\nCMD ["sh", "/report.sh"]\n')
    (src / "report.sh").write_text("echo report\n")
    git_env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x",
               "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"}
    common.sh("git", "init", "-q", "--initial-branch=main", src)
    common.sh("git", "-C", src, "add", "-A")
    common.sh("git", "-C", src, "commit", "-q", "-m", "bench", env=git_env)
    common.sh("git", "clone", "-q", "--bare", src, tmp / "bench.git")
    app = tmp / "apps" / "bench"
    app.mkdir(parents=True)
    (app / "infraspec.yaml").write_text(textwrap.dedent(f"""\
        app: bench
        role: cron
        repo:
          url: file://{tmp / 'bench.git'}
        build:
          dockerfile: Dockerfile
        schedule: "0 3 * * *"
        command: ["sh", "/report.sh"]
    """))


def api_token():
    from django.contrib.auth.models import Permission, User

    from deployments.models import ApiToken

    user = User.objects.create_user("bench-cli")
    for codename in ("view_deployment", "start_deployment"):  # what a deployer has
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return ApiToken.issue(user, "bench")[1]


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv, env, cpu=None):
    """Wall time of one run; its CPU time (user + system) goes to `cpu`,
    which a busy machine inflates less than the wall time."""
    started, cpu_before = time.monotonic(), children_cpu()
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[1:])} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    if cpu is not None:
        cpu.append(children_cpu() - cpu_before)
    return elapsed


def start_up(env, rounds):
    """Each round runs every command once, in turn, so load hits all alike."""
    commands = {
        "python -c pass": [PY, "-c", "pass"],
        "django.setup()": [PY, "-c", "import django; django.setup()"],
        # The same without the interpreter's teardown, as Norn's commands exit.
        "django.setup(); _exit": [PY, "-c", "import django, os; django.setup(); os._exit(0)"],
        # The fast path's (deployments/remote.py): no Django.
        "manage.py deploy --help": [PY, "manage.py", "deploy", "--help"],
        # A full command's: Django and Norn's checks.
        "manage.py deployments -h": [PY, "manage.py", "deployments", "--help"],
        "manage.py check": [PY, "manage.py", "check"],
    }
    times = {name: [] for name in commands}
    cpu = {name: [] for name in commands}
    for argv in commands.values():
        timed(argv, env)  # warm the page cache and the .pyc files
    for _ in range(rounds):
        for name, argv in commands.items():
            times[name].append(timed(argv, env, cpu[name]))
    return ({name: statistics.median(values) for name, values in times.items()},
            {name: statistics.median(values) for name, values in cpu.items()})


def deploy_once(env):
    """One `manage.py deploy bench main`, followed live to its end."""
    from deployments.models import Deployment

    started = datetime.datetime.now(datetime.timezone.utc)
    result = subprocess.run([PY, "manage.py", "deploy", "bench", "main"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    exited = datetime.datetime.now(datetime.timezone.utc)
    deployment = Deployment.objects.order_by("-pk").first()
    if result.returncode != 0 or deployment is None or deployment.status != "deployed":
        raise SystemExit(f"the bench deploy failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    if "from the database" in result.stderr:
        raise SystemExit(f"the deploy did not follow the live stream:\n{result.stderr}")
    if deployment.requested_by is None:  # the full command queues it without a user
        raise SystemExit("the deploy did not take the fast path (deployments/remote.py)")
    to_queued = (deployment.queued_at - started).total_seconds()
    to_exit = (exited - deployment.finished_at).total_seconds()
    return to_queued, to_exit, str(deployment.public_id)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=10, help="rounds of the start-up commands")
    parser.add_argument("--deploys", type=int, default=5)
    parser.add_argument("--follows", type=int, default=10)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, common.on_sigterm)
    # The bytecode scripts/bootstrap and deploy/install.sh leave, for the
    # source as it is now: where PYTHONDONTWRITEBYTECODE is set, each command
    # would otherwise compile Norn's modules again, which no installed Norn does.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "manage.py", "norn_project", "deployments",
                    "apps_registry"], cwd=ROOT, check=True)
    tmp = Path(tempfile.mkdtemp(prefix="norn-bench-cli-"))
    env = common.bench_env(DB, tmp)
    env["NORN_CHANNEL_PREFIX"] = os.environ["NORN_CHANNEL_PREFIX"] = f"norn-bench-cli-{os.getpid()}"
    extra = {"NORN_RUNTIME": "docker", "NORN_WORKERS": "1"}
    apps_url = Path("/var/lib/norn-services/apps-database-url")
    if apps_url.is_file():  # else every command warns (norn.W004) on stderr
        extra["NORN_APP_DATABASES_URL"] = apps_url.read_text().strip()
    env.update(extra)
    os.environ.update(extra)
    load = common.machine()
    daphne = worker = None
    django_ready = False
    try:
        make_app(tmp)
        common.create_database(DB, env)
        import django

        django.setup()
        django_ready = True
        cli_env = {**env, "NORN_API_TOKEN": api_token()}
        daphne = common.Daphne(env, tmp / "daphne.log")
        daphne.start()
        cli_env["NORN_URL"] = f"http://127.0.0.1:{daphne.port}"
        worker = subprocess.Popen([PY, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)

        starts, cpu = start_up(cli_env, args.starts)
        deploy_once(cli_env)  # warms the docker build cache and the worker
        deploys = [deploy_once(cli_env) for _ in range(args.deploys)]
        finished = deploys[-1][2]
        follow_cpu = []
        follows = [timed([PY, "manage.py", "follow", finished], cli_env, follow_cpu) for _ in range(args.follows)]

        bare, setup = starts["python -c pass"], starts["django.setup()"]
        print(f"machine:  {load}; now {os.getloadavg()[0]:.2f}")
        print(f"start-up, medians of {args.starts} interleaved rounds:")
        for name, value in starts.items():
            print(f"  {name:<24} {value:.3f} s  {value / bare:5.1f}x bare python  {value / setup:4.2f}x django.setup()"
                  f"  (CPU {cpu[name]:.3f} s)")
        print(f"  (target: deploy --help <= 0.400 s)")
        queued = statistics.median(d[0] for d in deploys)
        ended = statistics.median(d[1] for d in deploys)
        print(f"deploy bench main, medians of {args.deploys}, followed live:")
        print(f"  start to queued            {queued:.3f} s  (runs: {', '.join(f'{d[0]:.3f}' for d in deploys)})")
        print(f"  finished to exit           {ended:.3f} s  (runs: {', '.join(f'{d[1]:.3f}' for d in deploys)})")
        print(f"  CLI's own overhead         {queued + ended:.3f} s  (target: <= 0.300 s)")
        print(f"  (start to queued: the interpreter, the request to the server, its ref check and INSERTs)")
        print(f"follow of a finished deployment, median of {args.follows}: "
              f"{statistics.median(follows):.3f} s, CPU {statistics.median(follow_cpu):.3f} s  (target: <= 0.500 s)")
    finally:
        if worker is not None and worker.poll() is None:
            # SIGTERM to the cluster's main process only: it stops its workers.
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        common.clean_up(DB, tmp, env["NORN_CHANNEL_PREFIX"], None, daphne, django_ready)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
