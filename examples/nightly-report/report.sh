#!/bin/sh
# The nightly report: what a cron run prints is recorded by Norn.
echo "report for $(date -u +%F) in format ${REPORT_FORMAT:-text}"
