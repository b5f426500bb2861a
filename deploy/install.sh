#!/usr/bin/env bash
# deploy/install.sh: run Norn for real, under systemd, as the unprivileged user norn.
#
#   sudo deploy/install.sh [--prefix /opt/norn] [--root /] [--user norn]
#                          [--database-url URL] [--acme-email EMAIL] [--web-processes N]
#                          [--no-systemctl]
#
# - installs Debian's caddy (the ingress) when it is missing and switches off
#   Debian's own caddy.service and caddy-api.service (they would hold port 80),
# - creates the system user `norn` (home /var/lib/norn, no login shell, in the
#   group docker when it exists),
# - copies this checkout to PREFIX (unless it is PREFIX) and makes PREFIX/.venv
#   with requirements.txt (unless it has one),
# - writes /etc/norn/norn.env, mode 0640 root:norn, with a generated SECRET_KEY,
#   DEBUG off and the production settings (the ingress's too: --acme-email
#   is the address Let's Encrypt writes to); an existing env file is never
#   touched (its key stays),
# - writes /etc/norn/ingress.json, the ingress's first config: its admin API
#   on the unix socket /run/norn-ingress/admin.sock,
# - creates the state directories under /var/lib/norn (owned by norn),
# - runs migrate and collectstatic with that environment,
# - installs deploy/systemd/* (with PREFIX in their paths, and the env file's
#   NORN_HOST:NORN_PORT in norn-web.socket), enables norn.target and N web
#   processes norn-web@1..N on that one socket (--web-processes; without it,
#   as many as are enabled already, at first one per CPU, at most 4), starts
#   norn.target and restarts the web server and the workers (the ingress is
#   not restarted: the apps stay reachable).
#
# It can run again at any time (after an update, for instance): each step
# does only what is missing. --root puts /etc, /var and the units under
# another directory and --no-systemctl skips systemctl (tests; images built
# without systemd running).
set -euo pipefail

SOURCE=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/norn
ROOT=/
NORN_USER=norn
DATABASE_URL_DEFAULT="postgres://postgres@127.0.0.1:5432/norn"
SYSTEMCTL=1
ACME_EMAIL=""
WEB_PROCESSES=""

usage() {
    sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
        --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
        --user) NORN_USER=${2:?--user needs a name}; shift 2 ;;
        --database-url) DATABASE_URL_DEFAULT=${2:?--database-url needs a URL}; shift 2 ;;
        --acme-email) ACME_EMAIL=${2:?--acme-email needs an address}; shift 2 ;;
        --web-processes) WEB_PROCESSES=${2:?--web-processes needs a number}; shift 2 ;;
        --no-systemctl) SYSTEMCTL=0; shift ;;
        -h|--help) usage ;;
        *) echo "install.sh: unknown argument $1" >&2; usage ;;
    esac
