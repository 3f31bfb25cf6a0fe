#!/usr/bin/env bash
# `dagster dev` with the local Elasticsearch started when none is configured; the UI on 127.0.0.1 unless
# TAUXCHARGE_DAGSTER_HOST says otherwise (a later --host in the arguments wins too).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${TAUXCHARGE_ES_URL:-}" ]; then
  TAUXCHARGE_ES_URL=$(.venv/bin/python -m tauxcharge_assets es start)
  export TAUXCHARGE_ES_URL
fi
export DAGSTER_HOME=${DAGSTER_HOME:-$PWD/.tauxcharge/dagster_home}
mkdir -p "$DAGSTER_HOME" && touch "$DAGSTER_HOME/dagster.yaml"
# Restore SIGINT so that `dagster dev` started in the background still stops on a signal.
exec python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); os.execv(sys.argv[1], sys.argv[1:])' \
  .venv/bin/dagster dev -w workspace.yaml --host "${TAUXCHARGE_DAGSTER_HOST:-127.0.0.1}" "$@"
