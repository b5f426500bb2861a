#!/bin/sh
# Applies the SQL migrations in order. Norn runs this with PGHOST, PGPORT,
# PGUSER, PGPASSWORD, PGDATABASE and DATABASE_URL pointing at the app's database.
set -e
for file in migrations/*.sql; do
    echo "applying $file"
    psql -v ON_ERROR_STOP=1 --quiet -f "$file"
done
