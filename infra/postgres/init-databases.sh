#!/bin/sh
# Runs once, on the first start of an empty data volume: one database per backend.
set -eu
for db in mlflow prefect; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -c "CREATE DATABASE $db OWNER \"$POSTGRES_USER\";"
done
