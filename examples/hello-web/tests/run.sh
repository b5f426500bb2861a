#!/bin/sh
# The example's test suite: the page has its placeholders and start.sh parses.
set -e
grep -q '{{GREETING}}' www/index.html
grep -q '{{COMMIT}}' www/index.html
sh -n start.sh
echo "hello-web: 3 checks passed"
