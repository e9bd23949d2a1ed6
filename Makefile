# The two set-up commands are `make demo` and `make test`; each installs what it needs first.
SHELL := /bin/bash
# uv from PATH, else as a module of the machine's python3 (pip may install it off PATH).
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --locked

.PHONY: setup airflow-venvs matrix-venvs demo test test-fast test-matrix lint bench build plugins clean
# The fast tier, tested on every commit (and behind the MWAA emulator).
AIRFLOW_RELEASES := 2.9.2 2.11.0 3.0.6
# Every release MWAA lets you create, and the newer ones AWS's MWAA image repository already carries:
# the metadata round trip runs against each (`make test-matrix`, tests/metadata/test_matrix.py).
AIRFLOW_MATRIX := 2.7.2 2.8.1 2.9.2 2.10.1 2.10.3 2.11.0 2.11.2 3.0.6 3.2.1 3.3.1
# Pins a release needs to install without Airflow's constraints file (unpinned, pip picks pendulum 3,
# Flask-Session 0.6 and connexion 3, which 2.7/2.8 predate and fail to import with; 3.2.1 predates
# FastAPI 0.137, whose lazy router inclusion breaks cadwyn's versioned routes: Airflow caps it from 3.3;
# with 3.0.6, today's fastapi and cadwyn 9 make the execution API refuse every task it runs).
AIRFLOW_PINS_2.7.2 := "pendulum<3" "flask-session<0.6" "connexion<3"
AIRFLOW_PINS_2.8.1 := "flask-session<0.6"
AIRFLOW_PINS_3.0.6 := "fastapi[standard]<0.117" "cadwyn<6"
AIRFLOW_PINS_3.2.1 := "fastapi<0.137"
PYTHON := $(shell python3 -c 'import sys; print(sys.executable)')

setup:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --locked

# Real Apache Airflow, one virtualenv per major line MWAA offers, behind the MWAA emulator.
airflow-venvs: setup $(foreach r,$(AIRFLOW_RELEASES),.airflow/$(r)/bin/airflow)

# The whole matrix (~1 GB of disk per release; uv's cache makes a rebuild take seconds).
matrix-venvs: setup $(foreach r,$(AIRFLOW_MATRIX),.airflow/$(r)/bin/airflow)

# Each also gets the PostgreSQL drivers (psycopg2, and asyncpg, which Airflow 3 opens too) for the
# metadata databases of the backup/restore tests, and what the export/import DAGs need on MWAA
# workers (pyarrow, pydantic, boto3: requirements.txt on MWAA).
# A change to this Makefile re-runs the install: a no-op when nothing is missing, so venvs made
# before a package was added here get it.
.airflow/%/bin/airflow: Makefile
	$(UV) venv -q --allow-existing --python $(PYTHON) .airflow/$*
	VIRTUAL_ENV=$(CURDIR)/.airflow/$* $(UV) pip install -q "apache-airflow==$*" psycopg2-binary asyncpg pyarrow \
		"pydantic>=2.6" boto3 $(AIRFLOW_PINS_$*)
	touch $@

demo: setup airflow-venvs
	$(RUN) python -m localcloud.demo

# `make test` (what CI runs): lint and the fast tier (everything but the `matrix` marker, ~20-25 min on
# 2 CPUs), then the release matrix (~25 min). `make test-fast` alone is the per-commit tier.
test: test-fast test-matrix

test-fast: setup lint airflow-venvs
	$(RUN) pytest -n 2 --dist loadscope -q -m "not matrix"

# Backup/restore round trips on every release of AIRFLOW_MATRIX x {SQLite, PostgreSQL}. Each cell is
# one test (`--dist load` spreads the cells over both CPUs); each writes its figures to
# build/matrix/, and the table of all of them to build/matrix.md, printed at the end.
test-matrix: setup matrix-venvs
	rm -rf build/matrix build/matrix.md
	$(RUN) pytest -n 2 --dist load -q -m matrix tests/metadata/test_matrix.py; status=$$?; \
		cat build/matrix.md 2>/dev/null; exit $$status

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy layers/mwaa_control/python/mwaa_control localcloud cli/mwaactl tests bench dags
	@for f in functions/*/app.py; do $(RUN) mypy $$f || exit 1; done
	$(RUN) cfn-lint template.yaml participant.yaml
	$(UV) tool run --from 'checkov==3.3.30' checkov --quiet --compact --skip-download \
		--framework cloudformation -f template.yaml -f participant.yaml

# Speed and memory targets of the metadata engine, as ratios measured in one run (never timed tests),
# and the control-plane cost (state transitions, Lambda invocations) of one pause + resume cycle.
bench: setup airflow-venvs
	$(RUN) python -m bench.metadata_bench $(BENCH_ARGS)
	$(RUN) python -m bench.lifecycle_bench
	$(RUN) python -m bench.fleet_bench $(FLEET_BENCH_ARGS)
	$(RUN) python -m bench.coldstart_bench

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
