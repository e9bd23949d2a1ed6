# The two set-up commands are `make demo` and `make test`; each installs what it needs first.
SHELL := /bin/bash
# uv from PATH, else as a module of the machine's python3 (pip may install it off PATH).
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --locked

.PHONY: setup airflow-venvs demo test lint bench build clean
AIRFLOW_RELEASES := 2.11.0 3.0.6
PYTHON := $(shell python3 -c 'import sys; print(sys.executable)')

setup:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --locked

# Real Apache Airflow, one virtualenv per major line MWAA offers, behind the MWAA emulator.
airflow-venvs: setup $(foreach r,$(AIRFLOW_RELEASES),.airflow/$(r)/bin/airflow)

.airflow/%/bin/airflow:
	$(UV) venv -q --python $(PYTHON) .airflow/$*
	VIRTUAL_ENV=$(CURDIR)/.airflow/$* $(UV) pip install -q "apache-airflow==$*"

demo: setup airflow-venvs
	$(RUN) python -m localcloud.demo

test: setup lint airflow-venvs
	$(RUN) pytest -n 2 --dist loadscope -q

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy layers/mwaa_control/python/mwaa_control localcloud cli/mwaactl tests
	@for f in functions/*/app.py; do $(RUN) mypy $$f || exit 1; done
	$(RUN) cfn-lint template.yaml participant.yaml
	$(UV) tool run --from 'checkov==3.3.30' checkov --quiet --compact --skip-download \
		--framework cloudformation -f template.yaml -f participant.yaml

bench: setup
	@echo "No benchmarks yet: the endpoint automation has no speed or memory target."
	@echo "Metadata backup/restore benchmarks arrive with issue 4 (make bench will build the synthetic DB)."

build: setup
	$(UV) tool run --from 'aws-sam-cli==1.170.0' sam build

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
