#!/usr/bin/env bash
# The services some tests start for themselves, installed from Debian when missing (we are root in
# CI): PostgreSQL (the production instance's storage, test_production.py) and Chromium with its
# driver (the dashboard's browser test). Each test fixture starts its own server on a free port.
set -euo pipefail
missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} with apt-get (test services)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "missing ${missing[*]}: install them (apt-get install ${missing[*]}) to run every test" >&2
  exit 1
fi
