# The two commands: `make demo` runs the main job end to end, `make test` runs the tests.
# Both install what is missing first (.venv, the packages, the local Elasticsearch).
PY := .venv/bin/python

.PHONY: install install-bench demo test lint dev dashboard es-start es-stop es-status bench clean

install:
	@bash scripts/bootstrap.sh

# Adds the benchmarks' baselines (statsforecast, lightgbm: the `bench` extra of uv.lock).
install-bench:
	@bash scripts/bootstrap.sh bench

demo: install
	$(PY) -m tauxcharge_assets demo

test: install
	bash scripts/run_tests.sh

lint: install
	$(PY) -m ruff check tauxcharge_assets tauxcharge_assets_tests benchmarks scripts

dev: install
	bash scripts/dagster_dev.sh

# The dashboard page on http://127.0.0.1:8501 (`python -m tauxcharge_assets dashboard --help` for its options).
dashboard: install
	$(PY) -m tauxcharge_assets dashboard

es-start: install
	$(PY) -m tauxcharge_assets es start

es-stop: install
	$(PY) -m tauxcharge_assets es stop

es-status: install
	$(PY) -m tauxcharge_assets es status

clean:
	rm -rf .tauxcharge
