#!/usr/bin/env bash
# Creates .venv with exactly the versions pinned in uv.lock (once; again when uv.lock or
# pyproject.toml changes). Arguments name extra groups to add to `dev` (`bootstrap.sh bench` for
# the benchmarks' baselines). Needs only python3 >= 3.11, a JDK 17 and Maven on the machine (the
# JDK and Maven are used to fetch and run the local Elasticsearch; apt-get installs them when
# missing and we are root).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras=(dev "$@")
lock_hash=$(cat uv.lock pyproject.toml | sha256sum | cut -c1-16)
stamp=.venv/.installed-$lock_hash-$(IFS=-; echo "${extras[*]}")

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif [ -z "${TAUXCHARGE_ES_URL:-}" ]; then
    echo "missing ${missing[*]}: install them, or set TAUXCHARGE_ES_URL to an existing Elasticsearch" >&2
    exit 1
  fi
fi

# Up to date when this lock was synced with these extras, or with more of them (a plain
# `make install` after `make install-bench` keeps the benchmark packages).
for done_stamp in .venv/.installed-"$lock_hash"-dev*; do
  [ -f "$done_stamp" ] || continue
  covered=1
  for extra in "${extras[@]}"; do
    case "-${done_stamp#.venv/.installed-"$lock_hash"-}-" in *"-$extra-"*) ;; *) covered=0 ;; esac
  done
  [ "$covered" = 1 ] && exit 0
done
if ! command -v uv >/dev/null 2>&1 && ! "$PYTHON" -m uv --version >/dev/null 2>&1; then
  echo "installing uv (fast resolver/installer) with pip" >&2
  "$PYTHON" -m pip install -q --user uv 2>/dev/null || "$PYTHON" -m pip install -q uv
fi
UV="$PYTHON -m uv"
command -v uv >/dev/null 2>&1 && UV=uv
[ -x .venv/bin/python ] || $UV venv -q --python "$PYTHON" .venv
# --frozen: install uv.lock as it is (never re-resolve; `uv lock` updates it, see README). The
# environment is made exactly the lock's: packages the lock does not list are removed. The project
# itself is installed editable. Compiled bytecode at install: each Dagster run process would
# otherwise compile Dagster and TensorFlow from source (measured: 5.4 s instead of 1.8 s to import
# the definitions).
extra_args=()
for extra in "${extras[@]}"; do extra_args+=(--extra "$extra"); done
UV_PROJECT_ENVIRONMENT="$PWD/.venv" $UV sync -q --frozen --compile-bytecode "${extra_args[@]}"
rm -f .venv/.installed-*
touch "$stamp"
echo "environment ready in .venv" >&2
