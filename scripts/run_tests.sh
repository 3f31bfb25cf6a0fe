#!/usr/bin/env bash
# The test command (`make test`): lint, then pytest against a real Elasticsearch that the session
# fixture starts (or TAUXCHARGE_ES_URL). pytest's exit code 5 (no tests collected) is a failure here:
# a run that tests nothing must not pass.
set -uo pipefail
cd "$(dirname "$0")/.."
# Everything the suite imports is linted: the package, the tests, and the benchmarks/ and scripts/ they load.
.venv/bin/python -m ruff check tauxcharge_assets tauxcharge_assets_tests benchmarks scripts || exit 1
# PostgreSQL and Chromium for the production and dashboard tests (installed once, from Debian).
bash scripts/test_services.sh || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
