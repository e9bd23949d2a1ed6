# The two set-up commands are `make demo` and `make test`; each installs what it needs first.
SHELL := /bin/bash
# uv from PATH, else as a module of the machine's python3 (pip may install it off PATH).
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --locked

.PHONY: setup airflow-venvs demo test lint bench build plugins clean
AIRFLOW_RELEASES := 2.9.2 2.11.0 3.0.6
PYTHON := $(shell python3 -c 'import sys; print(sys.executable)')

setup:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --locked

# Real Apache Airflow, one virtualenv per major line MWAA offers, behind the MWAA emulator.
airflow-venvs: setup $(foreach r,$(AIRFLOW_RELEASES),.airflow/$(r)/bin/airflow)

# Each also gets the PostgreSQL drivers (psycopg2, and asyncpg, which Airflow 3 opens too) for the
# metadata databases of the backup/restore tests, and what the export/import DAGs need on MWAA
# workers (pyarrow, pydantic, boto3: requirements.txt on MWAA).
# A change to this Makefile re-runs the install: a no-op when nothing is missing, so venvs made
# before a package was added here get it.
.airflow/%/bin/airflow: Makefile
	$(UV) venv -q --allow-existing --python $(PYTHON) .airflow/$*
	VIRTUAL_ENV=$(CURDIR)/.airflow/$* $(UV) pip install -q "apache-airflow==$*" psycopg2-binary asyncpg pyarrow "pydantic>=2.6" boto3
	touch $@

demo: setup airflow-venvs
	$(RUN) python -m localcloud.demo

test: setup lint airflow-venvs
	$(RUN) pytest -n 2 --dist loadscope -q

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy layers/mwaa_control/python/mwaa_control localcloud cli/mwaactl tests bench dags
	@for f in functions/*/app.py; do $(RUN) mypy $$f || exit 1; done
	$(RUN) cfn-lint template.yaml participant.yaml
	$(UV) tool run --from 'checkov==3.3.30' checkov --quiet --compact --skip-download \
		--framework cloudformation -f template.yaml -f participant.yaml

# Speed and memory targets of the metadata engine, as ratios measured in one run (never timed tests).
bench: setup airflow-venvs
	$(RUN) python -m bench.metadata_bench $(BENCH_ARGS)

# The mwaa_control package for Airflow 2 environments' plugins.zip (the metadata export/import DAGs).
plugins:
	@mkdir -p build
	rm -f build/plugins.zip
	find layers/mwaa_control/python -name __pycache__ -prune -exec rm -rf {} +
	cd layers/mwaa_control/python && python3 -m zipfile -c ../../../build/plugins.zip mwaa_control
	@echo "build/plugins.zip: upload it as the environment's plugins.zip; add pyarrow and pydantic to requirements.txt"

build: setup
	$(UV) tool run --from 'aws-sam-cli==1.170.0' sam build

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