done
case "$PREFIX" in /*) ;; *) echo "install.sh: --prefix must be an absolute path, not $PREFIX" >&2; exit 2 ;; esac
case "$ROOT" in /*) ;; *) echo "install.sh: --root must be an absolute path, not $ROOT" >&2; exit 2 ;; esac
case "$NORN_USER" in *[!a-z0-9_-]*|"") echo "install.sh: --user must be a plain user name, not $NORN_USER" >&2; exit 2 ;; esac
if [ -n "$ACME_EMAIL" ] && ! [[ "$ACME_EMAIL" =~ ^[A-Za-z0-9._+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$ ]]; then
    echo "install.sh: --acme-email must be an address like ops@example.com, not $ACME_EMAIL" >&2
    exit 2
fi
if [ -n "$WEB_PROCESSES" ] && ! [[ "$WEB_PROCESSES" =~ ^[1-9][0-9]?$ ]]; then
    echo "install.sh: --web-processes must be a number from 1 to 99, not $WEB_PROCESSES" >&2
    exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run it as root (it creates a user and writes /etc/norn)" >&2
    exit 2
fi

ROOT=${ROOT%/}
ETC_DIR="$ROOT/etc/norn"
ENV_FILE="$ETC_DIR/norn.env"
STATE_DIR="$ROOT/var/lib/norn"
UNIT_DIR="$ROOT/etc/systemd/system"
INGRESS_JSON="$ETC_DIR/ingress.json"
INGRESS_ADMIN=unix//run/norn-ingress/admin.sock
say() { echo "install.sh: $*"; }

# --- the ingress's program -------------------------------------------------------
# Debian's caddy: /usr/bin/caddy and the user caddy that norn-ingress.service
# runs as.
if [ "$(dpkg-query -W -f='${db:Status-Status}' caddy 2>/dev/null)" != installed ]; then
    if ! command -v apt-get >/dev/null; then
        echo "install.sh: Caddy is missing and there is no apt-get: install caddy 2.6 or later as /usr/bin/caddy, with a system user caddy, and re-run" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q caddy >/dev/null
    say "installed Debian's caddy"
fi
if [ ! -x /usr/bin/caddy ] || ! id caddy >/dev/null 2>&1; then
    echo "install.sh: norn-ingress.service runs /usr/bin/caddy as the user caddy; one of them is missing (apt-get install --reinstall caddy)" >&2
    exit 1
fi

# --- the user ------------------------------------------------------------------
if ! id "$NORN_USER" >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/norn --no-create-home --shell /usr/sbin/nologin "$NORN_USER"
    say "created the system user $NORN_USER"
fi
if getent group docker >/dev/null && ! id -nG "$NORN_USER" | tr ' ' '\n' | grep -qx docker; then
    usermod -aG docker "$NORN_USER"
    say "added $NORN_USER to the group docker"
fi
GROUP=$(id -gn "$NORN_USER")

# --- the code and its Python ---------------------------------------------------
if [ "$(cd "$SOURCE" && pwd -P)" != "$(mkdir -p "$PREFIX" && cd "$PREFIX" && pwd -P)" ]; then
    # Root's, read-only for norn: a compromised worker cannot change Norn's code.
    (cd "$SOURCE" && tar --exclude=./.venv --exclude=./var --exclude=./.git --exclude='__pycache__' -cf - .) \
        | (cd "$PREFIX" && tar -xf -)
    say "copied Norn to $PREFIX"
fi
if [ ! -x "$PREFIX/.venv/bin/python" ]; then
    python3 -m venv "$PREFIX/.venv"
    "$PREFIX/.venv/bin/pip" install --quiet -r "$PREFIX/requirements.txt"
    say "installed Norn's Python packages into $PREFIX/.venv"
fi
# Bytecode for Norn's own modules, made now: norn cannot write it into this
# root's tree, so every manage.py command (a deploy from the CLI among them)
# would compile them again (~20 ms for the CLI's, ~1 s for all of Django's).
"$PREFIX/.venv/bin/python" -m compileall -q -j 0 "$PREFIX/manage.py" "$PREFIX/norn_project" \
    "$PREFIX/deployments" "$PREFIX/apps_registry"

# --- state directories ---------------------------------------------------------
install -d -m 0750 -o "$NORN_USER" -g "$GROUP" "$STATE_DIR" "$STATE_DIR/apps" "$STATE_DIR/ssh"
install -d -m 0700 -o "$NORN_USER" -g "$GROUP" "$STATE_DIR/work" "$STATE_DIR/snapshots"

# --- the environment file ------------------------------------------------------
install -d -m 0750 -o root -g "$GROUP" "$ETC_DIR"
if [ -e "$ENV_FILE" ]; then
    say "$ENV_FILE exists: kept as it is (its SECRET_KEY too)"
else
    SECRET=$("$PREFIX/.venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(50))')
    if [ -n "$ACME_EMAIL" ]; then ACME_LINE="NORN_ACME_EMAIL=$ACME_EMAIL"; else ACME_LINE="#NORN_ACME_EMAIL=ops@example.com"; fi
    TMP=$(mktemp "$ETC_DIR/.norn.env.XXXXXX")
    cat > "$TMP" <<ENV
# Norn's settings (README.md, Configuration). Read by the norn-* units; only
# root and the group $GROUP may read it: it holds the secret key.
SECRET_KEY=$SECRET
DEBUG=false
ALLOWED_HOSTS=localhost,127.0.0.1
DATABASE_URL=$DATABASE_URL_DEFAULT
REDIS_URL=redis://127.0.0.1:6379/0
NORN_HOST=127.0.0.1
NORN_PORT=8000
NORN_APPS_DIR=/var/lib/norn/apps
NORN_WORK_DIR=/var/lib/norn/work
NORN_SNAPSHOT_DIR=/var/lib/norn/snapshots
NORN_GIT_KNOWN_HOSTS=/var/lib/norn/ssh/known_hosts
NORN_RUNTIME=docker
NORN_WORKERS=2
# Seconds a deployment in flight may take after \`systemctl stop\` before it is
# failed; keep it 20 s or more below norn-worker.service's TimeoutStopSec (90).
NORN_STOP_GRACE=30
# The apps' own PostgreSQL server (admin URL), for apps with services.postgres:
#NORN_APP_DATABASES_URL=postgres://USER:PASSWORD@127.0.0.1:5433/postgres

# The ingress (Caddy, norn-ingress.service) that serves the Docker apps'
# domains and ports (docs/production.md, "The ingress: domains and TLS").
# Its admin API, which deploys configure it through.
NORN_INGRESS_ADMIN=$INGRESS_ADMIN
# The apps' certificates: acme (Let's Encrypt, or NORN_ACME_CA), internal
# (Caddy's own CA, for private setups) or off (plain HTTP only).
NORN_INGRESS_TLS=acme
# Where the ACME CA writes about the certificates (expiry, problems).
$ACME_LINE
# Addresses it listens on, comma-separated (empty: all interfaces), and ports.
#NORN_INGRESS_LISTEN=
#NORN_INGRESS_HTTP_PORT=80
#NORN_INGRESS_HTTPS_PORT=443
# Certificates of your own (NAME.crt + NAME.key, readable by the user caddy),
# served for the names they cover instead of ACME ones.
#NORN_INGRESS_CERTIFICATES=/etc/norn/certificates
# A private ACME CA: its directory URL and the PEM file of its root.
#NORN_ACME_CA=https://ca.internal.example/acme/directory
#NORN_ACME_CA_ROOT=/etc/norn/acme-ca.pem

# Behind a TLS-terminating reverse proxy (recommended), also set:
# Redirect every plain-HTTP request to HTTPS.
#NORN_SECURE_SSL_REDIRECT=true
# Send the session and CSRF cookies over HTTPS only.
#NORN_SESSION_COOKIE_SECURE=true
#NORN_CSRF_COOKIE_SECURE=true
# Tell browsers to use HTTPS only for this many seconds (HSTS); start small.
#NORN_SECURE_HSTS_SECONDS=3600
# The origins forms are posted from, e.g. https://norn.example.com
#NORN_CSRF_TRUSTED_ORIGINS=https://norn.example.com
ENV
    chown root:"$GROUP" "$TMP"
    chmod 0640 "$TMP"
    mv "$TMP" "$ENV_FILE"
    say "wrote $ENV_FILE with a new SECRET_KEY (mode 0640, root:$GROUP)"
fi

# --- the ingress's first config -------------------------------------------------
# Only its admin socket: Norn sends the rest through it, and norn-ingress
# resumes from what it autosaved (/var/lib/norn-ingress) after that.
INGRESS_BOOTSTRAP="{\"admin\": {\"listen\": \"$INGRESS_ADMIN\"}}"
if [ "$(cat "$INGRESS_JSON" 2>/dev/null)" != "$INGRESS_BOOTSTRAP" ]; then
    TMP=$(mktemp "$ETC_DIR/.ingress.json.XXXXXX")
    printf '%s\n' "$INGRESS_BOOTSTRAP" > "$TMP"
    chown root:"$GROUP" "$TMP"
    chmod 0640 "$TMP"
    mv "$TMP" "$INGRESS_JSON"
    say "wrote $INGRESS_JSON (the ingress's admin API: $INGRESS_ADMIN)"
fi

# --- the kernel: route switches that drop no connection -------------------------
# Caddy re-creates its listeners on every config change (SO_REUSEPORT);
# net.ipv4.tcp_migrate_req=1 (Linux 5.14+) hands the connections waiting on
# the old listener to the new one instead of resetting them.
SYSCTL_CONF=/etc/sysctl.d/60-norn-ingress.conf
if [ -e /proc/sys/net/ipv4/tcp_migrate_req ]; then
    printf '# Norn: Caddy config changes (route switches) reset no waiting connection\nnet.ipv4.tcp_migrate_req = 1\n' > "$SYSCTL_CONF"
    sysctl -q -p "$SYSCTL_CONF" || say "could not apply $SYSCTL_CONF now; it applies at the next boot"
else
    say "WARNING: this kernel has no net.ipv4.tcp_migrate_req (Linux 5.14+): a route switch may reset connections arriving at that instant"
fi

# --- the database and static files ---------------------------------------------
run_with_env() {
    # The env file's variables, as systemd's EnvironmentFile= reads them
    # (KEY=VALUE lines, # comments), never through a shell.
    local -a vars=()
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in ''|'#'*) continue ;; *=*) vars+=("$line") ;; esac
    done < "$ENV_FILE"
    (cd "$PREFIX" && env "${vars[@]}" "$@")
}
run_with_env "$PREFIX/.venv/bin/python" manage.py migrate --no-input -v 0
run_with_env "$PREFIX/.venv/bin/python" manage.py collectstatic --no-input -v 0
say "database migrated, static files collected"

# --- the units -----------------------------------------------------------------
install -d -m 0755 "$UNIT_DIR"
# The web port, from the env file: a socket unit cannot read one.
WEB_HOST=$(sed -n 's/^NORN_HOST=//p' "$ENV_FILE" | tail -n 1)
WEB_PORT=$(sed -n 's/^NORN_PORT=//p' "$ENV_FILE" | tail -n 1)
if ! [[ "${WEB_PORT:-8000}" =~ ^[0-9]{1,5}$ ]] || [[ "${WEB_HOST:-127.0.0.1}" =~ [[:space:]/#] ]]; then
    echo "install.sh: $ENV_FILE has NORN_HOST=$WEB_HOST NORN_PORT=$WEB_PORT; the web socket needs an address and a port number" >&2
    exit 1
fi
case "${WEB_HOST:=127.0.0.1}" in *:*) WEB_LISTEN="[$WEB_HOST]:${WEB_PORT:-8000}" ;; *) WEB_LISTEN="$WEB_HOST:${WEB_PORT:-8000}" ;; esac
for unit in "$SOURCE"/deploy/systemd/*.service "$SOURCE"/deploy/systemd/*.socket "$SOURCE"/deploy/systemd/*.target; do
    name=$(basename "$unit")
    sed -e "s#/opt/norn#$PREFIX#g" -e "s#^User=norn\$#User=$NORN_USER#" -e "s#^Group=norn\$#Group=$GROUP#" \
        -e "s#^ListenStream=.*#ListenStream=$WEB_LISTEN#" \
        "$unit" > "$UNIT_DIR/.$name.tmp"
    chmod 0644 "$UNIT_DIR/.$name.tmp"
    mv "$UNIT_DIR/.$name.tmp" "$UNIT_DIR/$name"
done
say "installed the units in $UNIT_DIR (the web port: $WEB_LISTEN)"
# How many web processes: as asked, else as many as are enabled, else one
# per CPU (each takes about 100 MB), at most 4.
if [ -z "$WEB_PROCESSES" ]; then
    WEB_PROCESSES=0
    if [ -d "$UNIT_DIR/norn.target.wants" ]; then
        WEB_PROCESSES=$(find "$UNIT_DIR/norn.target.wants" -name 'norn-web@*.service' | wc -l)
    fi
    if [ "$WEB_PROCESSES" -eq 0 ]; then
        WEB_PROCESSES=$(nproc)
        [ "$WEB_PROCESSES" -le 4 ] || WEB_PROCESSES=4
    fi
fi
WEB_UNITS=()
for i in $(seq 1 "$WEB_PROCESSES"); do WEB_UNITS+=("norn-web@$i.service"); done
# Before, one norn-web.service held the port itself: it would hold it still.
if [ -e "$UNIT_DIR/norn-web.service" ]; then
    if [ "$SYSTEMCTL" -eq 1 ]; then
        systemctl disable --now norn-web.service || true
    fi
    rm -f "$UNIT_DIR/norn-web.service"
    say "replaced norn-web.service by norn-web.socket and norn-web@N.service"
fi
if [ "$SYSTEMCTL" -eq 1 ]; then
    systemctl daemon-reload
    # Debian's own Caddy units serve /etc/caddy/Caddyfile on port 80: off for good.
    for unit in caddy.service caddy-api.service; do
        if systemctl cat "$unit" >/dev/null 2>&1 \
           && { systemctl is-enabled --quiet "$unit" 2>/dev/null || systemctl is-active --quiet "$unit"; }; then
            systemctl disable --now "$unit"
            say "disabled and stopped Debian's $unit (it would hold port 80)"
        fi
    done
    # Web processes beyond the number asked for: stopped and disabled.
    for wanted in "$UNIT_DIR"/norn.target.wants/norn-web@*.service; do
        [ -e "$wanted" ] || continue
        instance=$(basename "$wanted")
        number=${instance#norn-web@}; number=${number%.service}
        if ! [[ "$number" =~ ^[0-9]+$ ]] || [ "$number" -gt "$WEB_PROCESSES" ]; then
            systemctl disable --now "$instance"
        fi
    done
    systemctl enable norn.target norn-web.socket "${WEB_UNITS[@]}" norn-worker.service norn-ingress.service
    # Restart Norn's own code, start what else is not running: the ingress
    # keeps running (and serving the apps) when this script runs again. The
    # socket too is restarted (its port may have changed), which needs its
    # processes stopped first.
    systemctl stop 'norn-web@*.service' norn-web.socket
    systemctl restart norn-worker.service
    systemctl start norn.target
    say "started norn.target with $WEB_PROCESSES web process(es): systemctl status 'norn-*'"
else
    say "--no-systemctl: not enabled or started (would enable ${WEB_UNITS[*]})"
fi
if [ -e "$UNIT_DIR/norn-proxy.service" ]; then
    say "norn-proxy.service (Norn's old proxy) is still installed: docs/production.md, \"Migrating from Norn's proxy\", says how to hand its ports to the ingress"
fi
