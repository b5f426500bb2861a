#!/bin/sh
# Serve the page on $PORT (Norn sets it from infraspec `port`), with the
# greeting from the environment (infraspec `env`) and the deployed commit.
set -e
mkdir -p /tmp/www
sed -e "s|{{GREETING}}|${GREETING:-Hello}|" -e "s|{{COMMIT}}|${NORN_COMMIT:-unknown}|" /app/www/index.html > /tmp/www/index.html
echo ok > /tmp/www/healthz
exec httpd -f -p "${PORT:-8080}" -h /tmp/www
