#!/usr/bin/env python
"""Benchmark: what Norn adds over a plain shell script running the same deploy.

Deploys a small cron app (git clone, docker build, a 1-second test, pg_dump,
a migration, registering the image, cleanup) N times through a real
`manage.py qcluster` worker, and N times through a shell script running the
same commands, then prints the medians, Norn's overhead and the worker's peak
resident memory. Targets: overhead < 0.3 s, worker < 150 MB.

The test and the migration run in throwaway containers of the new image on
both sides, with the same docker run flags (deployments/containers.py): the
app's network, the limits, an env file. The migration does not touch the
database (the image has no psql); pg_dump does, on the host, as Norn does.

    .venv/bin/python bench/pipeline_overhead.py [--runs 5]

Needs the services from scripts/services; uses its own database norn_bench.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB = "norn_bench"
APP_DB = "norn_bench_app"


def sh(*argv, **kwargs):
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True, **kwargs)


def prepare(tmp):
    """An app with its own git repository, and a fresh Norn database."""
    src = tmp / "src"
    src.mkdir()
    (src / "Dockerfile").write_text("FROM norn-busybox:1\nCOPY report.sh /report.sh\nCMD [\"sh\", \"/report.sh\"]\n")
    (src / "report.sh").write_text("echo report\n")
    (src / "migrate.sql").write_text("CREATE TABLE IF NOT EXISTS runs (id serial primary key);\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"}
    sh("git", "init", "-q", "--initial-branch=main", src)
    sh("git", "-C", src, "add", "-A")
    sh("git", "-C", src, "commit", "-q", "-m", "bench", env=env)
    sh("git", "clone", "-q", "--bare", src, tmp / "bench.git")
    apps = tmp / "apps" / "bench"
    apps.mkdir(parents=True)
    (apps / "infraspec.yaml").write_text(textwrap.dedent(f"""\
        app: bench
        role: cron
        repo:
          url: file://{tmp / 'bench.git'}
        build:
          test: sleep 1
        services:
          postgres:
            database: {APP_DB}
        migrations:
          command: echo migrated
        schedule: "0 3 * * *"
        command: ["sh", "/report.sh"]
    """))
    for name in (DB, APP_DB):
        sh("psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        sh("createdb", "-h", "127.0.0.1", "-U", "postgres", name)


SCRIPT = """\
set -e
work=$(mktemp -d "$TMP/script-XXXX")
git clone -q --depth 1 --branch main -- "file://$TMP/bench.git" "$work/src"
sha=$(git -C "$work/src" rev-parse HEAD)
DOCKER_BUILDKIT=0 docker build -q -f "$work/src/Dockerfile" -t "bench:$sha" "$work/src" >/dev/null
docker network inspect --format '{{{{.Name}}}}' norn-bench >/dev/null 2>&1 || docker network create --label norn.app=bench norn-bench >/dev/null
umask 077
printf 'NORN_APP=bench\\nNORN_COMMIT=%s\\n' "$sha" > "$work/test.env"
docker run --rm --init --name "bench-test-$$" --label norn.app=bench --label norn.purpose=test \\
  --network norn-bench {flags} \\
  --volume "$work/src:/workspace" --workdir /workspace --env-file "$work/test.env" \\
  --entrypoint /bin/sh "bench:$sha" -c "sleep 1"
pg_dump -Fc -h 127.0.0.1 -U postgres -d {app_db} -f "$work/snapshot.dump"
printf 'NORN_APP=bench\\nNORN_COMMIT=%s\\nPGHOST=host.docker.internal\\nPGDATABASE={app_db}\\n' "$sha" > "$work/migrate.env"
docker run --rm --init --name "bench-migrate-$$" --label norn.app=bench --label norn.purpose=migrate \\
  --network norn-bench {flags} \\
  --env-file "$work/migrate.env" --entrypoint /bin/sh "bench:$sha" -c "echo migrated" >/dev/null
docker image inspect --format '{{{{.Id}}}}' "bench:$sha" >/dev/null
rm -rf "$work"
"""


def run_script(tmp):
    import shlex

    from deployments import containers

    flags = " ".join(shlex.quote(a) for a in [*containers.ADD_HOST, *containers.limits()])
    started = time.monotonic()
    subprocess.run(["bash", "-c", SCRIPT.format(app_db=APP_DB, flags=flags)], check=True, env={**os.environ, "TMP": str(tmp)})
    return time.monotonic() - started


def rss_mb(pids):
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total = max(total, int(line.split()[1]) / 1024)
        except OSError:
            pass
    return total


def worker_pids(cluster_pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(cluster_pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()] + [cluster_pid]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="norn-bench-"))
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB}",
        "NORN_APPS_DIR": str(tmp / "apps"),
        "NORN_WORK_DIR": str(tmp / "work"),
        "NORN_SNAPSHOT_DIR": str(tmp / "snapshots"),
        "NORN_RUNTIME": "docker",
        "NORN_WORKERS": "1",
        "NORN_LOG_LEVEL": "WARNING",
        # DEBUG is off by default, so Norn needs a key (as the other benches give it).
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "norn-bench-" + os.urandom(16).hex(),
    }
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "norn_project.settings"
    cluster = None
    try:
        prepare(tmp)
        sh(sys.executable, "manage.py", "migrate", "--no-input", cwd=ROOT, env=env)
        import django

        django.setup()
        from deployments.models import Deployment
        from deployments.requests import request_deployment

        cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(3)  # let the cluster start its worker
        run_script(tmp)  # warm the docker build cache for both sides

        norn, script, peak = [], [], 0.0
        for _ in range(args.runs):
            started = time.monotonic()
            deployment = request_deployment("bench")
            while not Deployment.objects.get(pk=deployment.pk).is_terminal:
                peak = max(peak, rss_mb(worker_pids(cluster.pid)))
                time.sleep(0.02)
            norn.append(time.monotonic() - started)
            deployment.refresh_from_db()
            if deployment.status != "deployed":
                raise SystemExit(f"the bench deploy failed: {deployment.error}")
            script.append(run_script(tmp))
        n, s = statistics.median(norn), statistics.median(script)
        print(f"runs:                 {args.runs}")
        print(f"shell script median:  {s:.3f} s")
        print(f"Norn median:          {n:.3f} s (request to deployed, through a qcluster worker)")
        print(f"Norn over script:     {n / s:.2f}x, +{n - s:.3f} s (target: < +0.300 s)")
        print(f"worker peak RSS:      {peak:.1f} MB (target: < 150 MB)")
    finally:
        if cluster:
            # The django-q2 cluster stops its workers on SIGTERM; Django's DB
            # connections here go first so the database can be dropped later.
            os.killpg(cluster.pid, 15)
            try:
                cluster.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(cluster.pid, 9)
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["docker", "network", "rm", "norn-bench"], capture_output=True)


if __name__ == "__main__":
    main()
